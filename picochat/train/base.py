"""Base pretraining: next-token prediction on packed documents from the base corpus.

What this stage supplies to the shared loop (train/trainer.py): a model built from scratch at
the preset's depth, BOS-aligned packed batches from the data loader (resumable by cursor),
validation batches for loss and bits-per-byte, and the step count and batch from the horizon rule
(train/horizon.py).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from picochat.common.device import init_distributed
from picochat.common.errors import UserError
from picochat.common.log import banner, human, print0
from picochat.common.paths import stage_dir
from picochat.config import ModelConfig, TrainConfig
from picochat.data.loader import pretrain_batches
from picochat.model.gpt import GPT, GPTConfig
from picochat.tokenizer.tokenizer import Tokenizer
from picochat.train import checkpoint
from picochat.train.horizon import REF_DEPTH, Horizon, apply_horizon, plan_horizon
from picochat.train.trainer import Batch, Trainer, write_config


def load_tokenizer(run: str, home: str = "") -> Tokenizer:
    path = stage_dir(run, "tokenizer", home) / "tokenizer.json"
    if not path.exists():
        raise UserError(f"run '{run}' has no tokenizer at {path}; train one first with "
                        f"`picochat tokenizer train --run {run}`")
    return Tokenizer.load(path)


def build_model(model_cfg: ModelConfig, vocab_size: int) -> GPT:
    config = GPTConfig.from_depth(model_cfg.depth, aspect_ratio=model_cfg.aspect_ratio, head_dim=model_cfg.head_dim,
                                  n_kv_head=model_cfg.n_kv_head, vocab_size=vocab_size,
                                  seq_len=model_cfg.seq_len, softcap=model_cfg.softcap)
    return GPT(config)


def horizon_for(model_cfg: ModelConfig, vocab_size: int, train: TrainConfig, world_size: int = 1) -> Horizon:
    """The base stage's steps and batch under `train`'s horizon rule (train/horizon.py), counted on
    models built on the meta device: this one and its depth-12 reference."""
    with torch.device("meta"):
        model, ref = build_model(model_cfg, vocab_size), build_model(replace(model_cfg, depth=REF_DEPTH), vocab_size)
    micro = train.device_batch_size * model_cfg.seq_len * world_size
    return plan_horizon(model, ref, train, tokens_per_micro=micro)


class BaseStage:
    name = "base"

    def __init__(self, train: TrainConfig, tokenizer: Tokenizer, seq_len: int, *, rank: int, world_size: int,
                 home: str, mirror: str):
        self.train, self.tokenizer, self.seq_len = train, tokenizer, seq_len
        self.kw = dict(rank=rank, world_size=world_size, home=home, mirror=mirror)

    def _batches(self, split: str, cursor: dict | None):
        for x, y, c in pretrain_batches(self.train.source, split, self.tokenizer, self.train.device_batch_size,
                                        self.seq_len, cursor=cursor, **self.kw):
            yield Batch(x, y, None, c)

    def batches(self, cursor: dict | None):
        return self._batches("train", cursor)

    def val_batches(self):
        return self._batches("val", None)


def main(cfg) -> None:
    """`picochat train base`: pretrain from scratch (or resume) and save runs/<run>/base/."""
    out = stage_dir(cfg.run.run, "base", cfg.run.home)
    if checkpoint.is_complete(out):
        print0(f"base stage of run '{cfg.run.run}' is already complete ({out}); skipping")
        return
    dist_info, device = init_distributed(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    tokenizer = load_tokenizer(cfg.run.run, cfg.run.home)
    model = build_model(cfg.model, tokenizer.vocab_size).to(device)
    horizon = horizon_for(cfg.model, tokenizer.vocab_size, cfg.train, dist_info.world_size)
    cfg.train = apply_horizon(cfg.train, horizon)  # recorded as run: the steps, batch and rates it trains with
    num_steps = horizon.steps
    banner(f"base pretraining: run '{cfg.run.run}' on {device}")
    print0(f"model: {human(model.num_params())} params, depth {model.config.n_layer}, width {model.config.n_embd}, "
           f"{model.config.n_head} heads; {horizon.describe()}")
    if horizon.batch_auto:
        print0(f"learning rates x{horizon.lr_scale:.3f} for the derived batch (sqrt of batch / 2^19)")
    write_config(out, cfg.to_dict())
    stage = BaseStage(cfg.train, tokenizer, model.config.sequence_len, rank=dist_info.rank,
                      world_size=dist_info.world_size, home=cfg.run.home, mirror=cfg.run.mirror)
    trainer = Trainer(model, cfg.train, out, num_steps=num_steps, device=device, dist_info=dist_info,
                      token_bytes=torch.tensor(tokenizer.token_bytes()), meta={"stage": "base", "run": cfg.run.run})
    trainer.fit(stage)
