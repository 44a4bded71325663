"""How the model is spread over ranks: one process, DDP, or FSDP2 — applied from outside the model.

The model file stays a plain nn.Module; everything parallel happens here, in one fixed order
(as torchtitan does it):

  1. torch.compile   (whole model for DDP / one process; per block for FSDP, so the compiled
                      graphs sit inside FSDP's per-block all-gather/reshard hooks)
  2. DDP or FSDP2    (DDP wraps the model; FSDP2's fully_shard converts it in place: each block,
                      then the root, which takes the embedding and the head)

The trainer then calls `Parallel.model` for forward/backward, `Parallel.accumulating(last)` around
each micro-step, and `full_state` / `load_full_state` for checkpoints. The loop itself never asks
which mode it runs in.

Launching (torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; common/device.py joins the group):
    one node, 8 GPUs:   torchrun --nproc_per_node=8 -m picochat train base --preset d20
    FSDP2:              torchrun --nproc_per_node=8 -m picochat train base --preset d32 --parallel fsdp
    two nodes:          on every node, the same command with
                        torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
                                 --rdzv_endpoint=HOST0:29500 --rdzv_id=RUN_NAME -m picochat train base ...
                        (HOST0 is any one of the nodes; the run directory must be on a filesystem
                        every node sees: each stage loads the previous stage's weights on every rank)

Checkpoints are *consolidated*: whatever the mode, rank 0 writes one full state dict keyed by
parameter names (DCP's get_model_state_dict / get_optimizer_state_dict with full_state_dict=True,
cpu_offload=True), so a checkpoint resumes on any world size and in either mode (the data
cursors are re-sharded by the stage: data/reshard.py). On resume rank 0 reads it and broadcasts
it (set_*_state_dict with broadcast_from_rank0); each rank keeps its copy (DDP) or its shard
(FSDP2). The same path seeds a chat stage's optimizers from the previous stage's final state
(`warm_start_optimizers`). A lost node ends the job (its peers fail in their next collective, or
their agent loses the rendezvous store); started again, it resumes from the last checkpoint
exactly (tests/test_distributed.py rehearses it with two single-process nodes on localhost).

FSDP2 caveat: every forward of the sharded model is a collective (each block all-gathers its
weights), so all ranks must run the same forwards in the same order. The loop and the validation
eval do; per-rank generation (RL rollouts, sampling evals, whose lengths differ per rank) does not,
so RL stays on DDP.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel as DDP

from picochat.common.device import DistInfo, uses_bf16
from picochat.common.errors import UserError
from picochat.config import TrainConfig

MODES = ("ddp", "fsdp")


@dataclass
class Parallel:
    """The model as the training loop sees it.

    raw: the module itself (parameters, state dicts, eval, accounting). Under FSDP2 it *is*
         the sharded module (fully_shard works in place), so its forward all-gathers as needed.
    model: what forward/backward call: raw, compiled and/or wrapped.
    mode: "single", "ddp" or "fsdp".
    """

    raw: nn.Module
    model: nn.Module
    mode: str

    def accumulating(self, last: bool) -> AbstractContextManager:
        """Context for one micro-step's forward/backward. DDP would all-reduce the gradients on
        every backward: only the last micro-step of an optimizer step needs to (the others
        accumulate locally). FSDP2 reduce-scatters on every micro-step on purpose: skipping it
        (set_requires_gradient_sync) would keep unsharded gradients for the whole model, the
        memory FSDP exists to save."""
        if self.mode == "ddp" and not last:
            return self.model.no_sync()
        return nullcontext()


def parallelize(model: nn.Module, cfg: TrainConfig, device: torch.device, info: DistInfo) -> Parallel:
    """Compile, then wrap for the mode in cfg.parallel (see the module docstring for the order).
    Build the optimizers *after* this: FSDP2 replaces the parameters with sharded DTensors."""
    if cfg.parallel not in MODES:
        raise UserError(f"--parallel {cfg.parallel!r} is not one of {', '.join(MODES)}; pick one")
    if not info.enabled:
        return Parallel(model, torch.compile(model) if cfg.compile else model, "single")
    if cfg.parallel == "ddp":
        compiled = torch.compile(model) if cfg.compile else model
        ddp = DDP(compiled, device_ids=[device.index] if device.type == "cuda" else None)
        return Parallel(model, ddp, "ddp")
    _fully_shard(model, cfg, device, info)
    return Parallel(model, model, "fsdp")


def _fully_shard(model: nn.Module, cfg: TrainConfig, device: torch.device, info: DistInfo) -> None:
    """FSDP2 (arXiv:2304.11277 for FSDP; `fully_shard` is its DTensor rewrite): every block's
    parameters are sharded on dim 0 across the ranks, all-gathered just before the block runs and
    freed again after it (in backward too), so each rank holds 1/W of the weights, gradients and
    optimizer state plus one block at a time."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (info.world_size,))
    # bf16 runs: all-gather and compute in bf16 (half the traffic), reduce gradients in fp32; the
    # sharded master weights stay fp32. fp32 runs (CPU tests) leave everything in fp32.
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if uses_bf16(device, cfg.dtype) else MixedPrecisionPolicy())
    blocks = list(model.blocks)
    for i, block in enumerate(blocks):
        if cfg.compile:
            block.compile()  # in place: keeps parameter names (no "_orig_mod." prefix)
        # The last block's weights are needed again first thing in backward: keep them gathered.
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=False)


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(par: Parallel) -> dict:
    """The model's state dict, whole and on CPU, keyed by parameter name. Collective under torchrun
    (every rank must call it); only rank 0 gets the tensors, the others an empty dict."""
    return get_model_state_dict(par.raw, options=_FULL)


def full_state(par: Parallel, optimizers: list[torch.optim.Optimizer]) -> tuple[dict, dict]:
    """(model, optimizers) state dicts for a checkpoint, as full_model_state: one optimizer dict
    for all optimizers, its state keyed by parameter name (so it does not depend on the layout)."""
    return full_model_state(par), get_optimizer_state_dict(par.raw, optimizers, options=_FULL)


def read_on_rank0(read: Callable[[], dict | None], info: DistInfo) -> dict | None:
    """A checkpoint read by rank 0 only (one copy of the state in host memory per job, not per
    rank). The other ranks get its small entries (step, cursors, RNG, ...) by broadcast and empty
    "model" / "optimizers" dicts: load_full_state broadcasts those tensors. None if there is none."""
    state = read() if info.is_main else None
    if not info.enabled:
        return state
    header = [None if state is None else {k: v for k, v in state.items() if k not in ("model", "optimizers")}]
    dist.broadcast_object_list(header, src=0)
    if header[0] is None:
        return None
    return state if info.is_main else {**header[0], "model": {}, "optimizers": {}}


def load_full_state(par: Parallel, optimizers: list[torch.optim.Optimizer], model_sd: dict, optim_sd: dict) -> None:
    """Load a consolidated state (as full_state returns it) on any world size and in either mode.
    Under torchrun rank 0 holds the dicts and broadcasts them; each rank keeps its copy (DDP) or
    its shard (FSDP2)."""
    options = StateDictOptions(full_state_dict=True, strict=True, broadcast_from_rank0=dist.is_initialized())
    set_model_state_dict(par.raw, model_sd, options=options)
    set_optimizer_state_dict(par.raw, optimizers, optim_sd, options=options)


def optimizer_mismatch(current: dict, previous: dict, shapes: dict[str, tuple[int, ...]]) -> str:
    """Why `previous` (a full optimizer state dict) cannot seed optimizers laid out as `current`:
    other parameter groups, or state for a parameter this model lacks or shapes differently. ''
    when it can."""
    now = [g["params"] for g in current["param_groups"]]
    then = [g["params"] for g in previous.get("param_groups", [])]
    if now != then:
        diff = next((f"group {i} holds {len(a)} parameters now and {len(b)} then" +
                     (f" (e.g. {sorted(set(a) ^ set(b))[0]})" if set(a) != set(b) else " in another order")
                     for i, (a, b) in enumerate(zip(now, then, strict=False)) if a != b),
                    f"there are {len(now)} parameter groups now and {len(then)} then")
        return f"the optimizers group the parameters differently: {diff}"
    for name, state in previous.get("state", {}).items():
        if name not in shapes:
            return f"it has state for '{name}', which this model does not have"
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.ndim and tuple(value.shape) != shapes[name]:
                return (f"its '{key}' for '{name}' has shape {tuple(value.shape)}, the parameter "
                        f"{shapes[name]}")
    return ""


def _named_groups(par: Parallel, optimizers: list[torch.optim.Optimizer]) -> list[dict]:
    """Every optimizer's param groups, parameters by name (the layout of a full optimizer state
    dict). Built by hand: get_optimizer_state_dict on fresh optimizers would first run a zero step
    to create their state, and AdamW's step count would start at 1."""
    names = {id(p): name for name, p in par.raw.named_parameters()}
    return [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(p)] for p in g["params"]]}
            for opt in optimizers for g in opt.param_groups]


def warm_start_optimizers(par: Parallel, optimizers: list[torch.optim.Optimizer],
                          read: Callable[[], dict | None], info: DistInfo) -> str:
    """Seed fresh optimizers with another stage's per-parameter state (Muon momentum buffers, AdamW
    moments and step counts) read by `read` on rank 0; the param groups' settings (learning rates,
    weight decay, betas, ...) stay the current ones. Collective under torchrun. Returns '' when
    loaded, else why not (the same sentence on every rank; 'none' when `read` found nothing), and
    then the optimizers are untouched."""
    groups = _named_groups(par, optimizers)
    previous = read() if info.is_main else None
    problem = ""
    if info.is_main:
        shapes = {name: tuple(p.shape) for name, p in par.raw.named_parameters()}  # DTensor: global shape
        problem = "none" if previous is None else optimizer_mismatch({"param_groups": groups}, previous, shapes)
    if info.enabled:
        verdict = [problem]
        dist.broadcast_object_list(verdict, src=0)
        problem = verdict[0]
    if problem:
        return problem
    seed = {"state": previous["state"], "param_groups": groups} if info.is_main else {}
    options = StateDictOptions(full_state_dict=True, strict=True, broadcast_from_rank0=dist.is_initialized())
    set_optimizer_state_dict(par.raw, optimizers, seed, options=options)
    return ""


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
