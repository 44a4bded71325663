"""Tiny models, tokenizer texts and runs that many test files build (the fixtures that share them
are in tests/conftest.py).

`tiny_gpt` is the one tiny GPT: each test states only the sizes that matter to it. With `std` every
weight is drawn at random instead of the real init, which zeroes the residual projections and
starts the head tiny: attention bugs would hide behind the zeros, and near-equal logits make
greedy decoding hang on float noise. `save_run` lays a tokenizer and a model out as a finished
stage of a run, the way the training stages leave them, for the commands that load runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from picochat.common.paths import stage_dir
from picochat.model.artifact import save_artifact
from picochat.model.gpt import GPT, GPTConfig
from picochat.run_layout import tokenizer_path

TEXT = ("The quick brown fox jumps over the lazy dog. 12 + 30 = 42. Hello, world! "
        "What is 6 times 7? It is 42. Numbers: 0 1 2 3 4 5 6 7 8 9. ") * 20


def tiny_gpt(vocab_size: int, *, seq_len: int = 32, n_layer: int = 1, n_head: int = 2, n_kv_head: int = 2,
             n_embd: int = 32, seed: int = 0, std: float = 0.0, cls: type[GPT] = GPT, **options) -> GPT:
    """A GPT of the given sizes, built after torch.manual_seed(seed); std > 0 redraws every weight
    from N(0, std²) and returns the model in eval mode. `options` are further GPTConfig fields."""
    torch.manual_seed(seed)
    model = cls(GPTConfig(sequence_len=seq_len, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                          n_kv_head=n_kv_head, n_embd=n_embd, **options))
    return randomized(model, std) if std > 0 else model


def randomized(model: GPT, std: float) -> GPT:
    """`model` with every weight redrawn from N(0, std²), in eval mode."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=std)
    return model.eval()


def random_gpt(vocab_size: int, n_kv_head: int = 2, seed: int = 0, cls: type[GPT] = GPT, seq_len: int = 96) -> GPT:
    """The engine, server and page tests' model: two layers of width 64, every weight random."""
    return tiny_gpt(vocab_size, seq_len=seq_len, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=64,
                    seed=seed, std=0.4, cls=cls)


def save_run(home: str | Path, tok, model: torch.nn.Module, stage: str = "sft", run: str = "t",
             **meta) -> Path:
    """Save `tok` as the run's tokenizer and `model` as its finished `stage` (meta: model_config,
    the stage's name, and `meta`, as the stages write them); returns the stage's directory."""
    home = str(home)
    tok.save(tokenizer_path(run, home))
    save_artifact(stage_dir(run, stage, home), model, {"model_config": model.config.to_dict(), "stage": stage, **meta})
    return stage_dir(run, stage, home)
