"""--data PATH: the user's own text as a pretraining corpus (data/user_corpus.py).

Formats and the document rule, chunks that re-read on their own (in any order, with lines that
straddle chunk boundaries), streaming, the hash-held-out and explicit validation splits, every
class of bad input (one sentence naming the file and line, exit code 2, no traceback), exact
resume of the real loader on a user corpus, and the CLI commands that take --data.
"""

import gzip
import itertools
import json
import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import picochat.data.user_corpus as U
from picochat.common.errors import UserError
from picochat.data import line_chunks
from picochat.data.loader import batches_from_corpus
from picochat.data.user_corpus import UserData, held_out, open_text_corpora, open_text_corpus


def make_docs(n=600, seed=0):
    """Documents of 1..60 words (some non-ASCII), no blank lines inside."""
    r = random.Random(seed)
    words = ["alpha", "beta", "gamma", "délta", "ε-psilon", "zeta", "日本", "eta:", "theta,"]
    return [" ".join(r.choice(words) for _ in range(r.randint(1, 60))) + f" #{i}" for i in range(n)]


def write(path, fmt, docs, field="text"):
    """Write docs in format fmt; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "txt":
        path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    elif fmt == "jsonl.gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("".join(json.dumps({field: d}) + "\n" for d in docs))
    elif fmt == "parquet":
        pq.write_table(pa.table({field: docs, "n": list(range(len(docs)))}), path, row_group_size=97)
    return path


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few hundred bytes, so that small test files span many chunks."""
    monkeypatch.setattr(line_chunks, "CHUNK_BYTES", 512)
    monkeypatch.setattr(line_chunks, "GZIP_BLOCK", 128)
    monkeypatch.setattr(line_chunks, "GZIP_BLOCKS_PER_CHUNK", 2)


def all_docs(data):
    return [d for i in range(data.num_chunks()) for d in data.docs(i)]


FORMATS = ["txt", "jsonl", "jsonl.gz", "parquet"]


# ----------------------------------------------------------------------------- formats and chunks


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_every_document_once_in_order(tmp_path, small_chunks, fmt):
    docs = make_docs()
    data = UserData(str(write(tmp_path / f"c.{fmt}", fmt, docs)))
    assert data.num_chunks() > 5  # many chunks, so boundaries are exercised
    assert all_docs(data) == docs


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunks_reread_on_their_own_in_any_order(tmp_path, small_chunks, fmt):
    docs = make_docs()
    path = str(write(tmp_path / f"c.{fmt}", fmt, docs))
    data = UserData(path)
    sequential = [data.docs(i) for i in range(data.num_chunks())]
    order = list(range(data.num_chunks()))
    random.Random(1).shuffle(order)
    for i in order:  # backwards, forwards, repeated: the gzip reader restarts or continues
        assert data.docs(i) == sequential[i]
        assert UserData(path).docs(i) == sequential[i]  # a fresh process (a resume) reads the same


@pytest.mark.parametrize("fmt", ["jsonl.gz", "parquet"])
def test_read_ahead_never_returns_a_wrong_chunk(tmp_path, small_chunks, fmt):
    data = UserData(str(write(tmp_path / f"c.{fmt}", fmt, make_docs())))
    truth = [data.docs(i) for i in range(data.num_chunks())]
    corpus = data.corpus("train", holdout=False)
    n = corpus.num_chunks()
    order = [*range(1, n, 2), *range(0, n, 3), *(i % n for i in (5, 4, 3, 6, 2)), *range(n)]  # strides, misses
    assert all(corpus.chunk(i) == truth[i] for i in order)
    assert corpus._ahead is None or corpus._ahead[1].result() == truth[corpus._ahead[0]]


def test_txt_documents_are_blank_line_blocks(tmp_path):
    text = "\ufeffFirst line\r\nsame doc\r\n\r\n  \n\nsecond\n\n\n\nthird\nthird b"  # BOM, CRLF, runs of blanks
    (tmp_path / "a.txt").write_bytes(text.encode())
    data = UserData(str(tmp_path / "a.txt"))
    assert all_docs(data) == ["First line\nsame doc", "second", "third\nthird b"]


def test_txt_without_blank_lines_is_cut_into_bounded_documents(tmp_path):
    lines = [f"line {i} " + "x" * 90 for i in range(500)]  # ~50 kB, no blank line
    (tmp_path / "a.txt").write_text("\n".join(lines))
    docs = all_docs(UserData(str(tmp_path / "a.txt")))
    assert len(docs) > 10 and all(len(d) <= U.MAX_TXT_DOC_CHARS for d in docs)
    assert "\n".join(docs).split("\n") == lines  # cut at line breaks only; nothing lost


def test_txt_paragraphs_across_chunk_boundaries_lose_and_repeat_no_line(tmp_path, small_chunks):
    paragraphs = ["\n".join(f"p{i} line {j} " + "w" * (i % 7) for j in range(1 + i % 5)) for i in range(200)]
    (tmp_path / "a.txt").write_text("\n\n".join(paragraphs) + "\n")
    docs = all_docs(UserData(str(tmp_path / "a.txt")))
    assert "\n".join(docs).split("\n") == "\n".join(paragraphs).split("\n")  # every line once, in order
    assert len(paragraphs) < len(docs) < len(paragraphs) * 1.5  # a paragraph cut by a boundary is two docs


def test_multi_member_gzip_and_lines_straddling_blocks(tmp_path, small_chunks):
    docs = make_docs(300)
    path = tmp_path / "m.jsonl.gz"
    with open(path, "wb") as f:  # two gzip members back to back (what `cat a.gz b.gz` makes)
        for part in (docs[:100], docs[100:]):
            f.write(gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in part).encode()))
    assert all_docs(UserData(str(path))) == docs


def test_a_stream_over_many_gzip_files_keeps_few_files_open(tmp_path, small_chunks):
    for k in range(30):
        write(tmp_path / f"part{k:02d}.jsonl.gz", "jsonl.gz", make_docs(60, seed=k))
    fd_dir = Path("/proc/self/fd")
    before = len(list(fd_dir.iterdir()))
    corpus = UserData(str(tmp_path)).corpus("train", holdout=False)  # checking reads every file's top
    assert len(list(fd_dir.iterdir())) <= before + 1
    for i in range(0, corpus.num_chunks(), 2):  # a rank of two reads every other chunk, never a file's end
        corpus.chunk(i)
    assert len(list(fd_dir.iterdir())) <= before + 2


def test_folder_is_recursive_sorted_and_skips_hidden_and_other_files(tmp_path, capsys):
    write(tmp_path / "b" / "z.txt", "txt", ["from b/z"])
    write(tmp_path / "a.jsonl", "jsonl", ["from a"])
    write(tmp_path / "b" / "c" / "y.parquet", "parquet", ["from b/c/y"])
    write(tmp_path / ".hidden" / "x.txt", "txt", ["hidden"])
    write(tmp_path / ".x.txt", "txt", ["hidden file"])
    (tmp_path / "notes.md").write_text("not data")
    assert all_docs(UserData(str(tmp_path))) == ["from a", "from b/c/y", "from b/z"]
    assert "ignoring 1 files with other extensions" in capsys.readouterr().out
    assert all_docs(UserData(str(tmp_path / "b" / "**" / "*.*"))) == ["from b/c/y", "from b/z"]  # a glob


def test_text_field_selects_the_field_and_column(tmp_path):
    write(tmp_path / "a.jsonl", "jsonl", ["one", "two"], field="body")
    write(tmp_path / "b.parquet", "parquet", ["three"], field="body")
    categorical = pa.table({"body": pa.array(["four", "four", "five"]).dictionary_encode()})
    pq.write_table(categorical, tmp_path / "c.parquet")  # what pandas writes for a categorical column
    assert all_docs(UserData(str(tmp_path), "body")) == ["one", "two", "three", "four", "four", "five"]


def test_reading_a_chunk_of_a_big_file_holds_one_chunk_in_memory(tmp_path):
    docs = make_docs(3000)
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for k in range(20):  # ~18 MB on disk
            f.write("".join(json.dumps({"text": d + f" {k}"}) + "\n" for d in docs))
    data = UserData(str(path))
    assert data.num_chunks() >= 16
    tracemalloc.start()
    middle = data.docs(data.num_chunks() // 2)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # one chunk's bytes, lines, decoded strings and parsed objects (~3.5 MB); the file is 18 MB
    assert middle and peak < 5 * line_chunks.CHUNK_BYTES, peak


# ----------------------------------------------------------------------------- validation split


@pytest.mark.parametrize("fmt", ["txt", "jsonl.gz"])
def test_hash_split_is_disjoint_complete_and_deterministic(tmp_path, small_chunks, fmt):
    docs = make_docs(3000)
    corpora = open_text_corpora("", data=str(write(tmp_path / f"c.{fmt}", fmt, docs)))
    train, val = list(corpora["train"].documents()), list(corpora["val"].documents())
    assert sorted(train + val) == sorted(docs)
    assert set(val) == {d for d in docs if held_out(d)}
    assert 10 <= len(val) <= 50  # 1 in 100 of 3000, give or take
    assert corpora["train"].name == corpora["val"].name


def test_explicit_val_data_keeps_every_train_document(tmp_path):
    docs = make_docs(300)
    train_path = write(tmp_path / "train.jsonl", "jsonl", docs)
    val_path = write(tmp_path / "val" / "v.txt", "txt", ["held out one", "held out two"])
    corpora = open_text_corpora("", data=str(train_path), val_data=str(tmp_path / "val"))
    assert list(corpora["train"].documents()) == docs
    assert list(corpora["val"].documents()) == ["held out one", "held out two"]
    assert list(open_text_corpus("", "val", data=str(train_path), val_data=str(val_path)).documents()) == \
        ["held out one", "held out two"]


def test_val_data_or_text_field_without_data_is_refused(tmp_path):
    with pytest.raises(UserError, match="pass --data too"):
        open_text_corpora("synthetic", val_data=str(tmp_path))
    with pytest.raises(UserError, match="pass --data too"):
        open_text_corpus("synthetic", "train", text_field="body")


def test_val_data_inside_the_data_folder_is_left_out_of_training(tmp_path, capsys):
    write(tmp_path / "corpus" / "train.jsonl", "jsonl", ["train one", "train two"])
    write(tmp_path / "corpus" / "val.jsonl", "jsonl", ["val one"])
    corpora = open_text_corpora("", data=str(tmp_path / "corpus"), val_data=str(tmp_path / "corpus" / "val.jsonl"))
    assert list(corpora["train"].documents()) == ["train one", "train two"]
    assert list(corpora["val"].documents()) == ["val one"]
    assert "leaving out 1 files that are --val-data" in capsys.readouterr().out
    with pytest.raises(UserError, match="every file of --data .* is also in --val-data"):
        open_text_corpus("", "train", data=str(tmp_path / "corpus" / "val.jsonl"), val_data=str(tmp_path / "corpus"))


def test_too_few_documents_for_a_hash_split_says_to_pass_val_data(tmp_path):
    docs = [d for d in make_docs(50) if not held_out(d)]
    path = write(tmp_path / "few.txt", "txt", docs)
    with pytest.raises(UserError, match="validation split .* is empty.*--val-data"):
        open_text_corpora("", data=str(path))


# ----------------------------------------------------------------------------- bad input


GOOD = json.dumps({"text": "fine"}) + "\n"  # 17 bytes
MANY = GOOD * 80_000  # 1.36 MB: past the first chunk, so the error is met while streaming


def _file(tmp_path, name, content):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def _gz(tmp_path, name, content: bytes):
    return _file(tmp_path, name, gzip.compress(content))


def _dangling(tmp_path):
    """A folder holding a good file and a link to a file that is gone (stands in for any OSError)."""
    _file(tmp_path, "d/ok.txt", "fine")
    os.symlink(tmp_path / "nowhere.txt", tmp_path / "d" / "gone.txt")
    return str(tmp_path / "d")


# name -> (build(tmp_path) -> --data spec, fragments the one sentence must contain)
BAD = {
    "no-match": (lambda t: str(t / "nothing" / "*.txt"), ["matches no files"]),
    "missing": (lambda t: str(t / "missing.txt"), ["does not exist"]),
    "empty-file": (lambda t: _file(t, "empty.txt", ""), ["empty.txt has no text"]),
    "blank-file": (lambda t: _file(t, "blank.jsonl", "\n\n  \n"), ["no text"]),
    "empty-dir": (lambda t: (t / "d").mkdir() or str(t / "d"), ["has no files"]),
    "only-other-files": (lambda t: str(Path(_file(t, "d/a.csv", "a,b\n")).parent), ["only files ending in .csv"]),
    "unsupported-extension": (lambda t: _file(t, "a.docx", "x"), ["unsupported extension"]),
    "not-json": (lambda t: _file(t, "n.jsonl", GOOD + "{not json\n"), ["n.jsonl line 2", "not valid JSON"]),
    "not-an-object-deep-in-the-file": (lambda t: _file(t, "late.jsonl", MANY + "[1, 2]\n"),
                                       ["late.jsonl line 80001", "an array"]),
    "missing-field": (lambda t: _file(t, "f.jsonl", json.dumps({"body": "x"}) + "\n"),
                      ["line 1", "no 'text' field", "body", "--text-field"]),
    "non-string-field": (lambda t: _file(t, "s.jsonl", GOOD + json.dumps({"text": 7}) + "\n"),
                         ["line 2", "'text' is a number"]),
    "null-field": (lambda t: _file(t, "z.jsonl", json.dumps({"text": None}) + "\n"), ["line 1", "is null"]),
    "undecodable-txt": (lambda t: _file(t, "l.txt", "ok line\nsecond\ncaf\xe9 au lait\n".encode("latin-1")),
                        ["l.txt line 3", "not UTF-8", "byte offset 18"]),
    "undecodable-gz": (lambda t: _gz(t, "b.jsonl.gz", GOOD.encode() + b'{"text": "caf\xff"}\n'),
                       ["b.jsonl.gz line 2", "not UTF-8", "byte offset 30"]),
    "undecodable-deep-in-a-txt": (lambda t: _file(t, "deep.txt", MANY.encode() + b"\xff\n"),
                                  ["deep.txt line 80001", "not UTF-8", "byte offset 1360000"]),
    "truncated-gzip": (lambda t: _file(t, "c.jsonl.gz", gzip.compress(MANY.encode())[:2000]), ["truncated gzip"]),
    "parquet-without-column": (lambda t: str(write(t / "c.parquet", "parquet", ["x"], field="content")),
                               ["no column 'text'", "content"]),
    "parquet-non-string-column": (lambda t: pq.write_table(pa.table({"text": [1, 2]}), t / "i.parquet")
                                  or str(t / "i.parquet"), ["'text' is int64"]),
    "parquet-null": (lambda t: pq.write_table(pa.table({"text": ["a", None]}), t / "n.parquet")
                     or str(t / "n.parquet"), ["n.parquet row 1", "null"]),
    "deeply-nested-json": (lambda t: _file(t, "deep.jsonl", "[" * 100_000 + "\n"),
                           ["deep.jsonl line 1", "not valid JSON"]),
    "unreadable-file": (lambda t: _dangling(t), ["cannot read", "gone.txt"]),
    "parquet-empty": (lambda t: pq.write_table(pa.table({"text": pa.array([], pa.string())}), t / "e.parquet")
                      or str(t / "e.parquet"), ["e.parquet has no text"]),
    "parquet-damaged": (lambda t: _file(t, "j.parquet", b"PAR1 not really"), ["not a readable parquet file"]),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_sentence_naming_the_place(tmp_path, name):
    build, fragments = BAD[name]
    spec = build(tmp_path)
    with pytest.raises(UserError) as e:
        corpora = open_text_corpora("", data=spec)
        for c in corpora.values():  # errors past the first chunk surface when the stream reaches them
            list(c.documents())
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("name", ["no-match", "empty-dir", "not-json", "undecodable-txt", "parquet-without-column"])
def test_bad_input_on_the_command_line_exits_2_without_traceback(tmp_path, name):
    build, fragments = BAD[name]
    spec = build(tmp_path)
    r = subprocess.run([sys.executable, "-m", "picochat", "tokenizer", "train", "--data", spec, "--home",
                        str(tmp_path / "home"), "--vocab-size", "300"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("picochat: error: ")
    assert fragments[0] in r.stderr and r.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- the loader on it


class ByteTok:
    bos_id, vocab_size = 256, 257

    def encode_batch(self, texts, num_threads=8, prepend=None):
        return [[prepend] + list(t.encode()) for t in texts]


@pytest.mark.parametrize("fmt", ["txt", "jsonl.gz", "parquet"])
def test_loader_resumes_exactly_inside_a_user_corpus(tmp_path, small_chunks, fmt):
    path = write(tmp_path / f"c.{fmt}", fmt, make_docs(800))
    train = open_text_corpora("", data=str(path))["train"]

    def stream(cursor=None, rank=0, world=1):
        return batches_from_corpus(train, ByteTok(), 4, 64, cursor=cursor, rank=rank, world_size=world,
                                   buffer_size=16)

    full = list(itertools.islice(stream(), 30))
    cursor = json.loads(json.dumps(full[11][2]))  # what a checkpoint stores
    assert cursor["source"].startswith("data:") and cursor["next"][1] > 0  # points into the corpus
    reopened = open_text_corpora("", data=str(path))["train"]  # a new process: nothing cached
    resumed = list(itertools.islice(batches_from_corpus(reopened, ByteTok(), 4, 64, cursor=cursor,
                                                        buffer_size=16), 18))
    for a, b in zip(full[12:], resumed, strict=True):
        assert a[0].equal(b[0]) and a[1].equal(b[1])
    for rank in range(2):  # under two ranks each reads its own chunks: rank r those with index % 2 == r
        pending = [c for b in itertools.islice(stream(rank=rank, world=2), 3) for c, _ in b[2]["pending"]]
        assert pending and {c % 2 for c in pending} == {rank}


def test_resume_on_changed_data_is_refused(tmp_path):
    path = write(tmp_path / "c.jsonl", "jsonl", make_docs(300))
    train = open_text_corpora("", data=str(path))["train"]
    cursor = next(batches_from_corpus(train, ByteTok(), 2, 64))[2]
    with open(path, "a") as f:
        f.write(json.dumps({"text": "appended later"}) + "\n")
    changed = open_text_corpora("", data=str(path))["train"]
    with pytest.raises(UserError, match="data cursor has source="):
        next(batches_from_corpus(changed, ByteTok(), 2, 64, cursor=cursor))


# ----------------------------------------------------------------------------- the commands


def test_tokenizer_train_on_data_records_it_and_reads_the_train_split(tmp_path):
    docs = make_docs(400)
    write(tmp_path / "texts" / "a.txt", "txt", docs[:200])
    write(tmp_path / "texts" / "b.jsonl", "jsonl", docs[200:])
    argv = [sys.executable, "-m", "picochat", "tokenizer", "train", "--data", str(tmp_path / "texts"), "--home",
            str(tmp_path / "home"), "--run", "r", "--vocab-size", "300"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    config = json.loads((tmp_path / "home" / "runs" / "r" / "tokenizer" / "config.json").read_text())
    assert config["tokenizer"]["data"] == str(tmp_path / "texts") and config["tokenizer"]["source"] == "data"
    n_train = sum(1 for d in docs if not held_out(d))
    assert f"from {n_train} documents" in first.stdout  # the held-out documents are not read
    again = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already trained" in again.stdout
    other = subprocess.run([*argv, "--text-field", "body"], capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "different settings" in other.stderr
    ev = subprocess.run([sys.executable, "-m", "picochat", "tokenizer", "eval", "--data", str(tmp_path / "texts"),
                         "--home", str(tmp_path / "home"), "--run", "r"], capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0 and "held-out chars of --data" in ev.stdout, ev.stderr


def test_speedrun_hands_data_to_the_tokenizer_and_base_only(tmp_path):
    from picochat.cli import build_parser, resolve
    from picochat.cli.speedrun import PLAN, resolve_step

    ns = build_parser().parse_args(["speedrun", "--data", "texts/", "--text-field", "body", "--val-data", "v.txt"])
    cfg = resolve(ns._command, ns)
    steps = {s.name: resolve_step(s, cfg) for s in PLAN if s.name in ("tokenizer", "base", "mid", "bpb-base")}
    assert (steps["tokenizer"].tokenizer.data, steps["tokenizer"].tokenizer.text_field) == ("texts/", "body")
    assert (steps["base"].train.data, steps["base"].train.val_data) == ("texts/", "v.txt")
    assert steps["mid"].train.data == "" and steps["bpb-base"].eval.data == ""  # bpb reads base's config


def test_base_without_a_tokenizer_under_torchrun_names_the_data_flags(tmp_path):
    from types import SimpleNamespace

    from picochat.config import ModelConfig, RunConfig, TrainConfig
    from picochat.train.base import tokenizer_for

    cfg = SimpleNamespace(run=RunConfig(run="r", home=str(tmp_path)), model=ModelConfig(vocab_size=300),
                          train=TrainConfig(data="my texts/", text_field="body"))
    with pytest.raises(UserError, match="tokenizer train --run r --data my texts/ --text-field body"):
        tokenizer_for(cfg, world_size=2)
