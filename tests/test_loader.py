"""The pretraining loader: BOS-aligned best-fit packing, DDP sharding, exact resume, waste accounting."""

import itertools
import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from picochat.common.errors import UserError
from picochat.data.corpus import ListCorpus
from picochat.data.loader import _DocBuffer, _pack_row, batches_from_corpus, pretrain_batches, waste_fraction
from picochat.data.reshard import reshard_cursors

BOS = 1


class WordTok:
    """Stand-in tokenizer: a document is a string of integers, each one token; BOS is 1."""

    bos_id, vocab_size = BOS, 100_000

    def encode(self, text, prepend=None):
        return ([prepend] if prepend is not None else []) + [int(w) for w in text.split()]

    def encode_batch(self, texts, num_threads=8, prepend=None):
        return [self.encode(t, prepend) for t in texts]


class ByteTok:
    bos_id, vocab_size = 256, 257

    def encode_batch(self, texts, num_threads=8, prepend=None):
        return [[prepend] + list(t.encode()) for t in texts]


def numbered_corpus(split, n_docs=300, per_chunk=16, seed=0):
    """Document i is 'i+1000 ...' (its first token names it) with 3..60 further tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 60, (n_docs,), generator=g).tolist()
    docs = tuple(" ".join([str(1000 + i)] + ["7"] * n) for i, n in enumerate(lengths))
    return ListCorpus("numbers", split, docs, per_chunk=per_chunk)


def doc_ids(inputs):
    """Ids of the documents that start in these rows (the token after each BOS)."""
    ids = []
    for row in inputs.tolist():
        assert row[0] == BOS, "every row starts at a document start"
        ids += [row[i + 1] for i in range(len(row) - 1) if row[i] == BOS and row[i + 1] >= 1000]
    return ids


def run(corpus, steps=None, **kw):
    out = []
    for k, batch in enumerate(batches_from_corpus(corpus, WordTok(), kw.pop("batch_size", 4),
                                                  kw.pop("seq_len", 64), **kw)):
        out.append(batch)
        if steps is not None and k + 1 == steps:
            break
    return out


def test_shapes_targets_and_bos_alignment():
    batches = run(numbered_corpus("val"))
    for x, y, cursor in batches:
        assert x.shape == y.shape == (4, 64) and x.dtype == y.dtype == torch.int64
        assert (x[:, 0] == BOS).all()
        ok = y != -1
        assert torch.equal(x[:, 1:][ok[:, :-1]], y[:, :-1][ok[:, :-1]])  # targets = inputs shifted by one
        json.dumps(cursor)


def test_val_pass_covers_every_document_once():
    corpus = numbered_corpus("val")
    ids = [i for x, _, _ in run(corpus) for i in doc_ids(x)]
    assert sorted(ids) == [1000 + i for i in range(len(corpus.docs))]


def test_two_ranks_are_disjoint_and_together_equal_one_rank():
    corpus = numbered_corpus("val")
    single = [i for x, _, _ in run(corpus) for i in doc_ids(x)]
    r0 = [i for x, _, _ in run(corpus, rank=0, world_size=2) for i in doc_ids(x)]
    r1 = [i for x, _, _ in run(corpus, rank=1, world_size=2) for i in doc_ids(x)]
    assert not set(r0) & set(r1)
    assert sorted(r0 + r1) == sorted(single)
    chunk_of = lambda i: (i - 1000) // corpus.per_chunk
    assert {chunk_of(i) % 2 for i in r0} == {0} and {chunk_of(i) % 2 for i in r1} == {1}


@pytest.mark.parametrize("split,cut", [("train", 3), ("train", 40), ("val", 5)])
def test_resume_from_cursor_is_bit_identical(split, cut):
    corpus = numbered_corpus(split, n_docs=120)  # small: the train run wraps around epochs
    full = run(corpus, steps=60 if split == "train" else None)
    resumed = run(corpus, steps=len(full) - cut, cursor=json.loads(json.dumps(full[cut - 1][2])))
    assert len(resumed) == len(full) - cut
    for (x1, y1, c1), (x2, y2, c2) in zip(full[cut:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and c1 == c2
    if split == "train":
        assert full[-1][2]["next"][0] >= 2, "the train split wraps around (epoch in the cursor)"


def test_resume_on_rank_with_gathered_cursor():
    corpus = numbered_corpus("train", n_docs=200)
    full = run(corpus, steps=12, rank=1, world_size=2)
    other = run(corpus, steps=5, rank=0, world_size=2)
    gathered = {"ranks": [other[-1][2], full[4][2]]}
    resumed = run(corpus, steps=7, rank=1, world_size=2, cursor=gathered)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[5:], resumed))
    with pytest.raises(UserError, match="rank"):
        run(corpus, steps=1, rank=0, world_size=2, cursor=full[4][2])
    other_source = {"ranks": [{**c, "source": "other"} for c in gathered["ranks"]]}
    with pytest.raises(UserError, match="source"):  # on another world size too
        run(corpus, steps=1, rank=0, world_size=3, cursor=other_source)
    swapped = {"ranks": gathered["ranks"][::-1]}
    with pytest.raises(UserError, match="inconsistent"):
        run(corpus, steps=1, rank=0, world_size=3, cursor=swapped)


def test_waste_accounting_matches_the_rows():
    batches = run(numbered_corpus("val", n_docs=400), seq_len=48)
    stats = batches[-1][2]["stats"]
    placed = sum(int((y != -1).sum()) + int((y != -1).any(dim=1).sum()) for _, y, _ in batches)
    assert stats["doc_tokens"] - stats["cropped"] == placed
    rows = sum(int((y != -1).any(dim=1).sum()) for _, y, _ in batches)
    assert stats["padded"] == rows * 49 - placed
    assert 0 < waste_fraction(batches[-1][2]) < 0.5


def test_best_fit_then_pad_or_crop():
    def packed(lengths, capacity):
        buf = _DocBuffer()
        for i, n in enumerate(lengths):
            buf.add([BOS] + [10 + i] * (n - 1), 0, i)
        stats = {"doc_tokens": 0, "cropped": 0, "padded": 0}
        row = _pack_row(buf, capacity, lambda: None, stats)
        return [row[j + 1] - 10 for j in range(len(row) - 1) if row[j] == BOS], stats, buf

    order, stats, _ = packed([5, 9, 4, 7], 16)  # 9 fits first, then 7 fills the row exactly
    assert order == [1, 3] and stats["padded"] == stats["cropped"] == 0
    order, stats, _ = packed([30, 14], 16)  # 14 fits; the gap of 2 would crop 28 tokens: pad instead
    assert order == [1] and stats == {"doc_tokens": 14, "cropped": 0, "padded": 2}
    order, stats, buf = packed([30, 40], 16)  # nothing fits an empty row: crop the shortest
    assert order == [0] and stats["cropped"] == 14 and len(buf) == 1


def test_synthetic_default_is_deterministic():
    a = next(pretrain_batches("synthetic", "train", ByteTok(), 2, 128))
    b = next(pretrain_batches("synthetic", "train", ByteTok(), 2, 128))
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    with pytest.raises(UserError, match="unknown data source"):
        pretrain_batches("nope", "train", ByteTok(), 2, 128)


MIRROR = Path(os.environ.get("PICOCHAT_MIRROR", "../shared/data"))


@pytest.mark.skipif(not (MIRROR / "pretrain" / "gutenberg_val.jsonl.gz").exists(), reason="no data mirror")
def test_gutenberg_val_through_the_mirror():
    it = pretrain_batches("gutenberg", "val", ByteTok(), 4, 256, mirror=str(MIRROR))
    x, y, cursor = next(it)
    text = bytes(t for t in x[0].tolist() if t < 256).decode("utf-8", errors="replace")
    assert x.shape == (4, 256) and (x[:, 0] == 256).all() and " the " in text


def test_cut_passages_respects_paragraphs_and_the_limit():
    from picochat.data.corpus import cut_passages

    book = "Title\n\n" + "\n\n".join(f"Para {i} line one\nline two." for i in range(200)) + "\n\n" + "Long. " * 400
    docs = cut_passages(book, max_chars=300)
    assert all(len(d) <= 300 for d in docs)
    assert docs[0].startswith("Title\n\nPara 0 line one line two.")  # hard wraps undone, paragraphs kept
    assert all(p.startswith("Para") or p.startswith("Title") or p.startswith("Long.")
               for d in docs for p in d.split("\n\n"))
    assert " ".join(" ".join(d.split()) for d in docs) == " ".join(book.split())  # nothing lost


class BrokenCorpus(ListCorpus):
    def chunk(self, index):
        if index == 3:
            raise UserError("chunk 3 is damaged")
        return super().chunk(index)


def test_reader_errors_reach_the_consumer_and_threads_stop():
    import threading

    corpus = BrokenCorpus("numbers", "val", numbered_corpus("val").docs, per_chunk=16)
    with pytest.raises(UserError, match="chunk 3 is damaged"):
        run(corpus)
    it = batches_from_corpus(numbered_corpus("train"), WordTok(), 2, 32)
    next(it)
    it.close()
    for t in threading.enumerate():
        if t.name == "picochat-loader":
            t.join(timeout=10)
    assert not [t for t in threading.enumerate() if t.name == "picochat-loader" and t.is_alive()]


def test_resume_with_the_real_tokenizer_on_synthetic():
    from picochat.data import synthetic
    from picochat.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.train(synthetic.chunk("train", 0), 400, native=False)
    full = list(itertools.islice(pretrain_batches("synthetic", "train", tok, 4, 64), 12))
    resumed = pretrain_batches("synthetic", "train", tok, 4, 64, cursor=json.loads(json.dumps(full[6][2])))
    for (x1, y1, _), (x2, y2, _) in zip(full[7:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert (full[0][0][:, 0] == tok.bos_id).all()


# ----------------------------------------------------------------------------- resume on another world size


def packed_docs(batches) -> Counter:
    """Documents packed into these batches: every BOS followed by a document's id (>= 1000), over the
    whole row (inputs plus the last target, so a document starting at the row's end counts too)."""
    ids: Counter = Counter()
    for x, y, _ in batches:
        for row in torch.cat([x, y[:, -1:]], dim=1).tolist():
            ids.update(row[i + 1] for i in range(len(row) - 1) if row[i] == BOS and row[i + 1] >= 1000)
    return ids


def pending_docs(corpus, cursors) -> Counter:
    return Counter(1000 + c * corpus.per_chunk + i for cur in cursors for c, i in cur["pending"])


def expected_reads(corpus, cursors) -> Counter:
    """How often each document has entered some rank's buffer when the ranks stand at these plain
    stride cursors: document i of chunk c is rank (c mod W)'s, read once in every epoch before the
    rank's, and once more if (c, i) comes before the rank's position in its current epoch."""
    world = len(cursors)
    counts: Counter = Counter()
    for g in range(len(corpus.docs)):
        c, i = divmod(g, corpus.per_chunk)
        epoch, chunk, offset = cursors[c % world]["next"]
        counts[1000 + g] = epoch + ((c, i) < (chunk, offset))
    return +counts


def run_ranks(corpus, world_size, steps, cursors=None, **kw):
    """Every rank's batches, as lists (cursors: each rank's, or the gathered cursor of another world)."""
    return [run(corpus, steps=steps, rank=r, world_size=world_size, buffer_size=24,
                cursor=cursors if cursors is None or "ranks" in cursors else cursors[r], **kw)
            for r in range(world_size)]


@pytest.mark.parametrize("new_world", [1, 3])
@pytest.mark.parametrize("steps", [(5, 5), (3, 9)])
def test_resume_on_another_world_size_packs_every_document_once(new_world, steps):
    """Two ranks stop, their cursors are re-sharded to 1 or 3 ranks, and those run to the end of the
    split: before + after is every document exactly once. Chunks of 100 documents are read in
    slices of 64, so ranks stop inside a chunk and its rest must be handed over too."""
    corpus = numbered_corpus("val", n_docs=1000, per_chunk=100)
    before = [run(corpus, steps=k, rank=r, world_size=2, buffer_size=24) for r, k in enumerate(steps)]
    gathered = {"ranks": [json.loads(json.dumps(b[-1][2])) for b in before]}
    assert any(c["next"][2] > 0 for c in gathered["ranks"]), "a rank stopped inside a chunk"
    shards = reshard_cursors(gathered["ranks"], new_world, corpus.num_chunks())
    assert any(seg[2] > 0 for c in shards for seg in c.get("leftover", [])), "a partial chunk is handed over"
    after = run_ranks(corpus, new_world, None, gathered)
    consumed = sum((packed_docs(b) for b in before + after), Counter())
    assert consumed == Counter(range(1000, 2000))
    assert all(b[-1][2]["next"][1] >= corpus.num_chunks() for b in after)


def test_resharding_twice_then_back_still_packs_every_document_once():
    corpus = numbered_corpus("val", n_docs=1800, per_chunk=300)
    first = run_ranks(corpus, 2, 4)
    second = run_ranks(corpus, 3, 1, {"ranks": [b[-1][2] for b in first]})
    assert any("leftover" in b[-1][2] for b in second), "stopped again before the leftovers were read"
    third = run_ranks(corpus, 2, None, {"ranks": [b[-1][2] for b in second]})
    consumed = sum((packed_docs(b) for b in first + second + third), Counter())
    assert consumed == Counter(range(1000, 2800))


@pytest.mark.parametrize("new_world", [1, 3])
def test_resume_on_another_world_size_across_epochs(new_world):
    """The train split wraps: 7 chunks on 2 ranks are 4 + 3 per epoch, so the ranks drift into
    different epochs. After 2 -> W' ranks, what was packed plus what is pending must be exactly what
    the final cursors say was read (each document once per epoch passed), nothing more or less."""
    corpus = numbered_corpus("train", n_docs=280, per_chunk=40)
    before = run_ranks(corpus, 2, 30)
    old = [b[-1][2] for b in before]
    packed_before = packed_docs(a for b in before for a in b)
    assert packed_before + pending_docs(corpus, old) == expected_reads(corpus, old)
    assert old[0]["next"][0] != old[1]["next"][0], "the ranks are in different epochs"
    after = run_ranks(corpus, new_world, 40, {"ranks": old})
    new = [b[-1][2] for b in after]
    assert all("leftover" not in c and c["next"][0] >= 3 for c in new)
    read = packed_before + packed_docs(a for b in after for a in b) + pending_docs(corpus, new)
    assert read == expected_reads(corpus, new)


def test_same_world_size_never_reshards():
    """Resuming on the same number of ranks takes each rank's own cursor: exact, as before."""
    corpus = numbered_corpus("train", n_docs=200)
    full = run_ranks(corpus, 2, 10)
    gathered = {"ranks": [b[4][2] for b in full]}
    resumed = run_ranks(corpus, 2, 5, gathered)
    for a, b in zip(full, resumed):
        assert all(torch.equal(x[0], y[0]) and x[2] == y[2] for x, y in zip(a[5:], b))
        assert "leftover" not in b[-1][2]
