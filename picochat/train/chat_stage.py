"""What mid-training and SFT share: train on a task mixture of conversations, loss on the
assistant's tokens only, starting from the previous stage's model.

The two stages differ only in their data and where they start (see train/mid.py, train/sft.py);
the loop is train/trainer.py's. This module supplies the stage object the trainer calls
(`ChatStage`: batches and validation batches from train/chat_batches.py) and the command body
(`run_chat_stage`): load the start model and the tokenizer, build the mixtures from the config's
spec strings, measure the held-out loss of the start model (and of the base model) so that the
artifact records what the stage bought, optionally seed the optimizer with the start stage's
final state (--warm-start-optim), then train.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from picochat.common.device import autocast_for, init_distributed
from picochat.common.errors import UserError
from picochat.common.log import banner, human, print0
from picochat.common.paths import stage_dir
from picochat.config import TrainConfig
from picochat.model import artifact
from picochat.run_layout import first_finished, load_tokenizer
from picochat.tasks.common import Task, describe
from picochat.tasks.registry import make_mixture
from picochat.train import checkpoint, parallel
from picochat.train.chat_batches import chat_batches, estimate_rows, waste_fraction
from picochat.train.trainer import Batch, Evals, InLoop, Trainer, evaluate_loss_bpb, write_config


class ChatStage:
    """The trainer's view of a chat stage: packed conversation batches, resumable by cursor.

    Every rank packs the same global stream and saves the same cursor (train/chat_batches.py), so
    a checkpoint resumes on any number of ranks: the new ranks continue the global stream at the
    cursor and split its rows among themselves, nothing repeated or skipped."""

    reshards_cursors = True  # the trainer hands over every rank's cursor when the world size changed

    def __init__(self, name: str, train_task: Task, val_task: Task | None, tokenizer: Any, batch_size: int,
                 seq_len: int, *, crop: bool, rank: int = 0, world_size: int = 1,
                 in_loop: InLoop | None = None):
        self.name, self.train_task, self.val_task, self.tokenizer = name, train_task, val_task, tokenizer
        self.in_loop = in_loop  # ChatCORE every train.chatcore_every steps (eval/in_loop.py)
        self.kw = dict(batch_size=batch_size, seq_len=seq_len, crop=crop, rank=rank, world_size=world_size)
        self.packing: dict[str, Any] = {}  # updated in place as batches go out (it rides in meta.json)

    def batches(self, cursor: dict | None) -> Iterator[Batch]:
        if cursor is not None and "ranks" in cursor:  # saved on another number of ranks
            cursor = _shared_cursor(cursor["ranks"])
        for batch in chat_batches(self.train_task, self.tokenizer, cursor=cursor, infinite=True, **self.kw):
            self.packing.update(batch.cursor["stats"], epoch=batch.cursor["epoch"],
                                waste_fraction=waste_fraction(batch.cursor))
            yield batch

    def val_batches(self) -> Iterator[Batch]:
        """One pass over the held-out conversations, each whole (never cropped), so that mid and
        SFT measure the same rows whatever their training packing."""
        if self.val_task is None:
            return iter(())
        return chat_batches(self.val_task, self.tokenizer, infinite=False, **{**self.kw, "crop": False})


def _shared_cursor(cursors: list[dict]) -> dict:
    """The one cursor every rank of a chat stage saved (they pack the same stream)."""
    if any(c != cursors[0] for c in cursors):
        raise UserError("the checkpoint's chat data cursors differ between ranks, which they never should; "
                        "restore the checkpoint or start the stage again")
    return cursors[0]


def steps_for_one_pass(train: TrainConfig, task: Task, tokenizer: Any, seq_len: int, crop: bool) -> int:
    """num_steps if given, else the steps one pass over the mixture takes (estimated by packing
    a sample of it). A chat stage's length is set by its data, not by a token-per-parameter
    budget, so target_param_data_ratio does not apply here."""
    if train.num_steps > 0:
        return train.num_steps
    rows_per_step = train.total_batch_tokens // seq_len
    return max(1, math.ceil(estimate_rows(task, tokenizer, seq_len, crop=crop) / rows_per_step))


def heldout_loss(model: torch.nn.Module, stage: ChatStage, token_bytes: torch.Tensor, train: TrainConfig,
                 device: torch.device) -> dict[str, float]:
    """Mask-weighted loss (and bpb) of `model` on the stage's held-out conversations."""
    was_training = model.training
    model.eval()
    result = evaluate_loss_bpb(model, stage.val_batches(), token_bytes.to(device), train.eval_tokens,
                               autocast_for(device, train.dtype))
    model.train(was_training)
    return result


def pick_start(run: str, home: str, start_from: tuple[str, ...]) -> tuple[str, Path]:
    """The first finished stage of `start_from` (e.g. SFT: mid, else base)."""
    found = first_finished(run, home, start_from)
    if found is not None:
        return found
    wanted = " or ".join(start_from)
    raise UserError(f"run '{run}' has no finished {wanted} model to start from; train it first with "
                    f"`picochat train {start_from[-1]} --run {run}`")


def build_mixtures(train: TrainConfig, stage: str, seed: int, home: str, mirror: str) -> tuple[Task, Task | None]:
    if train.data or train.val_data:  # TrainConfig is shared with base, whose --data is pretraining text
        raise UserError(f"--data/--val-data are pretraining text for `train base`; for {stage}, put your chat file "
                        "in --mixture as 'chatfile:PATH' (OpenAI messages JSONL)")
    if not train.mixture.strip():
        raise UserError(f"the {stage} stage needs a task mixture: set --mixture (e.g. 'wordproblems, smalltalk')")
    train_task = make_mixture(train.mixture, seed=seed, home=home, mirror=mirror)
    val_task = make_mixture(train.val_mixture, seed=seed, home=home, mirror=mirror) \
        if train.val_mixture.strip() else None
    return train_task, val_task


def run_chat_stage(cfg: Any, stage: str, start_from: tuple[str, ...], crop: bool,
                   evals: Evals = Evals()) -> dict | None:
    """`picochat train mid|sft`: train `stage` from the first finished stage in `start_from`,
    resume if interrupted, skip if already complete, with the in-loop evals and report card that
    `evals` brings. Returns the trainer's final numbers."""
    run, home, mirror = cfg.run.run, cfg.run.home, cfg.run.mirror
    out = stage_dir(run, stage, home)
    if artifact.is_complete(out):
        print0(f"{stage} stage of run '{run}' is already complete ({out}); skipping")
        return None
    dist_info, device = init_distributed(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    tokenizer = load_tokenizer(run, home)
    start_name, start_dir = pick_start(run, home, start_from)
    train_task, val_task = build_mixtures(cfg.train, stage, cfg.run.seed, home, mirror)  # fails fast on bad specs
    if start_name != start_from[0]:
        print0(f"note: run '{run}' has no finished {start_from[0]} stage; {stage} starts from {start_name}")
    model, start_meta = artifact.load_model(start_dir, device)
    seq_len = model.config.sequence_len
    in_loop = evals.in_loop(cfg, tokenizer, device, dist_info) if evals.in_loop else None
    chat = ChatStage(stage, train_task, val_task, tokenizer, cfg.train.device_batch_size, seq_len, crop=crop,
                     rank=dist_info.rank, world_size=dist_info.world_size, in_loop=in_loop)
    num_steps = steps_for_one_pass(cfg.train, train_task, tokenizer, seq_len, crop)
    banner(f"{stage}: run '{run}' from {start_name} on {device}")
    print0(f"mixture: {describe(train_task)}")
    print0(f"{num_steps} steps x {human(cfg.train.total_batch_tokens)} tokens, rows of {seq_len} "
           f"({'crop or pad' if crop else 'pad'} packing)")
    write_config(out, cfg.to_dict())
    token_bytes = torch.tensor(tokenizer.token_bytes())
    heldout = _heldout_before(chat, model, start_name, run, home, token_bytes, cfg.train, device)
    trainer = Trainer(model, cfg.train, out, num_steps=num_steps, device=device, dist_info=dist_info,
                      token_bytes=token_bytes,
                      meta={"stage": stage, "run": run, "start": start_name, "mixture": describe(train_task),
                            "val_mixture": describe(val_task) if val_task else None, "heldout": heldout,
                            "start_final": start_meta.get("final"), "packing": chat.packing,
                            "warm_start_optim": cfg.train.warm_start_optim},
                      report_card=evals.report_card)
    if cfg.train.warm_start_optim:
        warm_start(trainer, stage, start_name, start_dir)
    final = trainer.fit(chat)
    if chat.packing:
        p = chat.packing
        print0(f"{stage} packing: {p['packed']} conversations in {p['rows']} rows; "
               f"{100 * p['waste_fraction']:.1f}% of row tokens wasted (padding + crops), "
               f"{100 * p['loss_tokens'] / max(1, p['rows'] * seq_len):.1f}% carry loss")
    if "val_loss" in final and heldout:
        before = " | ".join(f"{k} {v['val_loss']:.4f}" for k, v in heldout.items())
        print0(f"held-out {stage} loss: {before} -> {stage} {final['val_loss']:.4f}")
    return final


def warm_start(trainer: Trainer, stage: str, start_name: str, start_dir: Path) -> None:
    """Seed the trainer's fresh optimizers with the start stage's final state (nanochat's SFT does
    this from base: the momentum buffers and Adam moments carry over, the learning rates do not).
    A stage that resumes from its own checkpoint skips this: the checkpoint has its state."""
    if checkpoint.has_training_checkpoint(trainer.out_dir):
        return
    problem = parallel.warm_start_optimizers(trainer.par, trainer.optimizers,
                                             lambda: artifact.load_optimizer_state(start_dir), trainer.dist)
    if problem == "none":
        print0(f"warning: the {start_name} stage at {start_dir} saved no optimizer state (it was trained before "
               f"optimizer.pt existed); {stage} starts with a fresh optimizer")
    elif problem:
        raise UserError(f"cannot warm-start the {stage} optimizer from the {start_name} stage: {problem}; "
                        "run with --no-warm-start-optim to start from a fresh optimizer")
    else:
        print0(f"{stage}: optimizer warm-started from the {start_name} stage's final state "
               "(momentum and moments; this stage's learning rates)")


def _heldout_before(chat: ChatStage, model: torch.nn.Module, start_name: str, run: str, home: str,
                    token_bytes: torch.Tensor, train: TrainConfig, device: torch.device) -> dict[str, dict]:
    """Held-out loss of the start model, and of the base model when the start is another stage."""
    if chat.val_task is None:
        return {}
    result = {start_name: heldout_loss(model, chat, token_bytes, train, device)}
    if start_name != "base" and artifact.is_complete(stage_dir(run, "base", home)):
        base, _ = artifact.load_model(stage_dir(run, "base", home), device)
        result["base"] = heldout_loss(base, chat, token_bytes, train, device)
        del base
    for name, r in result.items():
        print0(f"held-out {chat.name} loss of the {name} model: {r['val_loss']:.4f} (bpb {r['val_bpb']:.4f})")
    return result
