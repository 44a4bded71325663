"""Training-step time of the architecture options against the recipe, side by side.

The quality ablations (quality_ablations.py) run their rows in parallel with one thread each, so
their wall times mean nothing. This measures what "at equal wall time" needs: one full training
step (forward, backward, Muon + AdamW) of the recipe's model and of each option's, at the quality
benchmark's shape (depth 4, width 256, 4 heads x 64, vocab 8192, 32 x 512 tokens), in interleaved
rounds in one process so that a change of machine load hits every variant alike. Prints the
median step time, the FLOPs per token and each variant's ratio to the recipe.

    python benchmarks/arch_step_time.py                 # the quality shape, 5 rounds
    python benchmarks/arch_step_time.py --rounds 2 --rows 4                        # quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from picochat.config import TrainConfig  # noqa: E402
from picochat.model.gpt import GPT, GPTConfig  # noqa: E402
from picochat.optim.groups import build_optimizers  # noqa: E402

VARIANTS = {
    "recipe": {},
    "value-embeddings": dict(value_embeds=True),
    "sliding-window": dict(window_pattern="SSSL", window_len=128),
    "residual-scalars": dict(residual_scalars=True),
    "smear": dict(smear=True),
    "backout": dict(backout=True),
    "nanochat-arch": dict(value_embeds=True, residual_scalars=True, smear=True, backout=True),
}


def one_step(model: GPT, opts: list, x: torch.Tensor) -> float:
    t = time.perf_counter()
    loss = model(x, x)
    loss.backward()
    for opt in opts:
        opt.step()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (one step per variant each)")
    ap.add_argument("--rows", type=int, default=32, help="sequences per step")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--only", default="", help="comma-separated variants (default: all): " + ", ".join(VARIANTS))
    ap.add_argument("--compile", action="store_true", help="torch.compile each model (as quality.py trains)")
    args = ap.parse_args()
    names = ["recipe", *[n.strip() for n in args.only.split(",") if n.strip() and n.strip() != "recipe"]]
    if len(names) == 1:
        names = list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    torch.manual_seed(0)
    x = torch.randint(0, 8192, (args.rows, args.seq_len))
    setups = {}
    for name in names:
        cfg = GPTConfig.from_depth(args.depth, head_dim=64, vocab_size=8192, seq_len=args.seq_len, **VARIANTS[name])
        model = GPT(cfg)
        opts = build_optimizers(model, TrainConfig(weight_decay=0.1))
        if args.compile:
            model = torch.compile(model)
        one_step(model, opts, x)  # warm-up: allocator, kernels (and compilation)
        one_step(model, opts, x)
        setups[name] = (model, opts, [])
    for _ in range(args.rounds):
        for model, opts, times in setups.values():
            times.append(one_step(model, opts, x))
    base = statistics.median(setups["recipe"][2])
    base_flops = setups["recipe"][0].flops_per_token()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, "
          f"{args.rows} x {args.seq_len} tokens per step, depth {args.depth}, "
          f"{'compiled' if args.compile else 'eager'}")
    print("| variant | params | FLOPs/token (vs recipe) | median step s | step time vs recipe |")
    print("|---|---|---|---|---|")
    for name, (model, _, times) in setups.items():
        med = statistics.median(times)
        print(f"| {name} | {model.num_params():,} | {model.flops_per_token():.4g} "
              f"({model.flops_per_token() / base_flops:.3f}) | {med:.3f} | {med / base:.3f}x |")


if __name__ == "__main__":
    main()
