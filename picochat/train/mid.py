"""Mid-training: teach the pretrained model the conversation format, tool use and new skills.

It continues from the base model on a mixture of conversations (TrainConfig.mixture; nanochat's
recipe: SmolTalk chats, MMLU auxiliary questions, GSM8K with calculator calls, identity and
spelling; the demo: synthetic word problems with calculator calls, small talk and identity). The
loss is on the assistant's tokens only, and rows are packed densely: a conversation that does not
fit may be cropped into the row's gap when that wastes less than padding (chat_batches.py).

Everything else (the loop, schedules, checkpoints, resume) is train/trainer.py's; what mid and
SFT share is in train/chat_stage.py.
"""

from __future__ import annotations

from typing import Any

from picochat.train.chat_stage import run_chat_stage
from picochat.train.trainer import Evals

START_FROM = ("base",)


def main(cfg: Any, evals: Evals = Evals()) -> dict | None:
    """`picochat train mid`: runs/<run>/base/ -> runs/<run>/mid/ (skips if complete, resumes if not)."""
    return run_chat_stage(cfg, "mid", START_FROM, crop=True, evals=evals)
