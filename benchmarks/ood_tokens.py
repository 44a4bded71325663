"""Where a held-out set's bits go: bpb split into target tokens the training text never contains
and all the others (issue #26).

A tokenizer's vocabulary holds every byte, so a held-out set can ask for a token that never once
occurred in the training text; picochat's Gutenberg passages, for one, have every line break
inside a paragraph undone (picochat/data/corpus.py), so a single newline never occurs there,
while dialogue, verse and code are full of them. Such a token's output row only ever gets pushed
down (its target is never right), and how far it gets pushed is the optimizer's doing, not
anything the model learned about language. This script scores each final model by the common
evaluator's windows (`picochat.eval.bpb.window_losses`) and splits each set's bits per byte into
the part spent on never-seen tokens and the rest (the two add up to the set's bpb: both divide by
all of the set's bytes), with the never-seen tokens' count and mean nats.

"Never seen" is per side: the token ids its own tokenizer never produces on the training split
(the first --train-chars characters of it; 0 = all). Runs are quality.py work directories:

    python benchmarks/ood_tokens.py --mirror ../shared/data --picochat /tmp/q26/all/recipe@2 \\
        --nanochat ../nanochat --nanochat-work /tmp/q26/nano/seed2 [--sets ood,confirm]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import domains  # noqa: E402
from picochat.data.corpus import iter_documents  # noqa: E402
from picochat.eval.bpb import window_losses  # noqa: E402

RUN = "quality"  # the run name quality.py trains picochat's side under


def seen_tokens(encode, mirror: str, train_chars: int) -> set[int]:
    """Every token id the tokenizer produces on the training split (its first train_chars characters)."""
    seen: set[int] = set()
    total = 0
    for doc in iter_documents("gutenberg", "train", mirror=mirror):
        seen.update(encode(doc))
        total += len(doc)
        if train_chars and total >= train_chars:
            break
    return seen


def split_bpb(model, tokenizer, docs: list[str], seen: set[int], decode, seq_len: int) -> dict:
    """The set's bpb, the part of it on never-seen targets, their count and mean nats, the commonest ones."""
    nats_all = nats_unseen = 0.0
    unseen = Counter()
    for _, targets, nll in window_losses(model, tokenizer, docs, seq_len=seq_len):
        for t, v in zip(targets, nll):
            nats_all += v
            if t not in seen:
                nats_unseen += v
                unseen[t] += 1
    per_bit = 1 / (math.log(2) * sum(len(d.encode("utf-8")) for d in docs))
    n = sum(unseen.values())
    return dict(bpb=nats_all * per_bit, unseen_bpb=nats_unseen * per_bit, rest_bpb=(nats_all - nats_unseen) * per_bit,
                unseen_n=n, unseen_nats=nats_unseen / n if n else float("nan"),
                commonest=", ".join(f"{decode(t)!r} x{c}" for t, c in unseen.most_common(3)))


def load_picochat(work: Path):
    from picochat.model import artifact
    from picochat.run_layout import load_tokenizer

    home = work / "picochat_home"
    stage = home / "runs" / RUN / "base"
    if not artifact.is_complete(stage):
        raise SystemExit(f"{work}: no finished picochat base model in {stage}; give a quality.py --work directory "
                         "whose picochat side has trained")
    model, _ = artifact.load_model(stage, "cpu")
    tok = load_tokenizer(RUN, str(home))
    return model, tok, (lambda d: tok.encode(d)), (lambda t: tok.decode([t]))


def load_nanochat(checkout: str, work: Path):
    base = work / "nanochat_base"
    if not (base / "base_checkpoints" / RUN).is_dir():
        raise SystemExit(f"{work}: no nanochat base checkpoints in {base}; give a quality.py --work directory "
                         "whose nanochat side has trained")
    from benchmarks.quality import NanochatTokenizerAdapter, load_nanochat_model

    model, tok, _ = load_nanochat_model(checkout, base)
    return model, NanochatTokenizerAdapter(tok), (lambda d: tok.encode(d)), (lambda t: tok.decode([t]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mirror", required=True, help="the dataset mirror (../shared/data)")
    ap.add_argument("--picochat", action="append", default=[], metavar="WORK",
                    help="a quality.py --work directory with picochat's side trained (repeatable)")
    ap.add_argument("--nanochat", default="", help="nanochat checkout, to load --nanochat-work's model")
    ap.add_argument("--nanochat-work", action="append", default=[], metavar="WORK",
                    help="a quality.py --work directory with nanochat's side trained (repeatable)")
    ap.add_argument("--ood-chars", type=int, default=200_000, help="characters of each held-out set (as quality.py)")
    ap.add_argument("--train-chars", type=int, default=0, help="characters of the training split to count tokens "
                                                                "over (0 = all of it)")
    ap.add_argument("--sets", default="ood", help="held-out sets, comma-separated: names from benchmarks/domains.py, "
                                                 "'ood' for quality.py's five, 'confirm' for the three it skips")
    ap.add_argument("--seq-len", type=int, default=512)
    args = ap.parse_args(argv)
    if args.nanochat_work and not args.nanochat:
        ap.error("--nanochat-work needs --nanochat DIR (a karpathy/nanochat checkout)")
    if not args.picochat and not args.nanochat_work:
        ap.error("give at least one --picochat or --nanochat-work directory")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    groups = {"ood": domains.OUT_OF_DOMAIN, "confirm": domains.CONFIRMATION}
    names = [n for item in args.sets.split(",") if item for n in groups.get(item, (item,))]
    unknown = [n for n in names if n not in domains.SOURCES]
    if unknown or not names:
        ap.error(f"unknown held-out set {', '.join(unknown) or '(none)'}; choose from ood, confirm, "
                 f"{', '.join(domains.SOURCES)}")
    sets = {name: domains.documents(args.mirror, name, args.ood_chars) for name in names}
    runs = [(f"picochat {Path(w).name}", lambda w=w: load_picochat(Path(w))) for w in args.picochat]
    runs += [(f"nanochat {Path(w).name}", lambda w=w: load_nanochat(args.nanochat, Path(w)))
             for w in args.nanochat_work]
    print("| held-out set | model | bpb | never-seen targets | nats each | their bpb | the rest's bpb | commonest |")
    print("|---|---|---|---|---|---|---|---|")
    for label, load in runs:
        model, tok, encode, decode = load()
        model.float().eval()
        seen = seen_tokens(encode, args.mirror, args.train_chars)
        with torch.no_grad():
            for name, docs in sets.items():
                r = split_bpb(model, tok, docs, seen, decode, args.seq_len)
                print(f"| {name} | {label} | {r['bpb']:.4f} | {r['unseen_n']} | {r['unseen_nats']:.2f} | "
                      f"{r['unseen_bpb']:.4f} | {r['rest_bpb']:.4f} | {r['commonest']} |", flush=True)


if __name__ == "__main__":
    main()
