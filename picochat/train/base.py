"""Base pretraining: next-token prediction on packed documents from the base corpus.

What this stage supplies to the shared loop (train/trainer.py): a model built from scratch at
the preset's depth, BOS-aligned packed batches from the data loader (resumable by cursor),
validation batches for loss and bits-per-byte, and the step count and batch from the horizon rule
(train/horizon.py).
The text is a named source (`--source`) or the user's own files (`--data`, data/user_corpus.py),
opened and checked before the first step, so bad data fails before any training.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from types import SimpleNamespace

import torch

from picochat.common.device import init_distributed
from picochat.common.errors import UserError
from picochat.common.log import banner, human, print0
from picochat.common.paths import stage_dir
from picochat.config import ModelConfig, TrainConfig, get_preset
from picochat.data.loader import batches_from_corpus
from picochat.data.user_corpus import absolute_spec, open_text_corpora
from picochat.model import artifact
from picochat.run_layout import build_model, load_tokenizer
from picochat.tokenizer.commands import train_main as train_tokenizer
from picochat.tokenizer.tokenizer import Tokenizer
from picochat.train.horizon import REF_DEPTH, Horizon, apply_horizon, plan_horizon
from picochat.train.trainer import Batch, Evals, InLoop, Trainer, write_config


def tokenizer_for(cfg, world_size: int) -> Tokenizer:
    """The run's tokenizer. With --data and none trained yet, one is trained first on the same
    files (the preset's tokenizer settings, vocab --vocab-size), so `picochat train base --data DIR`
    alone goes from the user's text to a model; under torchrun that is left to one explicit command."""
    t = cfg.train
    path = stage_dir(cfg.run.run, "tokenizer", cfg.run.home) / "tokenizer.json"
    if t.data and not path.exists():
        flags = f"--data {t.data}" + (f" --text-field {t.text_field}" if t.text_field != "text" else "")
        if world_size > 1:
            raise UserError(f"run '{cfg.run.run}' has no tokenizer; train it on your data first with "
                            f"`picochat tokenizer train --run {cfg.run.run} {flags}`")
        print0(f"run '{cfg.run.run}' has no tokenizer: training one on the same text first "
               f"(as `picochat tokenizer train {flags}` does)")
        tok_cfg = replace(get_preset(cfg.run.preset).tokenizer, vocab_size=cfg.model.vocab_size, data=t.data,
                          text_field=t.text_field, val_data=t.val_data)
        train_tokenizer(SimpleNamespace(run=cfg.run, tokenizer=tok_cfg, args=argparse.Namespace(force=False)))
    return load_tokenizer(cfg.run.run, cfg.run.home)


def horizon_for(model_cfg: ModelConfig, vocab_size: int, train: TrainConfig, world_size: int = 1) -> Horizon:
    """The base stage's steps and batch under `train`'s horizon rule (train/horizon.py), counted on
    models built on the meta device: this one and its depth-12 reference."""
    with torch.device("meta"):
        model, ref = build_model(model_cfg, vocab_size), build_model(replace(model_cfg, depth=REF_DEPTH), vocab_size)
    micro = train.device_batch_size * model_cfg.seq_len * world_size
    return plan_horizon(model, ref, train, tokens_per_micro=micro)


def open_corpora(train: TrainConfig, home: str, mirror: str) -> dict:
    """{"train", "val"} corpora of --source or --data (the user's files, checked here)."""
    return open_text_corpora(train.source, data=train.data, text_field=train.text_field, val_data=train.val_data,
                             home=home, mirror=mirror)


class BaseStage:
    name = "base"
    reshards_cursors = True  # resumes on any number of ranks: the loader splits the old cursors

    def __init__(self, train: TrainConfig, tokenizer: Tokenizer, seq_len: int, *, rank: int, world_size: int,
                 home: str, mirror: str, in_loop: InLoop | None = None, corpora: dict | None = None):
        self.train, self.tokenizer, self.seq_len = train, tokenizer, seq_len
        self.rank, self.world_size = rank, world_size
        self.corpora = corpora or open_corpora(train, home, mirror)
        self.in_loop = in_loop  # CORE + greedy samples every train.core_every steps (eval/in_loop.py)

    def _batches(self, split: str, cursor: dict | None):
        for x, y, c in batches_from_corpus(self.corpora[split], self.tokenizer, self.train.device_batch_size,
                                           self.seq_len, rank=self.rank, world_size=self.world_size, cursor=cursor):
            yield Batch(x, y, None, c)

    def batches(self, cursor: dict | None):
        return self._batches("train", cursor)

    def val_batches(self):
        return self._batches("val", None)


def main(cfg, evals: Evals = Evals()) -> None:
    """`picochat train base`: pretrain from scratch (or resume) and save runs/<run>/base/, running
    the in-loop evals and report card that `evals` brings (picochat/cli/train.py)."""
    out = stage_dir(cfg.run.run, "base", cfg.run.home)
    if artifact.is_complete(out):
        print0(f"base stage of run '{cfg.run.run}' is already complete ({out}); skipping")
        return
    if cfg.train.warm_start_optim:
        raise UserError("--warm-start-optim is for mid and sft (they start from a trained stage); "
                        "base starts from scratch, so drop it here")
    dist_info, device = init_distributed(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    corpora = open_corpora(cfg.train, cfg.run.home, cfg.run.mirror)  # bad data fails before anything is trained
    tokenizer = tokenizer_for(cfg, dist_info.world_size)
    model = build_model(cfg.model, tokenizer.vocab_size).to(device)
    horizon = horizon_for(cfg.model, tokenizer.vocab_size, cfg.train, dist_info.world_size)
    cfg.train = apply_horizon(cfg.train, horizon)  # recorded as run: the steps, batch and rates it trains with
    num_steps = horizon.steps
    banner(f"base pretraining: run '{cfg.run.run}' on {device}")
    print0(f"model: {human(model.num_params())} params, depth {model.config.n_layer}, width {model.config.n_embd}, "
           f"{model.config.n_head} heads; {horizon.describe()}")
    if horizon.batch_auto:
        print0(f"learning rates x{horizon.lr_scale:.3f} for the derived batch (sqrt of batch / 2^19)")
    if cfg.train.data:  # the config records where the text came from, as paths valid from anywhere
        cfg.train.data, cfg.train.val_data = absolute_spec(cfg.train.data), absolute_spec(cfg.train.val_data)
        print0(f"data: {cfg.train.data} ({corpora['train'].num_chunks()} chunks; validation: "
               f"{cfg.train.val_data or 'the hash-held-out 1%'})")
    write_config(out, cfg.to_dict())
    in_loop = evals.in_loop(cfg, tokenizer, device, dist_info) if evals.in_loop else None
    stage = BaseStage(cfg.train, tokenizer, model.config.sequence_len, rank=dist_info.rank,
                      world_size=dist_info.world_size, home=cfg.run.home, mirror=cfg.run.mirror, in_loop=in_loop,
                      corpora=corpora)
    trainer = Trainer(model, cfg.train, out, num_steps=num_steps, device=device, dist_info=dist_info,
                      token_bytes=torch.tensor(tokenizer.token_bytes()), meta={"stage": "base", "run": cfg.run.run},
                      report_card=evals.report_card)
    trainer.fit(stage)
