"""Training-step throughput: picochat's GPT + Muon/AdamW vs nanochat's GPT + MuonAdamW, same config.

Both models are built at the same shape (depth, width, heads, vocab, sequence length) and
trained on the same random batches; rounds alternate between the two so that machine noise
hits both alike. Prints tokens/s for each, the ratio, and MFU on a GPU.

    python benchmarks/train_step.py --nanochat /path/to/nanochat            # CPU default: depth 4
    python benchmarks/train_step.py --nanochat DIR --depth 20 --seq-len 2048 --batch 32 --compile  # H100

nanochat is karpathy/nanochat (a git checkout; the PyPI package of that name is unrelated):
`git clone https://github.com/karpathy/nanochat` and pass its path, or set NANOCHAT_DIR.
nanochat's sliding-window pattern is set to "L" (full context everywhere) so both do the same
attention work. picochat's model has the GPU presets' options (value embeddings, as nanochat's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from picochat.common.device import autocast_for, peak_flops, pick_device, synchronize  # noqa: E402
from picochat.config import TrainConfig, get_preset  # noqa: E402
from picochat.model.gpt import GPT, GPTConfig  # noqa: E402
from picochat.optim.groups import build_optimizers  # noqa: E402
from picochat.train.trainer import Batch, train_step  # noqa: E402


def picochat_step_fn(cfg: GPTConfig, device, dtype: str, compile_: bool):
    model = GPT(cfg).to(device)
    # Like nanochat's (always compiled, fused) optimizer: fused AdamW kernel; Muon compiled with --compile.
    opts = build_optimizers(model, TrainConfig(fused_adamw=True, compile_optim=compile_))
    return make_step(model, opts, autocast_for(device, dtype), compile_), model


def make_step(model, optimizers, ctx, compile_: bool):
    """One training step, the same for both sides: forward (in ctx), backward, optimizers, zero."""
    fwd = torch.compile(model) if compile_ else model

    def step(x, y):
        return train_step(fwd, model, optimizers, [Batch(x, y)], 1, autocast=ctx)  # picochat's one step
    return step


def nanochat_model(nanochat_dir: str, cfg: GPTConfig, device):
    """nanochat's GPT at picochat's shape, initialised on `device`."""
    sys.path.insert(0, nanochat_dir)
    from nanochat.gpt import GPT as NGPT
    from nanochat.gpt import GPTConfig as NConfig

    ncfg = NConfig(sequence_len=cfg.sequence_len, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                   n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, n_embd=cfg.n_embd, window_pattern="L")
    with torch.device("meta"):
        model = NGPT(ncfg)
    model.to_empty(device=device)
    model.init_weights()
    return model


def nanochat_step_fn(nanochat_dir: str, cfg: GPTConfig, device, dtype: str, compile_: bool):
    model = nanochat_model(nanochat_dir, cfg, device)
    # nanochat needs no autocast: it keeps fp32 master weights and casts them to its COMPUTE_DTYPE
    # (bf16 on CUDA) inside its own Linear, so its step runs exactly as in its base_train.py.
    return make_step(model, [model.setup_optimizer()], nullcontext(), compile_), model


def time_steps(step, batches, device, peak_mem: list[int]) -> float:
    """Seconds for the batches; appends the round's peak CUDA memory (bytes) to peak_mem on a GPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    t = time.perf_counter()
    for x, y in batches:
        loss = step(x, y)
    loss.item()
    synchronize(device)
    if device.type == "cuda":
        peak_mem.append(torch.cuda.max_memory_allocated(device))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""), help="nanochat checkout")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    if not args.nanochat or not (Path(args.nanochat) / "nanochat" / "gpt.py").exists():
        sys.exit("benchmark anchor missing: clone https://github.com/karpathy/nanochat and pass --nanochat DIR "
                 "(or set NANOCHAT_DIR)")
    device = pick_device(args.device)
    torch.manual_seed(0)
    cfg = GPTConfig.from_depth(args.depth, head_dim=args.head_dim, vocab_size=args.vocab, seq_len=args.seq_len,
                               value_embeds=get_preset("d20").model.value_embeds)
    ours, model = picochat_step_fn(cfg, device, args.dtype, args.compile)
    theirs, nmodel = nanochat_step_fn(args.nanochat, cfg, device, args.dtype, args.compile)
    batches = [(torch.randint(0, args.vocab, (args.batch, args.seq_len), device=device),) * 2
               for _ in range(args.steps)]
    mem_ours, mem_theirs = [], []
    for fn, mem in ((ours, mem_ours), (theirs, mem_theirs)):  # warm-up (and compile)
        time_steps(fn, batches[:2], device, mem)
    t_ours, t_theirs = [], []
    for _ in range(args.rounds):
        t_ours.append(time_steps(ours, batches, device, mem_ours))
        t_theirs.append(time_steps(theirs, batches, device, mem_theirs))
    tokens = args.steps * args.batch * args.seq_len
    tps_ours, tps_theirs = tokens / statistics.median(t_ours), tokens / statistics.median(t_theirs)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"config: depth {cfg.n_layer}, width {cfg.n_embd}, heads {cfg.n_head}x{cfg.head_dim}, "
          f"vocab {cfg.vocab_size}, seq {cfg.sequence_len}, batch {args.batch}, compile {args.compile}")
    n_theirs = sum(p.numel() for p in nmodel.parameters())
    print(f"params: picochat {model.num_params() / 1e6:.2f}M, nanochat {n_theirs / 1e6:.2f}M"
          " (both with value embeddings; nanochat adds per-layer scalars, smear and backout)")
    # MFU counts each model's own FLOPs per token (its own estimate, both 6N + attention).
    peak = peak_flops(device)
    sides = (("picochat", tps_ours, model.flops_per_token(), mem_ours, t_ours),
             ("nanochat", tps_theirs, nmodel.estimate_flops(), mem_theirs, t_theirs))
    for name, tps, flops, mem, times in sides:
        mfu = f", MFU {100 * tps * flops / peak:.1f}%" if peak else ""
        gib = f", peak CUDA memory {max(mem) / 2**30:.1f} GiB" if mem else ""
        step_ms = 1000 * statistics.median(times) / args.steps
        print(f"{name:9s} {tps:10.0f} tok/s, {step_ms:8.1f} ms/step, {flops / 1e9:.3f} GFLOP/token{mfu}{gib}")
    import nanochat.flash_attention as nfa
    print(f"attention: picochat SDPA; nanochat {'FA3' if nfa.USE_FA3 else 'SDPA (FA3 kernel not available)'}")
    print(f"ratio picochat/nanochat tokens/s: {tps_ours / tps_theirs:.2f}x")


if __name__ == "__main__":
    try:
        main()
    except torch.OutOfMemoryError:
        sys.exit("out of GPU memory: both models are held at once; rerun with a smaller --batch")
