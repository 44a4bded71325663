"""Base pretraining: next-token prediction on packed documents from the base corpus.

What this stage supplies to the shared loop (train/trainer.py): a model built from scratch at
the preset's depth, BOS-aligned packed batches from the data loader (resumable by cursor),
validation batches for loss and bits-per-byte, and the step count from the token budget.
"""

from __future__ import annotations

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
from picochat.train.in_loop import InLoopCore
from picochat.train.trainer import Batch, Trainer, write_config


def load_tokenizer(run: str, home: str = "") -> Tokenizer:
    path = stage_dir(run, "tokenizer", home) / "tokenizer.json"
    if not path.exists():
        raise UserError(f"run '{run}' has no tokenizer at {path}; train one first with "
                        f"`picochat tokenizer train --run {run}`")
    return Tokenizer.load(path)


def build_model(model_cfg: ModelConfig, vocab_size: int) -> GPT:
    try:
        config = _gpt_config(model_cfg, vocab_size)
    except ValueError as e:  # a malformed --window-pattern / --window-len: one sentence, not a traceback
        raise UserError(str(e)) from None
    return GPT(config)


def _gpt_config(model_cfg: ModelConfig, vocab_size: int) -> GPTConfig:
    return GPTConfig.from_depth(model_cfg.depth, aspect_ratio=model_cfg.aspect_ratio, head_dim=model_cfg.head_dim,
                                  n_kv_head=model_cfg.n_kv_head, vocab_size=vocab_size,
                                  seq_len=model_cfg.seq_len, softcap=model_cfg.softcap,
                                  value_embeds=model_cfg.value_embeds, window_pattern=model_cfg.window_pattern,
                                  window_len=model_cfg.window_len)


def steps_for_budget(model: GPT, train: TrainConfig) -> int:
    """num_steps if given, else param_data_ratio x parameters tokens (Chinchilla's ~20 tokens per
    parameter, Hoffmann et al. 2022, arXiv:2203.15556) divided by the tokens per step."""
    if train.num_steps > 0:
        return train.num_steps
    if train.param_data_ratio <= 0:
        raise UserError("set --num-steps or --param-data-ratio so the base stage knows how long to train")
    return max(1, round(train.param_data_ratio * model.num_params() / train.total_batch_tokens))


class BaseStage:
    name = "base"
    reshards_cursors = True  # resumes on any number of ranks: the loader splits the old cursors

    def __init__(self, train: TrainConfig, tokenizer: Tokenizer, seq_len: int, *, rank: int, world_size: int,
                 home: str, mirror: str, in_loop: InLoopCore | None = None):
        self.train, self.tokenizer, self.seq_len = train, tokenizer, seq_len
        self.kw = dict(rank=rank, world_size=world_size, home=home, mirror=mirror)
        self.in_loop = in_loop  # CORE + greedy samples every train.core_every steps (train/in_loop.py)

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
    if cfg.train.warm_start_optim:
        raise UserError("--warm-start-optim is for mid and sft (they start from a trained stage); "
                        "base starts from scratch, so drop it here")
    dist_info, device = init_distributed(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    tokenizer = load_tokenizer(cfg.run.run, cfg.run.home)
    model = build_model(cfg.model, tokenizer.vocab_size).to(device)
    num_steps = steps_for_budget(model, cfg.train)
    banner(f"base pretraining: run '{cfg.run.run}' on {device}")
    print0(f"model: {human(model.num_params())} params, depth {model.config.n_layer}, width {model.config.n_embd}, "
           f"{model.config.n_head} heads; {num_steps} steps x {human(cfg.train.total_batch_tokens)} tokens")
    write_config(out, cfg.to_dict())
    in_loop = InLoopCore(cfg.train, tokenizer, device, mirror=cfg.run.mirror, home=cfg.run.home,
                         world_size=dist_info.world_size) if cfg.train.core_every > 0 else None
    stage = BaseStage(cfg.train, tokenizer, model.config.sequence_len, rank=dist_info.rank,
                      world_size=dist_info.world_size, home=cfg.run.home, mirror=cfg.run.mirror, in_loop=in_loop)
    trainer = Trainer(model, cfg.train, out, num_steps=num_steps, device=device, dist_info=dist_info,
                      token_bytes=torch.tensor(tokenizer.token_bytes()), meta={"stage": "base", "run": cfg.run.run})
    trainer.fit(stage)
