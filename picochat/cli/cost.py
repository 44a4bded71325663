"""The cost model behind `picochat speedrun --dry-run`: tokens, FLOPs, time and dollars per step.

Every step of the speedrun is costed, not only pretraining (the sizes come from picochat/cli/plan.py):
  - training stages (base, mid, SFT, RL's update): tokens x training FLOPs/token (6 per matmul weight
    plus attention, `GPT.flops_per_token`);
  - forward-only work (evals that score text, RL's prompt prefill and reference model): 1/3 of that;
  - generation (RL rollouts, generative chat evals): decoded tokens x forward FLOPs/token, at
    DECODE_EFFICIENCY of the training rate of FLOP/s, because batched decoding is bound by memory
    and kernel launches rather than arithmetic. That factor is an assumption, and said so.
time = FLOPs / (FLOP/s per device x devices). The FLOP/s is *measured* when we can: a few real
training steps of the preset's model on this machine's device (the same forward, backward and
optimizer step the trainer runs). When that is impractical (a GPU preset planned from a CPU) it
falls back to the GPU's peak bf16 rate times an assumed MFU, and says so.
"""

from __future__ import annotations

import time

import torch

from picochat.cli.plan import StepWork, plan_work
from picochat.common.device import PEAK_BF16_FLOPS, pick_device, synchronize
from picochat.common.log import duration, human, print0
from picochat.config import get_preset
from picochat.model.gpt import GPT, GPTConfig
from picochat.optim.groups import build_optimizers
from picochat.train.trainer import Batch, train_step

MEASURE_BUDGET_FLOPS = 2e11  # measure on this device only if one step costs less than this
DECODE_EFFICIENCY = 0.1      # assumed: decoding reaches 1/10 of the training FLOP/s


def measure_flops_per_second(cfg: GPTConfig, device: torch.device, rows: int, steps: int = 3) -> float:
    """Run real training steps (forward, backward, Muon + AdamW) and return achieved FLOP/s."""
    model = GPT(cfg).to(device)
    opts = build_optimizers(model, get_preset("demo").stages["base"])
    x = torch.randint(0, cfg.vocab_size, (rows, cfg.sequence_len), device=device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        device.type, enabled=False)
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels
        synchronize(device)
        t = time.perf_counter()
        train_step(model, model, opts, [Batch(x, x)], 1, autocast=ctx)
        synchronize(device)
        times.append(time.perf_counter() - t)
    return rows * cfg.sequence_len * model.flops_per_token() / min(times[1:])


def throughput(cfg: GPTConfig, fpt: float, device: torch.device, rows: int, mfu: float) -> tuple[float, str]:
    """(FLOP/s per device, how it was obtained)."""
    if rows * cfg.sequence_len * fpt <= MEASURE_BUDGET_FLOPS or device.type == "cuda":
        return measure_flops_per_second(cfg, device, rows), f"measured on {device}"
    return PEAK_BF16_FLOPS["H100"] * mfu, f"assumed: H100 bf16 peak x {mfu:.0%} MFU (run --dry-run on the GPU)"


def step_seconds(work: StepWork, fpt: float, flops_s: float, devices: int) -> float:
    forward = fpt / 3  # forward only: 2 of the 6 FLOPs per weight
    flops = work.train_tokens * fpt + work.forward_tokens * forward
    return (flops + work.decode_tokens * forward / DECODE_EFFICIENCY) / (flops_s * (devices if work.spread else 1))


def _work_line(work: StepWork, secs: float, dollars: float | None) -> str:
    parts = [f"{human(t)} {what}" for t, what in ((work.train_tokens, "trained"), (work.forward_tokens, "scored"),
                                                 (work.decode_tokens, "generated")) if t]
    cost = f" ${dollars:8.2f}" if dollars is not None else ""
    return f"  {work.name:13s} {', '.join(parts) or 'no model work':40s} ~{duration(secs):>8s}{cost}  {work.detail}"


def print_plan(cfg, skip: set[str] = frozenset()) -> None:
    """The dry-run: the model, the horizon, and every step's tokens, time and cost."""
    preset = get_preset(cfg.run.preset)
    device = pick_device(cfg.run.device)
    gpus, price = cfg.args.gpus, cfg.args.gpu_hour_price
    plan = plan_work(preset, cfg.run, gpus, skip)
    mcfg, h = plan.model_config, plan.horizon
    flops_s, how = throughput(mcfg, h.flops_per_token, device, min(preset.stages["base"].device_batch_size, 4),
                              cfg.args.mfu)
    print0(f"plan for preset '{preset.name}' (run '{cfg.run.run}'): depth {mcfg.n_layer}, width {mcfg.n_embd}, "
           f"{human(plan.num_params)} params ({human(h.scaling_params)} scaling params), "
           f"{human(h.flops_per_token)} FLOPs/token")
    print0(f"base horizon: {h.describe()}" + (f"; learning rates x{h.lr_scale:.3f}" if h.batch_auto else ""))
    print0(f"throughput: {human(flops_s)}FLOP/s per device ({how}); devices: {gpus}; generation at "
           f"{DECODE_EFFICIENCY:.0%} of that (assumed)")
    priced = device.type == "cuda" or "assumed" in how  # dollars only mean something for rented GPUs
    total_s = 0.0
    for work in plan.steps:
        secs = step_seconds(work, h.flops_per_token, flops_s, gpus)
        total_s += secs
        # the whole node is rented while a single-process step runs, so every step bills all GPUs
        print0(_work_line(work, secs, secs / 3600 * gpus * price if priced else None))
    line = f"estimated time ~{duration(total_s)} for every step"
    if priced:
        line += f"; cost ~${total_s / 3600 * gpus * price:.2f} on {gpus} GPU(s) at ${price:.2f}/GPU-hour"
    print0(line)
    if preset.stages["base"].fp8:
        print0("note: base trains in FP8 where the GPU has it; the rate above is bf16's, so base may finish sooner")
    for note in plan.notes:
        print0(f"note: {note}")
