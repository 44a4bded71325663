"""The cost model behind `picochat speedrun --dry-run`: tokens, time and dollars per stage.

time = tokens x FLOPs/token / (throughput in FLOP/s). The throughput is *measured* when we can:
a few real training steps of the preset's model on this machine's device (the same forward,
backward and optimizer step the trainer runs). When that is impractical (a GPU preset planned
from a CPU) it falls back to the GPU's peak bf16 rate times an assumed MFU, and says so.
"""

from __future__ import annotations

import time

import torch

from picochat.common.device import pick_device, synchronize
from picochat.common.log import duration, human, print0
from picochat.config import get_preset
from picochat.model.gpt import GPT, GPTConfig
from picochat.optim.groups import build_optimizers
from picochat.train.trainer import PEAK_BF16_FLOPS

MEASURE_BUDGET_FLOPS = 2e11  # measure on this device only if one step costs less than this


def preset_model_config(preset_name: str) -> GPTConfig:
    p = get_preset(preset_name)
    m = p.model
    return GPTConfig.from_depth(m.depth, aspect_ratio=m.aspect_ratio, head_dim=m.head_dim, n_kv_head=m.n_kv_head,
                                vocab_size=m.vocab_size, seq_len=m.seq_len, softcap=m.softcap,
                                value_embeds=m.value_embeds, window_pattern=m.window_pattern, window_len=m.window_len)


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
        with ctx:
            loss = model(x, x)
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - t)
    return rows * cfg.sequence_len * model.flops_per_token() / min(times[1:])


def shape_stats(cfg: GPTConfig) -> tuple[int, float]:
    """(parameters, training FLOPs per token), from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = GPT(cfg)
    return model.num_params(), model.flops_per_token()


def throughput(cfg: GPTConfig, device: torch.device, rows: int, mfu: float) -> tuple[float, str]:
    """(FLOP/s per device, how it was obtained)."""
    if rows * cfg.sequence_len * shape_stats(cfg)[1] <= MEASURE_BUDGET_FLOPS or device.type == "cuda":
        return measure_flops_per_second(cfg, device, rows), f"measured on {device}"
    return PEAK_BF16_FLOPS["H100"] * mfu, f"assumed: H100 bf16 peak x {mfu:.0%} MFU (run --dry-run on the GPU)"


def print_plan(cfg, stages: list[str]) -> None:
    preset = get_preset(cfg.run.preset)
    mcfg = preset_model_config(cfg.run.preset)
    device = pick_device(cfg.run.device)
    gpus, price = cfg.args.gpus, cfg.args.gpu_hour_price
    params, fpt = shape_stats(mcfg)
    base = preset.stages["base"]
    flops_s, how = throughput(mcfg, device, min(base.device_batch_size, 4), cfg.args.mfu)
    print0(f"plan for preset '{preset.name}' (run '{cfg.run.run}'): depth {mcfg.n_layer}, width {mcfg.n_embd}, "
           f"{human(params)} params, {human(fpt)} FLOPs/token")
    print0(f"throughput: {human(flops_s)}FLOP/s per device ({how}); devices: {gpus}")
    total_s = 0.0
    for name in stages:
        train = preset.stages.get(name)
        if train is None:
            print0(f"  {name:5s} steps and tokens set by the stage itself (rollouts); not estimated")
            continue
        steps = train.num_steps or (round(train.param_data_ratio * params / train.total_batch_tokens)
                                    if train.param_data_ratio > 0 else 0)
        if not steps:
            print0(f"  {name:5s} one pass over its task mixture (data-dependent); not estimated")
            continue
        tokens = steps * train.total_batch_tokens
        secs = tokens * fpt / (flops_s * gpus)
        total_s += secs
        print0(f"  {name:5s} {steps:6d} steps x {human(train.total_batch_tokens)} = {human(tokens):>7s} tokens"
               f"  ~{duration(secs)}")
    line = f"estimated training time ~{duration(total_s)}"
    if device.type == "cuda" or "assumed" in how:  # dollars only mean something for rented GPUs
        line += f"; cost ~${total_s / 3600 * gpus * price:.2f} on {gpus} GPU(s) at ${price:.2f}/GPU-hour"
    print0(line)
