"""Tokenizer training, side by side: picochat's native trainer vs rustbpe vs HF `tokenizers`.

Each trainer runs in its own subprocess on the same text (streamed from the same file, one
document per JSON line), to the same vocabulary (special tokens included), with the same split
pattern. We print wall time of the training call, peak RSS of the process, and bytes/token of
the result on held-out text; then ratios against picochat. Trainers run interleaved for
`--repeats` rounds and the median time is reported, because the machine is shared.

Then encode_batch throughput: picochat's Tokenizer vs a raw tiktoken Encoding with the same
ranks (the overhead is ours).

    python benchmarks/tokenizer_train.py --mirror ../shared/data          # Gutenberg, 58 MB
    python benchmarks/tokenizer_train.py --file corpus.jsonl --val val.jsonl --vocab-size 32768

Needs the `bench` extra: pip install rustbpe tokenizers psutil.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SPECIALS = 9  # picochat's special tokens, counted in vocab_size by every contender


def iter_docs(path: str) -> Iterator[str]:
    """Documents of a .jsonl(.gz) file ({"text": ...} per line), or ~1 MB pieces of a text file."""
    if ".jsonl" in path:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]
        return
    text = Path(path).read_text(encoding="utf-8")
    start = 0
    while start < len(text):
        end = text.find("\n", start + 1_000_000)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


# ---- the contenders (each runs in a fresh subprocess) -------------------------------------------


def train_picochat(path: str, vocab_size: int, pattern: str):
    from picochat.tokenizer import fast
    from picochat.tokenizer.tokenizer import Tokenizer

    if not fast.available():
        raise SystemExit("picochat's native core is not built; run `pip install -e .` with a C++ compiler")
    tok = Tokenizer.train(iter_docs(path), vocab_size, pattern)
    return tok, lambda text: len(tok.encode(text)), [list(m) for m in tok.merges]


def train_rustbpe(path: str, vocab_size: int, pattern: str):
    import rustbpe
    import tiktoken

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter_docs(path), vocab_size - SPECIALS, pattern=pattern)
    ranks = {bytes(b): r for b, r in tok.get_mergeable_ranks()}
    enc = tiktoken.Encoding("rustbpe", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    vocab = sorted(ranks, key=ranks.get)
    return tok, lambda text: len(enc.encode_ordinary(text)), [b.hex() for b in vocab]


def train_hf(path: str, vocab_size: int, pattern: str):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, min_frequency=0,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[f"<|special_{i}|>" for i in range(SPECIALS)])
    tok.train_from_iterator(iter_docs(path), trainer)
    return tok, lambda text: len(tok.encode(text, add_special_tokens=False).ids), None


CONTENDERS = {"picochat": train_picochat, "rustbpe": train_rustbpe, "hf-tokenizers": train_hf}


def worker(name: str, path: str, val: str, vocab_size: int, pattern: str, out: str) -> None:
    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), cpu()
    tok, count_tokens, vocab = CONTENDERS[name](path, vocab_size, pattern)
    seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before evaluation
    n_bytes = n_tokens = 0
    for doc in iter_docs(val):
        n_bytes += len(doc.encode("utf-8"))
        n_tokens += count_tokens(doc)
    if name == "picochat":
        tok.save(Path(out).with_suffix(".tokenizer.json"))
    Path(out).write_text(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss,
                                     "base_rss_mb": base_rss,
                                     "bytes_per_token": n_bytes / n_tokens, "vocab": vocab}))


# ---- the driver ---------------------------------------------------------------------------------


def run_worker(name: str, args: argparse.Namespace, tmp: str, round_: int) -> dict:
    out = os.path.join(tmp, f"{name}.{round_}.json")
    cmd = [sys.executable, __file__, "--worker", name, "--file", args.file, "--val", args.val,
           "--vocab-size", str(args.vocab_size), "--out", out]
    subprocess.run(cmd, check=True)
    return json.loads(Path(out).read_text())


def bench_encode(tok_path: Path, val: str, rounds: int = 9) -> tuple[float, float]:
    """MB/s of picochat's encode_batch and of raw tiktoken encode_ordinary_batch (same ranks)."""
    import tiktoken

    from picochat.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.load(tok_path)
    raw = tiktoken.Encoding("raw", pat_str=tok.pattern, mergeable_ranks=dict(tok.enc._mergeable_ranks),
                            special_tokens={})
    texts = [p for doc in iter_docs(val) for p in doc.split("\n\n") if p.strip()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    ours, theirs = [], []
    for _ in range(rounds):  # interleaved, best of `rounds`
        t0 = time.perf_counter()
        a = tok.encode_batch(texts, num_threads=2, prepend=tok.bos_id)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = raw.encode_ordinary_batch(texts, num_threads=2)
        theirs.append(time.perf_counter() - t0)
    assert [x[1:] for x in a] == b, "picochat's ids differ from tiktoken's"
    return mb / min(ours), mb / min(theirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mirror", default=os.environ.get("PICOCHAT_MIRROR", ""), help="data mirror directory")
    ap.add_argument("--file", default="", help="training text: .jsonl(.gz) with 'text', or plain text")
    ap.add_argument("--val", default="", help="held-out text (default: the mirror's gutenberg_val)")
    ap.add_argument("--vocab-size", type=int, default=32768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from picochat.tokenizer.bpe import SPLIT_PATTERN

    if args.worker:
        return worker(args.worker, args.file, args.val, args.vocab_size, SPLIT_PATTERN, args.out)
    pretrain = Path(args.mirror) / "pretrain"
    args.file = args.file or str(pretrain / "gutenberg_train.jsonl.gz")
    args.val = args.val or str(pretrain / "gutenberg_val.jsonl.gz")
    for p in (args.file, args.val):
        if not Path(p).exists():
            raise SystemExit(f"{p} not found: pass --mirror DIR (or set PICOCHAT_MIRROR) or --file/--val")
    mb = sum(len(d.encode()) for d in iter_docs(args.file)) / 1e6
    names = args.contenders.split(",")
    if set(names) - set(CONTENDERS):
        raise SystemExit(f"unknown contenders {sorted(set(names) - set(CONTENDERS))}; choose from {list(CONTENDERS)}")
    print(f"training text: {args.file} ({mb:.1f} MB), vocab {args.vocab_size}, {os.cpu_count()} CPUs, "
          f"{args.repeats} interleaved rounds")
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name in list(names):
                try:
                    res = run_worker(name, args, tmp, r)
                except subprocess.CalledProcessError:
                    print(f"  {name} failed (see its error above; is it installed?); leaving it out", flush=True)
                    names.remove(name)
                    del results[name]
                    continue
                results[name].append(res)
                print(f"  round {r}: {name:14s} {res['seconds']:7.2f} s (CPU {res['cpu_seconds']:6.2f} s)  "
                      f"peak RSS {res['peak_rss_mb']:6.0f} MB", flush=True)
        enc_ours, enc_tt = bench_encode(Path(tmp) / "picochat.0.tokenizer.json", args.val)
    summary = {n: {"seconds": statistics.median(x["seconds"] for x in rs),
                   "cpu_seconds": statistics.median(x["cpu_seconds"] for x in rs),
                   "peak_rss_mb": max(x["peak_rss_mb"] for x in rs),
                   "bytes_per_token": rs[0]["bytes_per_token"], "vocab": rs[0]["vocab"]}
               for n, rs in results.items()}
    print(f"\n{'trainer':14s} {'time (median)':>14s} {'CPU time':>10s} {'peak RSS':>10s} {'bytes/token':>12s}"
          "   ratios vs picochat")
    ref = summary.get("picochat")
    for n, s in summary.items():
        ratio = "" if not ref or n == "picochat" else (
            f"time x{s['seconds'] / ref['seconds']:.2f}, CPU x{s['cpu_seconds'] / ref['cpu_seconds']:.2f}, "
            f"memory x{s['peak_rss_mb'] / ref['peak_rss_mb']:.2f}, "
            f"compression {100 * (ref['bytes_per_token'] / s['bytes_per_token'] - 1):+.2f}%")
        print(f"{n:14s} {s['seconds']:12.2f} s {s['cpu_seconds']:8.2f} s {s['peak_rss_mb']:7.0f} MB "
              f"{s['bytes_per_token']:12.4f}   {ratio}")
    if ref and "rustbpe" in summary:
        from picochat.tokenizer.bpe import vocab_bytes

        same = [b.hex() for b in vocab_bytes([tuple(m) for m in ref["vocab"]])] == summary["rustbpe"]["vocab"]
        print(f"picochat's merges identical to rustbpe's: {same}")
    print(f"encode_batch: picochat {enc_ours:.1f} MB/s, tiktoken {enc_tt:.1f} MB/s, "
          f"ratio {enc_ours / enc_tt:.3f}")


if __name__ == "__main__":
    main()
