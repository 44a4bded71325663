"""ARC-Easy and ARC-Challenge: grade-school science questions (Clark et al. 2018, arXiv:1803.05457).

File format (allenai/ai2_arc parquet and shared/data's jsonl alike): rows of
{"question": str, "choices": {"text": [str], "label": [str]}, "answerKey": str}. Splits: train,
validation and test (shared/data has the test splits only).
Some upstream rows label choices "1".."4" instead of "A".."D"; we re-letter them A.. so every
question is answered with a letter token.
"""

from __future__ import annotations

from pathlib import Path

from picochat.tasks.common import CategoricalTask, RecordTask, read_records, render_choices, resolve_split_files

SUBSETS = ("ARC-Easy", "ARC-Challenge")


class ARC(RecordTask, CategoricalTask):
    def __init__(self, subset: str = "ARC-Easy", split: str = "test", path: str | Path | None = None, *,
                 seed: int | None = 42, home: str = "", mirror: str = ""):
        if subset not in SUBSETS:
            raise ValueError(f"ARC subset must be one of {SUBSETS}, got {subset!r}")
        self.name = subset.lower().replace("-", "_")  # arc_easy, arc_challenge
        self.subset, self.split = subset, split
        files = resolve_split_files("arc", f"{subset}/{split}", path, home=home, mirror=mirror)
        super().__init__(read_records(files), seed)

    def make_example(self, row: dict) -> dict:
        labels = list(row["choices"]["label"])
        letters = tuple("ABCDEFGH"[: len(labels)])
        gold = letters[labels.index(row["answerKey"])]
        messages = [
            {"role": "user", "content": render_choices(row["question"], letters, row["choices"]["text"])},
            {"role": "assistant", "content": gold},
        ]
        return {"messages": messages, "letters": letters, "answer": gold}


def ARCEasy(split: str = "test", path: str | Path | None = None, **kw) -> ARC:  # noqa: N802
    return ARC("ARC-Easy", split, path, **kw)


def ARCChallenge(split: str = "test", path: str | Path | None = None, **kw) -> ARC:  # noqa: N802
    return ARC("ARC-Challenge", split, path, **kw)
