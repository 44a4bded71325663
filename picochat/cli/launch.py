"""`picochat speedrun --gpus N`: the training stages on N processes of one node, through torchrun.

Each training stage (base, mid, SFT, RL) is launched as its own torchrun job,
    python -m torch.distributed.run --standalone --nproc_per_node=N -m picochat -- train <stage> <flags>
with the stage's fully resolved config written out as flags, so the N processes run exactly what
the speedrun resolved (preset < --config tables < flags). The single-process steps (tokenizer,
evals, report) run once, in the speedrun's own process: launched under torchrun they would each
run N times. A stage whose job fails stops the speedrun; its checkpoints stay, so rerunning the same
command resumes it.

On CPU (`--device cpu`) the processes join through gloo: a rehearsal of the multi-GPU path that
needs no GPU (the tests use it). On more than one node, the same stage commands run under
`torchrun --nnodes` with a c10d rendezvous; `multi_node_commands` prints them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from typing import Any

from picochat import config as C
from picochat.common.errors import UserError


def check_devices(gpus: int, device: str) -> None:
    """Refuse, in one sentence, a --gpus this machine cannot run."""
    if gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {gpus}")
    if gpus == 1:
        return
    if "RANK" in os.environ:
        raise UserError("`picochat speedrun --gpus N` starts torchrun itself; run it without torchrun")
    if device == "cpu":
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device not in ("auto", "cuda"):
        raise UserError(f"--gpus {gpus} uses cuda:0..{gpus - 1}; drop --device {device} (or use --device cpu "
                        "to rehearse on CPU processes)")
    if have < gpus:
        where = "has no GPU" if have == 0 else f"has {have} GPU(s)"
        raise UserError(f"--gpus {gpus} needs {gpus} GPUs and this machine {where}; use --gpus {max(have, 1)}, "
                        f"or add --device cpu to rehearse with {gpus} CPU processes (gloo)")


def config_flags(resolved: Any, sections: tuple[type, ...]) -> list[str]:
    """Every field of the command's config sections as a flag: `--name value`, `--[no-]flag`."""
    argv: list[str] = []
    for cls in sections:
        obj = getattr(resolved, C.section_name(cls))
        for f in fields(obj):
            value, flag = getattr(obj, f.name), "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + flag[2:])
            else:
                argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def torchrun_argv(gpus: int, words: tuple[str, ...], flags: list[str]) -> list[str]:
    # `--` keeps torchrun from reading our flags (it would take --run for its own --run-path)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "picochat", "--", *words, *flags]


def run_distributed(name: str, gpus: int, words: tuple[str, ...], resolved: Any, sections: tuple[type, ...]) -> None:
    argv = torchrun_argv(gpus, words, config_flags(resolved, sections))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = subprocess.run(argv, env=env).returncode
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise UserError(f"the {name} stage failed on {gpus} processes (exit code {code}; its output is above); "
                        "run the same command again to resume from its last checkpoint")


def multi_node_commands(run: C.RunConfig, stages: list[str], gpus: int, config: str | None) -> list[str]:
    """The same training stages on several nodes: run each line on every node, in order, with the
    run directory (--home) on a filesystem all nodes share; HOST is the first node's address."""
    common = f"--preset {run.preset} --run {run.run} --home {run.home or '/shared/picochat'}"
    common += f" --config {config}" if config else ""
    return [f"torchrun --nnodes=NODES --nproc_per_node={gpus} --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 "
            f"--rdzv-id={run.run}-{stage} -m picochat -- train {stage} {common}" for stage in stages]
