"""Find a run's model and tokenizer on disk and build an Engine from them (chat and serve)."""

from __future__ import annotations

from pathlib import Path

import torch

from picochat.common.errors import UserError
from picochat.common.paths import run_dir, stage_dir

# Latest first: a run that finished RL chats with its RL model unless told otherwise.
STAGE_PREFERENCE = ("rl", "sft", "mid", "base")


def resolve_stage(run: str, home: str, stage: str = "") -> str:
    """The stage asked for, or the latest finished one of rl > sft > mid > base."""
    from picochat.model.artifact import is_complete

    if stage:
        if stage not in STAGE_PREFERENCE:
            raise UserError(f"unknown stage '{stage}'; choose one of {', '.join(STAGE_PREFERENCE)}")
        if not is_complete(stage_dir(run, stage, home)):
            raise UserError(f"run '{run}' has no finished '{stage}' model in {stage_dir(run, stage, home)}; "
                            f"train it first (`picochat train {stage} --run {run}`)")
        return stage
    for s in STAGE_PREFERENCE:
        if is_complete(stage_dir(run, s, home)):
            return s
    raise UserError(f"run '{run}' has no finished model in {run_dir(run, home)}; train one first "
                    f"(`picochat train base --run {run}`), or pass --run with the name of a trained run")


def load_tokenizer(run: str, home: str):
    from picochat.tokenizer.tokenizer import Tokenizer

    path = Path(run_dir(run, home)) / "tokenizer" / "tokenizer.json"
    return Tokenizer.load(path)


def load_model_and_tokenizer(run: str, home: str, stage: str, device: torch.device | str):
    """(model in eval mode, tokenizer, the stage actually loaded)."""
    from picochat.model.artifact import load_model

    stage = resolve_stage(run, home, stage)
    tokenizer = load_tokenizer(run, home)
    model, _ = load_model(stage_dir(run, stage, home), device)
    if model.config.vocab_size != tokenizer.vocab_size:
        raise UserError(f"the {stage} model of run '{run}' has a vocabulary of {model.config.vocab_size} but its "
                        f"tokenizer has {tokenizer.vocab_size}; the run directory is inconsistent")
    return model.eval(), tokenizer, stage
