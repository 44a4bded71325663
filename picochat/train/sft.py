"""Chat SFT: a short fine-tune on a smaller curated mixture of whole conversations.

It starts from the mid-trained model (or from the base model when the run has no mid stage; the
command says so), trains on the assistant's tokens only, and packs conversations whole: when no
pending conversation fits a row's gap the gap is padded, never filled with a cropped
conversation, so every example is seen from its start to its <|assistant_end|> (the padding is
reported as wasted tokens). Before training it measures the held-out loss of the start model
and of the base model, and the trainer measures it again at the end: meta.json records both
("heldout" and "final"), which is how the report shows what SFT bought.
"""

from __future__ import annotations

from typing import Any

from picochat.train.chat_stage import run_chat_stage
from picochat.train.trainer import Evals

START_FROM = ("mid", "base")


def main(cfg: Any, evals: Evals = Evals()) -> dict | None:
    """`picochat train sft`: runs/<run>/mid/ (else base/) -> runs/<run>/sft/."""
    return run_chat_stage(cfg, "sft", START_FROM, crop=False, evals=evals)
