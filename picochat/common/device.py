"""Device and dtype choice, and torch.distributed set-up under torchrun.

A run launched with `torchrun` gets RANK / LOCAL_RANK / WORLD_SIZE in its environment; we
initialise the process group from them (NCCL on CUDA, gloo on CPU). A plain `python` run is
world size 1 and never touches torch.distributed.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from picochat.common.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then CPU; anything else ('cpu', 'cuda:1', 'mps') is taken
    as given (`--device` on every command overrides the automatic choice)."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is visible; use --device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for, but Apple's Metal backend is not available; use --device cpu")
    return device


def init_distributed(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one; returns (dist info, this rank's device)."""
    if "RANK" not in os.environ:
        return DistInfo(), pick_device(device_name)
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ["WORLD_SIZE"]))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def close_distributed(exit_code: int = 0) -> None:
    """Leave the torchrun process group after a command succeeded on every rank.

    Only on success: destroying a group is collective, and a rank that failed alone would leave
    the others waiting in it. With gloo (CPU) this does not return: the process ends here.
    Gloo's worker threads outlive destroy_process_group, and one may still be freeing a finished
    collective whose tensors have Python owners when the interpreter shuts down; taking the GIL
    then ends the thread inside C++ and the rank aborts ("terminate called without an active
    exception", about 1 run in 15 of a 2-rank CPU test on a loaded machine; the core dump shows
    ProcessGroupGloo::runLoop freeing a collective's tensors during Py_FinalizeEx). All work is done
    and saved by now, so the rank skips interpreter teardown instead.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    gloo = dist.get_backend() == "gloo"
    dist.destroy_process_group()
    if gloo:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def uses_bf16(device: torch.device, dtype: str = "auto") -> bool:
    """Whether a run computes in bf16: asked for, or 'auto' on CUDA."""
    return dtype == "bf16" or (dtype == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, dtype: str = "auto"):
    """bf16 autocast on CUDA by default (master weights stay fp32); plain fp32 elsewhere."""
    if not uses_bf16(device, dtype):
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Dense bf16 peak FLOP/s per GPU (vendor datasheets), for MFU and the cost estimate.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "4090": 165e12}


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak of the GPU, for MFU; None where we do not know it (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
