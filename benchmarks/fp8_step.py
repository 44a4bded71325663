"""FP8 training-step throughput: picochat in bf16 vs picochat with FP8 Linear layers (model/fp8.py,
tensorwise and rowwise), the same layers converted by torchao.float8 instead (when torchao is
installed: the maintained library the guide weighs ours against), and, given a nanochat checkout,
nanochat with its `--fp8` (tensorwise).

Every variant is the same model shape trained on the same random batches with its own optimizer;
timed rounds alternate between the variants so machine noise hits all alike. Prints tokens/s,
ms/step, MFU against the dense bf16 peak (how nanochat reports it too) and each variant's ratio
to picochat bf16, plus picochat fp8 over nanochat fp8 when both ran. Needs a CUDA GPU with FP8
(compute capability 8.9+); elsewhere it says so and exits.

    python benchmarks/fp8_step.py --depth 24 --batch 16 --compile [--nanochat DIR]
    python benchmarks/fp8_step.py --variants bf16,tensorwise --depth 12 --batch 32 --compile
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_step import make_step, nanochat_model, time_steps  # noqa: E402

from picochat.common.device import autocast_for, peak_flops, pick_device  # noqa: E402
from picochat.config import TrainConfig, get_preset  # noqa: E402
from picochat.model.fp8 import enable_fp8_training, fp8_unavailable_reason  # noqa: E402
from picochat.model.gpt import GPT, GPTConfig  # noqa: E402
from picochat.optim.groups import build_optimizers  # noqa: E402

PICOCHAT_VARIANTS = ("bf16", "tensorwise", "rowwise", "torchao-tensorwise", "torchao-rowwise")


def torchao_convert(model: GPT, recipe: str) -> None:
    """The blocks' Linear layers through torchao.float8 (head and embedding left alone, as ours)."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    def eligible(mod: torch.nn.Module, fqn: str) -> bool:  # the FP8 kernels' shape rule, as ours
        return mod.in_features % 16 == 0 and mod.out_features % 16 == 0

    convert_to_float8_training(model.blocks, config=Float8LinearConfig.from_recipe_name(recipe),
                               module_filter_fn=eligible)


def picochat_variant(cfg: GPTConfig, device: torch.device, variant: str, compile_: bool):
    """(step, flops per token) for picochat in bf16, with our fp8 Linears, or with torchao's."""
    model = GPT(cfg).to(device)
    if variant.startswith("torchao-"):
        torchao_convert(model, variant.removeprefix("torchao-"))
    elif variant != "bf16":
        enable_fp8_training(model, variant, device, bf16=True)  # before compile, as the trainer does
    opts = build_optimizers(model, TrainConfig(fused_adamw=True, compile_optim=compile_))
    return make_step(model, opts, autocast_for(device, "bf16"), compile_), model.flops_per_token()


def nanochat_fp8_variant(nanochat_dir: str, cfg: GPTConfig, device: torch.device, compile_: bool):
    """nanochat's model with its own fp8 conversion, filtered as its base_train.py filters (both
    sides multiples of 16 and at least 128), so it runs as `base_train.py --fp8` does."""
    model = nanochat_model(nanochat_dir, cfg, device)
    from nanochat.fp8 import Float8LinearConfig, convert_to_float8_training

    def eligible(mod: torch.nn.Module, fqn: str) -> bool:
        return (isinstance(mod, torch.nn.Linear) and mod.in_features % 16 == 0 and mod.out_features % 16 == 0
                and min(mod.in_features, mod.out_features) >= 128)

    convert_to_float8_training(model, config=Float8LinearConfig.from_recipe_name("tensorwise"),
                               module_filter_fn=eligible)
    return make_step(model, [model.setup_optimizer()], nullcontext(), compile_), model.estimate_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""), help="nanochat checkout (optional)")
    ap.add_argument("--variants", default="bf16,tensorwise,rowwise", help="picochat variants to time")
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = pick_device("auto")
    reason = fp8_unavailable_reason(device, bf16=True)
    if reason:
        sys.exit(f"no FP8 here: {reason}")
    unknown = set(args.variants.split(",")) - set(PICOCHAT_VARIANTS)
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(PICOCHAT_VARIANTS)}")
    torch.manual_seed(0)
    cfg = GPTConfig.from_depth(args.depth, head_dim=args.head_dim, vocab_size=args.vocab, seq_len=args.seq_len,
                               value_embeds=get_preset("d24").model.value_embeds)  # the GPU presets' model
    variants = {f"picochat {v}": picochat_variant(cfg, device, v, args.compile) for v in args.variants.split(",")}
    if args.nanochat:
        variants["nanochat fp8"] = nanochat_fp8_variant(args.nanochat, cfg, device, args.compile)
    batches = [(torch.randint(0, args.vocab, (args.batch, args.seq_len), device=device),) * 2
               for _ in range(args.steps)]
    mem: dict[str, list[int]] = {name: [] for name in variants}
    for name, (step, _) in variants.items():  # warm-up (and compile)
        time_steps(step, batches[:2], device, mem[name])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (step, _) in variants.items():
            times[name].append(time_steps(step, batches, device, mem[name]))
    tokens = args.steps * args.batch * args.seq_len
    tps = {name: tokens / statistics.median(t) for name, t in times.items()}
    print(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}; depth {cfg.n_layer}, width "
          f"{cfg.n_embd}, vocab {cfg.vocab_size}, seq {cfg.sequence_len}, batch {args.batch}, compile {args.compile}")
    peak = peak_flops(device)
    for name, (_, flops) in variants.items():
        mfu = f", MFU {100 * tps[name] * flops / peak:.1f}% of bf16 peak" if peak else ""
        print(f"{name:22s} {tps[name]:10.0f} tok/s, {1000 * statistics.median(times[name]) / args.steps:8.1f} ms/step"
              f"{mfu}, peak memory {max(mem[name]) / 2**30:.1f} GiB")
    if "picochat bf16" in tps:
        for name in tps:
            if name != "picochat bf16":
                print(f"ratio {name} / picochat bf16: {tps[name] / tps['picochat bf16']:.3f}x")
    if "nanochat fp8" in tps:
        for v in ("tensorwise", "rowwise"):
            if f"picochat {v}" in tps:
                print(f"ratio picochat {v} / nanochat fp8: {tps[f'picochat {v}'] / tps['nanochat fp8']:.3f}x")


if __name__ == "__main__":
    try:
        main()
    except torch.OutOfMemoryError:
        sys.exit("out of GPU memory: every variant is held at once; rerun with a smaller --batch or fewer --variants")
