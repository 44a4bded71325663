"""Pretraining loader throughput and token waste: picochat's loader beside nanochat's, and beside
the demo trainer's appetite.

On the same documents (the Gutenberg passages of the mirror, in picochat's order) and the same
tokenizer (a picochat BPE, trained here unless --tokenizer is given), for each sequence length:
- picochat `batches_from_corpus` (pad-or-crop, the default) and with `pad_gaps=False` (always crop,
  nanochat's rule), and nanochat's `tokenizing_distributed_data_loader_with_state_bos_bestfit`
  (its parquet reader pointed at parquet files holding the same passages, device cpu);
- tokens/s = B x T tokens yielded per second of wall time (tokenization included), and the waste
  fraction = (cropped + padded) / (tokens read + padded). For nanochat (which never pads) the
  cropped count is tokens tokenized - tokens still in its buffer - tokens yielded in rows.
Then the demo trainer's consumption: forward + backward of the demo GPT on demo-shaped batches
(optimizer step left out, so the real trainer is slower and the ratio printed is a lower bound).

Own data (`--data PATH`, data/user_corpus.py) beside the built-in source: the same passages
written to a temp dir as .jsonl, .jsonl.gz, .parquet and .txt (a passage's inner blank lines
become single newlines there, since a blank line ends a .txt document), read through
UserCorpus (with --val-data, so no document is held out and the passages are the built-in
ones, in the same order) into the same loader at the first seq_len; rounds interleaved, best
of --repeats each, as tokens/s of wall time and tokens per CPU-second of the process (the steadier
number on a shared machine), each printed as a ratio to the built-in source.

    python benchmarks/loader.py --mirror ../shared/data --nanochat /work/nanochat
    python benchmarks/loader.py --mirror ../shared/data --own-data-only --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from picochat.data.corpus import open_corpus
from picochat.data.loader import batches_from_corpus, waste_fraction


def get_tokenizer(path: str, mirror: str, vocab_size: int, train_chars: int):
    from picochat.tokenizer.tokenizer import Tokenizer

    if path:
        return Tokenizer.load(path)
    docs = open_corpus("gutenberg", "train", mirror=mirror)
    texts, n = [], 0
    for i in range(docs.num_chunks()):
        for d in docs.chunk(i):
            texts.append(d)
            n += len(d)
        if n >= train_chars:
            break
    t = time.time()
    tok = Tokenizer.train(texts, vocab_size)
    print(f"tokenizer: trained vocab {vocab_size} on {n / 1e6:.1f}M chars in {time.time() - t:.1f}s")
    return tok


def measure(corpus, tok, B, T, tokens, **kw):
    """(tokens/s of wall time, tokens per CPU-second of this process, waste) after the first batch."""
    it = batches_from_corpus(corpus, tok, B, T, **kw)
    next(it)  # start-up (thread, first slices) is not steady state
    t, cpu = time.perf_counter(), time.process_time()
    steps = max(1, tokens // (B * T))
    cursor = None
    for batch in itertools.islice(it, steps):
        cursor = batch[2]
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    it.close()
    return steps * B * T / dt, steps * B * T / dcpu, waste_fraction(cursor)


def run_picochat(corpus, tok, B, T, tokens, **kw):
    rate, _, waste = measure(corpus, tok, B, T, tokens, **kw)
    return rate, waste


class NanochatTok:
    """nanochat's tokenizer interface over a picochat Tokenizer (the same ids for both loaders)."""

    def __init__(self, tok):
        self.tok = tok

    def get_bos_token_id(self):
        return self.tok.bos_id

    def encode(self, texts, prepend=None, num_threads=4):
        return self.tok.encode_batch(texts, num_threads=num_threads, prepend=prepend)


def run_nanochat(nanochat_dir, corpus, tok, B, T, tokens, tmp):
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, nanochat_dir)
    import nanochat.dataloader as ndl

    paths = [Path(tmp) / "train.parquet", Path(tmp) / "val.parquet"]
    if not paths[0].exists():
        docs = [d for i in range(corpus.num_chunks()) for d in corpus.chunk(i)]
        pq.write_table(pa.table({"text": docs}), paths[0], row_group_size=1024)
        pq.write_table(pa.table({"text": docs[:1024]}), paths[1], row_group_size=1024)
    ndl.list_parquet_files = lambda *a, **k: [str(p) for p in paths]
    counting = NanochatTok(tok)
    produced = [0]
    encode = counting.encode

    def count(texts, prepend=None, num_threads=4):
        out = encode(texts, prepend=prepend, num_threads=num_threads)
        produced[0] += sum(map(len, out))
        return out

    counting.encode = count
    gen = ndl.tokenizing_distributed_data_loader_with_state_bos_bestfit(counting, B, T, "train", device="cpu")
    next(gen)
    t = time.perf_counter()
    steps = max(1, tokens // (B * T))
    for _ in itertools.islice(gen, steps):
        pass
    dt = time.perf_counter() - t
    buffered = sum(map(len, gen.gi_frame.f_locals["doc_buffer"]))
    rows_tokens = (steps + 1) * B * (T + 1)
    waste = (produced[0] - buffered - rows_tokens) / (produced[0] - buffered)
    gen.close()
    return steps * B * T / dt, waste


def write_own_data(corpus, folder: Path) -> dict[str, Path]:
    """The corpus's documents as one file per format (what a user would hand to --data)."""
    import gzip
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    docs = [d for i in range(corpus.num_chunks()) for d in corpus.chunk(i)]
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs)
    paths = {fmt: folder / f"train.{fmt}" for fmt in ("jsonl", "jsonl.gz", "parquet", "txt")}
    paths["jsonl"].write_text(lines)
    with gzip.open(paths["jsonl.gz"], "wt", compresslevel=6) as f:
        f.write(lines)
    pq.write_table(pa.table({"text": docs}), paths["parquet"], row_group_size=1024)
    paths["txt"].write_text("\n\n".join(d.replace("\n\n", "\n") for d in docs) + "\n")
    (folder / "val.txt").write_text(docs[0] + "\n")
    return paths


def own_data_rows(corpus, tok, B: int, T: int, args, tmp: str) -> list[tuple[str, float, float, float]]:
    """(name, best tokens/s, best tokens/CPU-s, waste) for the built-in source and each own-data
    format, rounds interleaved (on a shared machine the CPU rate is the steadier of the two)."""
    from picochat.data.user_corpus import open_text_corpora

    paths = write_own_data(corpus, Path(tmp) / "own")
    corpora = {"built-in gutenberg": corpus}
    for fmt, path in paths.items():
        t = time.perf_counter()
        corpora[f"--data .{fmt}"] = open_text_corpora("", data=str(path), val_data=str(path.parent / "val.txt"),
                                                      log=lambda *a: None)["train"]
        print(f"opened {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.2f}s")
    best: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in corpora}
    for _ in range(args.repeats):
        for name, c in corpora.items():
            rate, cpu_rate, waste = measure(c, tok, B, T, args.tokens, tokenizer_threads=args.threads)
            best[name] = [max(rate, best[name][0]), max(cpu_rate, best[name][1]), waste]
    return [(name, *values) for name, values in best.items()]


def demo_trainer_rate(steps: int) -> float:
    from picochat.config import get_preset
    from picochat.run_layout import build_model

    preset = get_preset("demo")
    B, T = preset.stages["base"].device_batch_size, preset.model.seq_len
    model = build_model(preset.model, preset.model.vocab_size)
    x = torch.randint(0, preset.model.vocab_size, (B, T))
    model(x, x).backward()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        model(x, x).backward()
    return steps * B * T / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mirror", default=os.environ.get("PICOCHAT_MIRROR", "../shared/data"))
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""))
    ap.add_argument("--tokenizer", default="", help="a picochat tokenizer.json (default: train one here)")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--train-chars", type=int, default=5_000_000)
    ap.add_argument("--tokens", type=int, default=2_000_000, help="tokens to pull per loader run")
    ap.add_argument("--seq-lens", default="256,2048")
    ap.add_argument("--batch-size-tokens", type=int, default=4096 * 4, help="B = this // seq_len")
    ap.add_argument("--threads", type=int, default=2, help="tokenizer threads (this box has 2 cores)")
    ap.add_argument("--trainer-steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5, help="own-data rounds (best of each; default: 5)")
    ap.add_argument("--own-data-only", action="store_true", help="only the own-data vs built-in comparison")
    args = ap.parse_args()

    tok = get_tokenizer(args.tokenizer, args.mirror, args.vocab_size, args.train_chars)
    corpus = open_corpus("gutenberg", "train", mirror=args.mirror)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        T = int(args.seq_lens.split(",")[0])
        B = max(1, args.batch_size_tokens // T)
        own = own_data_rows(corpus, tok, B, T, args, tmp)
        print(f"\nown data vs the built-in source, seq_len {T}, B {B} (best of {args.repeats} interleaved rounds)")
        print(f"{'corpus':<22} {'tokens/s':>10} {'vs built-in':>11} {'tokens/CPU-s':>13} {'vs built-in':>11} "
              f"{'waste':>7}")
        for name, rate, cpu_rate, waste in own:
            print(f"{name:<22} {rate / 1e6:>8.2f}M {rate / own[0][1]:>10.2f}x {cpu_rate / 1e6:>11.2f}M "
                  f"{cpu_rate / own[0][2]:>10.2f}x {waste:>7.2%}")
        if args.own_data_only:
            return
        for T in map(int, args.seq_lens.split(",")):
            B = max(1, args.batch_size_tokens // T)
            for name, kw in (("picochat (pad or crop)", {}), ("picochat (always crop)", {"pad_gaps": False})):
                rate, waste = run_picochat(corpus, tok, B, T, args.tokens, tokenizer_threads=args.threads, **kw)
                rows.append((T, B, name, rate, waste))
            if args.nanochat:
                rate, waste = run_nanochat(args.nanochat, corpus, tok, B, T, args.tokens, tmp)
                rows.append((T, B, "nanochat bestfit", rate, waste))
    print(f"\n{'seq_len':>7} {'B':>4}  {'loader':<24} {'tokens/s':>10} {'vs nanochat':>11} {'waste':>7}")
    for T, B, name, rate, waste in rows:
        ref = next((r[3] for r in rows if r[0] == T and r[2].startswith("nanochat")), None)
        ratio = f"x{rate / ref:.2f}" if ref else "-"
        print(f"{T:>7} {B:>4}  {name:<24} {rate / 1e6:>8.2f}M {ratio:>11} {waste:>7.2%}")
    train_rate = demo_trainer_rate(args.trainer_steps)
    demo = next(r[3] for r in rows if r[2].startswith("picochat (pad"))
    print(f"\ndemo trainer (fwd+bwd, depth 4, 16 x 256, CPU): {train_rate / 1e3:.1f}k tokens/s; "
          f"loader at seq_len {rows[0][0]}: {demo / 1e6:.2f}M tokens/s = x{demo / train_rate:.0f} the trainer's rate")


if __name__ == "__main__":
    main()
