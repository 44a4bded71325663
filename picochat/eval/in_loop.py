"""In-loop evaluation: how the model is doing on the downstream metrics while it trains.

Base pretraining runs CORE on a fixed sample of every task (`core_max_per_task` examples, the same
shuffled subset each time, so the points of the curve compare) and prints greedy completions of
a few fixed prompts, every `core_every` steps and at the end. The chat stages (SFT; mid if asked)
run ChatCORE on a sample of its tasks every `chatcore_every` steps. The numbers go into the
stage's metrics.jsonl through the trainer (which calls `due` after every step and `run` when it
says so, in eval mode and outside the training clock) and from there into the report's plots.

Training sits below evaluation (train/ imports nothing of eval/), so a stage does not build these
itself: `core_in_loop` and `chatcore_in_loop` are handed to it, as `Evals.in_loop`
(train/trainer.py), by the `picochat train` commands (picochat/cli/train.py).

Nothing is evaluated twice over: CORE is eval/core.py's `evaluate_core`, ChatCORE is eval/chat.py's
`evaluate_task` and `chatcore`, the samples are eval/samples.py's `complete`, all through the one
engine. A run whose eval data is missing trains anyway: the eval is switched off with one line.

Under FSDP the in-loop evals are off: every forward of a sharded model is a collective, and these
evals run different forwards on different ranks (each scores its share of the examples).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from picochat.common.device import DistInfo, autocast_for
from picochat.common.errors import UserError
from picochat.common.log import print0
from picochat.config import ChatEvalConfig, EvalConfig, TrainConfig
from picochat.engine.engine import Engine
from picochat.eval.chat import CHATCORE_TASKS, DISPLAY_NAMES, chatcore, default_tasks, evaluate_task, load_tasks
from picochat.eval.core import bundle_dir, evaluate_core
from picochat.eval.samples import PROMPTS, complete

SAMPLE_TOKENS = 16  # greedy tokens per fixed prompt: enough to see whether a fact or a pattern is in


def is_due(every: int, step: int, last: bool) -> bool:
    return every > 0 and (step % every == 0 or last)


def _off_under_fsdp(train: TrainConfig, world_size: int, what: str, log: Callable[[str], None]) -> bool:
    if train.parallel == "fsdp" and world_size > 1:
        log(f"in-loop {what}: off under --parallel fsdp (each rank would run different forwards of the "
            f"sharded model); evaluate the finished model instead")
        return True
    return False


class InLoopCore:
    """CORE on a sample per task plus greedy samples, for the base stage."""

    def __init__(self, train: TrainConfig, tokenizer: Any, device: torch.device, *, mirror: str, home: str,
                 world_size: int = 1, log: Callable[[str], None] = print0):
        self.train, self.tokenizer, self.device, self.log = train, tokenizer, device, log
        self.every = 0 if _off_under_fsdp(train, world_size, "CORE", log) else train.core_every
        self.bundle = None
        if self.every > 0:
            try:
                self.bundle = bundle_dir(mirror, home)
            except UserError as e:  # the samples still run; training must not fail over an eval
                log(f"in-loop CORE: off ({e})")

    def due(self, step: int, last: bool) -> bool:
        return is_due(self.every, step, last)

    def run(self, model: torch.nn.Module, step: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with autocast_for(self.device, self.train.dtype):
            if self.bundle is not None:
                # `eval core`'s rows per forward: CORE rows run up to the rotary table (4 x seq_len),
                # and their fp32 logits must fit beside the training state
                result = evaluate_core(model, self.tokenizer, self.bundle, max_per_task=self.train.core_max_per_task,
                                       batch_size=EvalConfig().batch_size, device=self.device, log=None)
                # core_tasks says which metric this is: 22 = CORE, fewer = CORE-n (eval/core.py)
                out.update(core=result.score, core_tasks=len(result.centered))
                self.log(f"step {step}: {result.name} {result.score:.4f} "
                         f"(at most {self.train.core_max_per_task} examples per task)")
            samples = complete(Engine(model, self.tokenizer, tool=None), PROMPTS, SAMPLE_TOKENS)
        for s in samples:
            self.log(f"  {s['prompt']}▸{s['completion']}".replace("\n", " "))
        out["samples"] = samples
        return out


class InLoopChatCore:
    """ChatCORE on a sample of its tasks, for the chat stages."""

    def __init__(self, train: TrainConfig, tokenizer: Any, device: torch.device, *, preset: str, mirror: str,
                 home: str, rank: int = 0, world_size: int = 1, log: Callable[[str], None] = print0):
        self.train, self.tokenizer, self.device, self.log = train, tokenizer, device, log
        self.rank, self.world_size = rank, world_size
        self.every = 0 if _off_under_fsdp(train, world_size, "ChatCORE", log) else train.chatcore_every
        self.tasks: list = []
        if self.every > 0:
            try:
                _, self.tasks = load_tasks(train.chatcore_tasks or default_tasks(preset), home, mirror)
            except UserError as e:
                log(f"in-loop ChatCORE: off ({e})")
                self.every = 0

    def due(self, step: int, last: bool) -> bool:
        return is_due(self.every, step, last)

    def run(self, model: torch.nn.Module, step: int) -> dict[str, Any]:
        engine, accuracies = Engine(model, self.tokenizer), {}
        with autocast_for(self.device, self.train.dtype):
            for task in self.tasks:
                cap = (self.train.chatcore_max_categorical if task.eval_type == "categorical"
                       else self.train.chatcore_max_generative)
                r = evaluate_task(task, model, self.tokenizer, engine=engine, max_problems=cap,
                                  batch_size=self.train.device_batch_size,
                                  max_new_tokens=ChatEvalConfig().max_new_tokens, rank=self.rank,
                                  world_size=self.world_size, device=self.device)
                accuracies[task.name] = r.accuracy
        out: dict[str, Any] = {f"chat_{name}": acc for name, acc in accuracies.items()}
        score = chatcore(accuracies)
        if score is not None:
            # chatcore_tasks says which metric this is: 5 = ChatCORE, fewer = ChatCORE-n (eval/chat.py)
            out.update(chatcore=score[1], chatcore_tasks=sum(n in accuracies for n in CHATCORE_TASKS))
        self.log(f"step {step}: " + " | ".join(f"{DISPLAY_NAMES.get(n, n)} {a:.4f}" for n, a in accuracies.items())
                 + (f" | {score[0]} {score[1]:.4f}" if score else ""))
        return out


def core_in_loop(cfg: Any, tokenizer: Any, device: torch.device, dist_info: DistInfo) -> InLoopCore | None:
    """The base stage's in-loop evals for a resolved config (`cfg.run`, `cfg.train`); None when
    --core-every is 0."""
    if cfg.train.core_every <= 0:
        return None
    return InLoopCore(cfg.train, tokenizer, device, mirror=cfg.run.mirror, home=cfg.run.home,
                      world_size=dist_info.world_size)


def chatcore_in_loop(cfg: Any, tokenizer: Any, device: torch.device,
                     dist_info: DistInfo) -> InLoopChatCore | None:
    """A chat stage's in-loop evals for a resolved config; None when --chatcore-every is 0."""
    if cfg.train.chatcore_every <= 0:
        return None
    return InLoopChatCore(cfg.train, tokenizer, device, preset=cfg.run.preset, mirror=cfg.run.mirror,
                          home=cfg.run.home, rank=dist_info.rank, world_size=dist_info.world_size)
