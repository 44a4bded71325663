"""`picochat tokenizer train` and `picochat tokenizer eval`.

train: read documents of `--source` or of `--data PATH` (the user's own files, see
data/user_corpus.py; split "train"), keep the first `--doc-cap` characters of
each and stop after `--max-chars` in total, learn `--vocab-size` ids (special tokens included),
and write `$PICOCHAT_HOME/runs/<run>/tokenizer/tokenizer.json` with `config.json` beside it.
A complete tokenizer trained with the same settings is kept (use --force to retrain).

eval: bytes per token (higher = better compression) on the held-out split of `--source` (or of
`--data`), for
the run's tokenizer and any other tokenizer files given, side by side.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from picochat.common.errors import UserError
from picochat.common.io import atomic_write_json
from picochat.common.log import banner, duration, human, print0
from picochat.common.paths import stage_dir
from picochat.tokenizer.tokenizer import Tokenizer

PROGRESS_EVERY_S = 5.0


def capped(docs: Iterable[str], doc_cap: int, max_chars: int, log=print0) -> Iterator[str]:
    """The first doc_cap chars of each document, until max_chars in total; logs progress."""
    total = n_docs = 0
    t0 = last = time.time()
    for doc in docs:
        if total >= max_chars:
            break
        doc = doc[: min(doc_cap, max_chars - total)] if doc_cap > 0 else doc[: max_chars - total]
        if not doc:
            continue
        total += len(doc)
        n_docs += 1
        yield doc
        if time.time() - last >= PROGRESS_EVERY_S:
            last = time.time()
            log(f"  read {human(total)} chars from {human(n_docs)} documents "
                f"({100 * total / max_chars:.1f}% of max_chars, {human(total / (last - t0))} chars/s)")
    log(f"  read {human(total)} chars from {human(n_docs)} documents in {duration(time.time() - t0)}; "
        "learning merges...")


def _settings(cfg) -> dict:
    from picochat.data.user_corpus import absolute_spec

    t = cfg.tokenizer
    settings = {"vocab_size": t.vocab_size, "max_chars": t.max_chars, "doc_cap": t.doc_cap, "source": t.source}
    if t.data:  # --data replaces the source; recorded as an absolute path (keys absent otherwise, so
        # tokenizers trained before --data existed still match their settings)
        settings.update(source="data", data=absolute_spec(t.data), text_field=t.text_field)
    return settings


def _documents(cfg, split: str) -> Iterator[str]:
    """The documents of one split of what the tokenizer is configured to read (--data or --source)."""
    from picochat.data.user_corpus import iter_text

    t = cfg.tokenizer
    return iter_text(t.source, split, data=t.data, text_field=t.text_field, val_data=t.val_data,
                     home=cfg.run.home, mirror=cfg.run.mirror)


def _what(cfg) -> str:
    return f"--data {cfg.tokenizer.data}" if cfg.tokenizer.data else f"source '{cfg.tokenizer.source}'"


def train_main(cfg) -> int:
    from picochat.tokenizer import fast

    out = stage_dir(cfg.run.run, "tokenizer", cfg.run.home)
    path, meta_path = out / "tokenizer.json", out / "config.json"
    settings = _settings(cfg)
    if path.exists() and meta_path.exists() and not cfg.args.force:
        import json

        done = json.loads(meta_path.read_text()).get("tokenizer")
        if done == settings:
            Tokenizer.load(path)  # a corrupt file is an error, not "complete"
            print0(f"tokenizer already trained at {path} (same settings); use --force to retrain")
            return 0
        raise UserError(f"{path} was trained with different settings ({done}); pass --force to retrain "
                        "it (later stages of this run would then need retraining too)")
    docs = _documents(cfg, "train")  # opens (and checks) the text before anything is printed
    banner(f"tokenizer train: run '{cfg.run.run}', vocab {settings['vocab_size']}, {_what(cfg)}")
    if not fast.available():
        print0("  note: native BPE core not built; the pure-Python trainer is much slower")
    t0 = time.time()
    tok = Tokenizer.train(capped(docs, cfg.tokenizer.doc_cap, cfg.tokenizer.max_chars), cfg.tokenizer.vocab_size)
    seconds = time.time() - t0
    if tok.vocab_size < cfg.tokenizer.vocab_size:
        print0(f"  note: the text ran out of pairs to merge; vocab is {tok.vocab_size}, not "
               f"{cfg.tokenizer.vocab_size} (use more text or a smaller --vocab-size)")
    tok.save(path)
    atomic_write_json(meta_path, {"tokenizer": settings, "run": cfg.run.run, "train_seconds": round(seconds, 2),
                                  "vocab_size": tok.vocab_size, "merges": len(tok.merges)})
    print0(f"trained {len(tok.merges)} merges (vocab {tok.vocab_size}) in {duration(seconds)}; wrote {path}")
    return 0


def bytes_per_token(tok: Tokenizer, texts: list[str]) -> tuple[int, int]:
    """(UTF-8 bytes, tokens) of the texts under this tokenizer."""
    n_tokens = sum(len(ids) for ids in tok.encode_batch(texts))
    return sum(len(t.encode("utf-8", "surrogatepass")) for t in texts), n_tokens


def eval_main(cfg) -> int:
    own = stage_dir(cfg.run.run, "tokenizer", cfg.run.home) / "tokenizer.json"
    paths = ([own] if own.exists() else []) + [Path(p) for p in cfg.args.files]
    if not paths:
        raise UserError(f"run '{cfg.run.run}' has no tokenizer at {own} and no tokenizer files were given; "
                        "run `picochat tokenizer train` first or pass tokenizer.json paths")
    tokenizers = [(str(p), Tokenizer.load(p)) for p in paths]
    texts = list(capped(_documents(cfg, "val"), cfg.tokenizer.doc_cap, cfg.args.chars, log=lambda *a: None))
    if not texts:
        raise UserError(f"{_what(cfg)} has no held-out text")
    banner(f"tokenizer eval: {human(sum(map(len, texts)))} held-out chars of {_what(cfg)}")
    print0(f"{'tokenizer':60s} {'vocab':>7s} {'tokens':>10s} {'bytes/token':>12s}")
    first = None
    for name, tok in tokenizers:
        n_bytes, n_tokens = bytes_per_token(tok, texts)
        ratio = n_bytes / max(1, n_tokens)
        first = first or ratio
        rel = "" if ratio == first else f"  ({100 * (ratio / first - 1):+.2f}% vs first)"
        print0(f"{name[-60:]:60s} {tok.vocab_size:7d} {n_tokens:10d} {ratio:12.4f}{rel}")
    return 0
