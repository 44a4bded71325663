"""Where out-of-domain loss comes from: bits per byte split by how often the target token was seen.

For a finished `benchmarks/quality.py` run (its --work directory), each side's final model scores
every held-out set (benchmarks/domains.py) token by token, and each target token's loss is put in a
bucket by how many times that token id occurred in the training tokens the run consumed (its own
tokenizer over the training documents in loader order, up to --train-tokens). A model that
learned the language but pushed the logits of tokens it rarely saw far down pays for it exactly
in the low-count buckets of text from another domain; one that fits the domain's common patterns
too tightly pays in the high-count buckets. The table gives, per bucket, the share of target
tokens, the mean loss in bits per token and the bucket's contribution to the set's bits per byte
(the contributions sum to the set's bpb).

    python benchmarks/ood_diagnosis.py --work /tmp/q26/main --mirror ../shared/data --nanochat ../nanochat
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import domains  # noqa: E402
from picochat.data.corpus import iter_documents  # noqa: E402
from picochat.eval.bpb import windows  # noqa: E402

BUCKETS = ((0, 0), (1, 9), (10, 99), (100, 999), (1000, 9999), (10000, None))


def bucket_label(lo: int, hi: int | None) -> str:
    return f"{lo}" if lo == hi else f">= {lo:,}" if hi is None else f"{lo:,}-{hi:,}"


def train_counts(tokenizer, mirror: str, train_tokens: int, vocab: int) -> torch.Tensor:
    """How often each token id occurs in the first `train_tokens` tokens of the training documents."""
    counts = torch.zeros(vocab, dtype=torch.long)
    seen = 0
    for doc in iter_documents("gutenberg", "train", mirror=mirror):
        ids = tokenizer.encode(doc, prepend=tokenizer.bos_id)
        counts += torch.bincount(torch.tensor(ids), minlength=vocab)[:vocab]
        seen += len(ids)
        if seen >= train_tokens:
            break
    return counts


@torch.no_grad()
def token_losses(model, tokenizer, docs: list[str], seq_len: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(target ids, their losses in nats, total UTF-8 bytes), each document alone from BOS."""
    targets, losses = [], []
    for doc in docs:
        ids = tokenizer.encode(doc, prepend=tokenizer.bos_id)
        for x, y in windows(ids, seq_len):
            logits = model(torch.tensor([x])).float()[0]
            losses.append(F.cross_entropy(logits, torch.tensor(y), reduction="none"))
            targets.append(torch.tensor(y))
    return torch.cat(targets), torch.cat(losses), sum(len(d.encode("utf-8")) for d in docs)


def side_table(name: str, model, tokenizer, counts: torch.Tensor, sets: dict[str, list[str]], seq_len: int) -> str:
    lines = [f"**{name}**", "", "| set | bpb | " + " | ".join(
        f"seen {bucket_label(lo, hi)}: tokens / bits per token / bpb" for lo, hi in BUCKETS) + " |",
        "|---|---|" + "---|" * len(BUCKETS)]
    for set_name, docs in sets.items():
        ids, nats, num_bytes = token_losses(model, tokenizer, docs, seq_len)
        seen = counts[ids]
        cells = []
        for lo, hi in BUCKETS:
            mask = (seen >= lo) & (seen <= (hi if hi is not None else seen.max()))
            n = int(mask.sum())
            bits = nats[mask].sum().item() / math.log(2)
            cells.append(f"{n / len(ids):.1%} / {bits / n:.2f} / {bits / num_bytes:.3f}" if n else "0% / - / 0")
        total = nats.sum().item() / math.log(2) / num_bytes
        lines.append(f"| {set_name} | {total:.4f} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="a finished quality.py run's --work directory")
    ap.add_argument("--mirror", default=os.environ.get("PICOCHAT_MIRROR", ""), help="dataset mirror")
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""), help="nanochat checkout (its side)")
    ap.add_argument("--train-tokens", type=int, default=128 * 16384, help="training tokens the run consumed")
    ap.add_argument("--ood-chars", type=int, default=100_000, help="characters of each set scored")
    ap.add_argument("--val-docs", type=int, default=300, help="in-domain validation documents scored")
    ap.add_argument("--seq-len", type=int, default=512)
    args = ap.parse_args()
    if not args.mirror:
        sys.exit("give --mirror DIR (the dataset mirror, e.g. ../shared/data) or set PICOCHAT_MIRROR")
    work = Path(args.work)
    val = [d for _, d in zip(range(args.val_docs), iter_documents("gutenberg", "val", mirror=args.mirror))]
    sets = {"gutenberg": val, **{n: domains.documents(args.mirror, n, args.ood_chars) for n in domains.OUT_OF_DOMAIN}}
    from picochat.model import artifact
    from picochat.run_layout import load_tokenizer

    home = work / "picochat_home"
    model, _ = artifact.load_model(home / "runs" / "quality" / "base", "cpu")
    tok = load_tokenizer("quality", str(home))
    counts = train_counts(tok, args.mirror, args.train_tokens, model.config.vocab_size)
    tables = [side_table("picochat", model.float(), tok, counts, sets, args.seq_len)]
    if args.nanochat and (work / "nanochat_base").is_dir():
        os.environ["NANOCHAT_BASE_DIR"] = str(work / "nanochat_base")
        os.environ["NANOCHAT_DTYPE"] = "float32"
        sys.path.insert(0, str(Path(args.nanochat).resolve()))
        from nanochat.checkpoint_manager import load_model

        from benchmarks.quality import NanochatTokenizerAdapter

        nmodel, ntok, _ = load_model("base", torch.device("cpu"), phase="eval", model_tag="quality")
        adapter = NanochatTokenizerAdapter(ntok)
        ncounts = train_counts(adapter, args.mirror, args.train_tokens, ntok.get_vocab_size())
        tables.append(side_table("nanochat", nmodel, adapter, ncounts, sets, args.seq_len))
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
