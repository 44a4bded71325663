"""The layout of a run on disk: which stages it has, which it finished, and how to load them.

A run is `$PICOCHAT_HOME/runs/<run>/` with one directory per stage, in training order
(common/paths.py STAGES: tokenizer, base, mid, sft, rl, report). The four model stages leave a
finished artifact (model/artifact.py); this module answers "which stage is the latest finished
one", loads the run's tokenizer and model, and turns a preset's ModelConfig into a GPTConfig.
It imports only the tokenizer, the model and common code, so chat, serve, eval, export and the
training stages all read a run the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from picochat.common.errors import UserError
from picochat.common.paths import STAGES, run_dir, stage_dir
from picochat.config import ModelConfig
from picochat.model import artifact
from picochat.model.gpt import GPT, GPTConfig
from picochat.tokenizer.tokenizer import Tokenizer

MODEL_STAGES = tuple(s for s in STAGES if s not in ("tokenizer", "report"))  # base, mid, sft, rl
# Latest first: a run that finished RL chats with its RL model unless told otherwise.
LATEST_FIRST = tuple(reversed(MODEL_STAGES))


def check_model_stage(stage: str) -> None:
    if stage not in MODEL_STAGES:
        raise UserError(f"unknown stage '{stage}'; choose one of {', '.join(MODEL_STAGES)}")


def first_finished(run: str, home: str, stages: tuple[str, ...]) -> tuple[str, Path] | None:
    """(name, directory) of the first stage of `stages` whose artifact is complete, or None."""
    for name in stages:
        path = stage_dir(run, name, home)
        if artifact.is_complete(path):
            return name, path
    return None


def resolve_stage(run: str, home: str, stage: str = "") -> str:
    """The stage asked for (which must be finished), or the latest finished one of rl > sft > mid > base."""
    if stage:
        check_model_stage(stage)
        if not artifact.is_complete(stage_dir(run, stage, home)):
            raise UserError(f"run '{run}' has no finished '{stage}' model in {stage_dir(run, stage, home)}; "
                            f"train it first (`picochat train {stage} --run {run}`)")
        return stage
    found = first_finished(run, home, LATEST_FIRST)
    if found is None:
        raise UserError(f"run '{run}' has no finished model in {run_dir(run, home)}; train one first "
                        f"(`picochat train base --run {run}`), or pass --run with the name of a trained run")
    return found[0]


def tokenizer_path(run: str, home: str = "") -> Path:
    return stage_dir(run, "tokenizer", home) / "tokenizer.json"


def load_tokenizer(run: str, home: str = "") -> Tokenizer:
    path = tokenizer_path(run, home)
    if not path.exists():
        raise UserError(f"run '{run}' has no tokenizer at {path}; train one first with "
                        f"`picochat tokenizer train --run {run}`")
    return Tokenizer.load(path)


def load_model_and_tokenizer(run: str, home: str, stage: str, device: torch.device | str):
    """(model in eval mode, tokenizer, the stage actually loaded)."""
    stage = resolve_stage(run, home, stage)
    tokenizer = load_tokenizer(run, home)
    model, _ = artifact.load_model(stage_dir(run, stage, home), device)
    if model.config.vocab_size != tokenizer.vocab_size:
        raise UserError(f"the {stage} model of run '{run}' has a vocabulary of {model.config.vocab_size} but its "
                        f"tokenizer has {tokenizer.vocab_size}; the run directory is inconsistent")
    return model.eval(), tokenizer, stage


def gpt_config(model_cfg: ModelConfig, vocab_size: int) -> GPTConfig:
    """The GPT a preset's ModelConfig describes, for a tokenizer of `vocab_size`."""
    try:
        return GPTConfig.from_depth(model_cfg.depth, aspect_ratio=model_cfg.aspect_ratio, head_dim=model_cfg.head_dim,
                                    n_kv_head=model_cfg.n_kv_head, vocab_size=vocab_size,
                                    seq_len=model_cfg.seq_len, softcap=model_cfg.softcap,
                                    value_embeds=model_cfg.value_embeds, window_pattern=model_cfg.window_pattern,
                                    window_len=model_cfg.window_len, residual_scalars=model_cfg.residual_scalars,
                                    smear=model_cfg.smear, backout=model_cfg.backout)
    except ValueError as e:  # a malformed --window-pattern / --window-len: one sentence, not a traceback
        raise UserError(str(e)) from None


def build_model(model_cfg: ModelConfig, vocab_size: int) -> GPT:
    """A freshly initialised GPT (the init scales are training choices, not part of the saved config)."""
    for name in ("init_embedding_std", "init_mlp_scale"):
        value = getattr(model_cfg, name)
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    return GPT(gpt_config(model_cfg, vocab_size), embedding_std=model_cfg.init_embedding_std,
               mlp_in_scale=model_cfg.init_mlp_scale)
