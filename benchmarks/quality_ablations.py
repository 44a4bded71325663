"""Ablation rows for the pretraining-quality benchmark: picochat's base stage with one idea
switched off (or one alternative switched on), each at the same token budget as quality.py.

Every row is `benchmarks/quality.py --skip-anchor` with extra `picochat train base` flags, scored
by the same common evaluator; the first row is the unchanged recipe, so every other row reads as a
difference from it measured under the same conditions. `--jobs 2` runs two rows at a time with
one torch thread each (bpb does not depend on the thread count beyond float rounding; wall times
then mean nothing, and none are reported).

    python benchmarks/quality_ablations.py --mirror ../shared/data --anchor-bpb 2.10 --jobs 2
    python benchmarks/quality_ablations.py --mirror ../shared/data --only softcap,warmdown --steps 16  # quick

Out of domain (issue #26): each finished row's model is also scored, by the same evaluator, on
two held-out texts of other kinds from the mirror: WikiText-2's test articles (encyclopedic prose;
Merity et al. 2016, arXiv:1609.07843; its " @-@ "-style number splits undone) and Tiny Shakespeare
(verse dialogue; Karpathy's char-rnn corpus), each cut into documents of at most 1,000 characters
and capped at --ood-chars characters, every document scored alone from BOS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OOD_SETS = ("wikitext2", "shakespeare")

# name -> (what it tests, extra flags for `picochat train base`)
ABLATIONS: dict[str, tuple[str, list[str]]] = {
    "recipe": ("picochat's recipe as it is", []),
    "softcap": ("no logit soft-cap (c = 15 -> off)", ["--softcap=0"]),
    "warmdown": ("no warmdown: constant learning rate to the end (WSD's decay off)", ["--warmdown-frac=0"]),
    "grad-clip": ("no gradient-norm clipping (1.0 -> off)", ["--grad-clip=0"]),
    "nanochat-lrs": ("nanochat's schedule and AdamW rates: warmdown 0.65 to 5%, embedding 0.3, head 0.008",
                     ["--warmdown-frac=0.65", "--final-lr-frac=0.05", "--embedding-lr=0.3",
                      "--unembedding-lr=0.008"]),
    # weight decay 0.1 joined the recipe after these rows (run then as --weight-decay=0.1) showed a gain
    "weight-decay": ("no weight decay on the Muon matrices (0.1 -> 0)", ["--weight-decay=0"]),
    # run-to-run noise: the same recipe from another initialisation (the data order does not change)
    "seed": ("the recipe with another random seed (1, not 1337): what the seed alone moves", ["--seed=1"]),
    "weight-decay-seed": ("no weight decay, seed 1: does the difference outlast a change of seed?",
                          ["--weight-decay=0", "--seed=1"]),
    # nanochat's base_train scales every learning rate by sqrt(B / 524288): 0.177 at 16,384 tokens/step
    "batch-lr-scaling": ("nanochat's batch-size rule: every learning rate x sqrt(16384/524288) = 0.177",
                         ["--matrix-lr=0.003536", "--embedding-lr=0.03536", "--unembedding-lr=0.000707"]),
    "long-warmup": ("nanochat's 40-step warmup (31% of the 128 steps; none in the recipe)", ["--warmup-frac=0.3125"]),
    # issue #23: the two architecture options nanochat has (model/gpt.py); off in the recipe
    "value-embeddings": ("value embeddings, gated per head, on every other layer (ResFormer)", ["--value-embeds"]),
    "sliding-window": ("sliding-window attention SSSL: 3 of 4 layers see the last 128 of 512 tokens",
                       ["--window-pattern=SSSL", "--window-len=128"]),
    "value-embeddings-seed": ("value embeddings, seed 1 (read against the seed row)", ["--value-embeds", "--seed=1"]),
    "sliding-window-seed": ("sliding window SSSL/128, seed 1 (read against the seed row)",
                            ["--window-pattern=SSSL", "--window-len=128", "--seed=1"]),
}


def run_row(name: str, flags: list[str], args, work: Path) -> dict:
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    if (out / "result.json").exists():  # a rerun with the same --work keeps finished rows
        result = json.loads((out / "result.json").read_text())["picochat"]
        print(f"[{name}] already done: final val bpb {result['final_bpb']:.4f}", flush=True)
        return result
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--skip-anchor", "--mirror", args.mirror,
           "--steps", str(args.steps), "--work", str(out), "--png", str(out / "curve.png"),
           "--json", str(out / "result.json"), *(f"--picochat-arg={f}" for f in flags)]
    if args.anchor_bpb is not None:
        cmd += ["--anchor-bpb", str(args.anchor_bpb)]
    if args.val_docs:  # a smaller budget for a loaded machine: score fewer validation documents
        cmd += ["--val-docs", str(args.val_docs)]
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if args.jobs > 1 else {})}
    print(f"[{name}] $ {' '.join(cmd)}", flush=True)
    # Output to a file, not a pipe: a row outlives this driver if it is stopped (and can be rerun).
    with open(out / "log.txt", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        print(f"[{name}] failed ({proc.returncode}); see {out / 'log.txt'}", flush=True)
        return {}
    result = json.loads((out / "result.json").read_text())["picochat"]
    print(f"[{name}] final val bpb {result['final_bpb']:.4f}", flush=True)
    return result


def passages(paragraphs: list[str], max_chars: int = 1000) -> list[str]:
    """Consecutive paragraphs joined into documents of at most max_chars (a longer one is cut)."""
    docs, cur = [], ""
    for para in (p.strip()[:max_chars] for p in paragraphs if p.strip()):
        if cur and len(cur) + 2 + len(para) > max_chars:
            docs.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
    return docs + ([cur] if cur else [])


def ood_documents(mirror: str, name: str, max_chars: int) -> list[str]:
    if name == "wikitext2":
        raw = (Path(mirror) / "wikitext2" / "wiki.test.tokens").read_text(encoding="utf-8")
        for split, joined in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")):
            raw = raw.replace(split, joined)
        paras = [line for line in raw.splitlines() if line.strip() and not line.strip().startswith("=")]
    else:
        raw = (Path(mirror) / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
        paras = raw.split("\n\n")
    docs, total = [], 0
    for doc in passages(paras):
        if total + len(doc) > max_chars:
            break
        docs.append(doc)
        total += len(doc)
    return docs


def score_out_of_domain(name: str, args, work: Path) -> dict:
    """bpb of the row's final model on each out-of-domain set (cached in the row's ood.json)."""
    from picochat.eval.bpb import bits_per_byte
    from picochat.model import artifact
    from picochat.run_layout import load_tokenizer

    out = work / name / "ood.json"
    if out.exists():
        return json.loads(out.read_text())
    home = work / name / "picochat_home"
    stage = home / "runs" / "quality" / "base"
    if not stage.exists():
        return {}
    model, meta = artifact.load_model(stage, "cpu")
    model = model.float().eval()
    tokenizer = load_tokenizer("quality", str(home))
    scores = {s: bits_per_byte(model, tokenizer, ood_documents(args.mirror, s, args.ood_chars),
                               seq_len=model.config.sequence_len, batch_size=8) for s in OOD_SETS}
    out.write_text(json.dumps(scores))
    print(f"[{name}] out of domain: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", default=os.environ.get("PICOCHAT_MIRROR", ""), help="dataset mirror (../shared/data)")
    ap.add_argument("--anchor-bpb", type=float, default=None, help="nanochat's final val bpb, for the last column")
    ap.add_argument("--steps", type=int, default=128, help="optimizer steps per row (quality.py's budget)")
    ap.add_argument("--only", default="", help="comma-separated rows (default: all): " + ", ".join(ABLATIONS))
    ap.add_argument("--jobs", type=int, default=1, help="rows run at a time (each with one thread if > 1)")
    ap.add_argument("--work", default="", help="working directory (default: a fresh temporary one); "
                    "rerunning with the same one skips scored rows, only scores rows whose model finished, "
                    "and retrains the rest")
    ap.add_argument("--val-docs", type=int, default=0, help="in-domain validation documents scored (0 = all)")
    ap.add_argument("--ood-chars", type=int, default=300_000,
                    help="characters of each out-of-domain set scored (0 = skip out-of-domain scoring)")
    args = ap.parse_args()
    if not args.mirror:
        sys.exit("give --mirror DIR (the dataset mirror, e.g. ../shared/data) or set PICOCHAT_MIRROR")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ABLATIONS)
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        sys.exit(f"unknown ablation {', '.join(unknown)}; choose from {', '.join(ABLATIONS)}")
    if "recipe" not in names:
        names.insert(0, "recipe")  # every row is read against the recipe measured the same way
    args.mirror = str(Path(args.mirror).resolve())
    work = Path(args.work or tempfile.mkdtemp(prefix="picochat_ablations_")).resolve()
    print(f"working directory: {work}")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(names, pool.map(lambda n: run_row(n, ABLATIONS[n][1], args, work), names)))
    ood = {n: score_out_of_domain(n, args, work) for n in names} if args.ood_chars else {}
    base = results["recipe"].get("final_bpb")
    ood_cols = "".join(f" {s} bpb (vs recipe) |" for s in OOD_SETS) if ood else ""
    print(f"\n| row | change | flags | final val bpb | vs recipe |{' vs nanochat |' if args.anchor_bpb else ''}"
          f"{ood_cols}")
    print(f"|---|---|---|---|---|{'---|' if args.anchor_bpb else ''}{'---|' * len(OOD_SETS) if ood else ''}")
    for name in names:
        what, flags = ABLATIONS[name]
        bpb = results[name].get("final_bpb")
        cells = [name, what, " ".join(f"`{f}`" for f in flags) or "-",
                 f"{bpb:.4f}" if bpb else "failed", f"{bpb - base:+.4f}" if bpb and base else "-"]
        if args.anchor_bpb:
            cells.append(f"{bpb - args.anchor_bpb:+.4f}" if bpb else "-")
        for s in OOD_SETS if ood else ():
            v, b = ood[name].get(s), ood["recipe"].get(s)
            cells.append(f"{v:.4f} ({v - b:+.4f})" if v and b else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
