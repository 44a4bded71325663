"""MMLU: 57-subject multiple-choice knowledge test (Hendrycks et al. 2021, arXiv:2009.03300).

File format (cais/mmlu parquet, config "all", and shared/data's jsonl alike): rows of
{"question": str, "choices": [4 str], "answer": int 0-3, "subject": str}. Splits: test, validation,
dev and auxiliary_train (~100K questions from other exams, used for mid-training); shared/data has
the test split only. Older copies of auxiliary_train wrap each row in a struct column "train".
"""

from __future__ import annotations

from pathlib import Path

from picochat.tasks.common import CategoricalTask, RecordTask, read_records, render_choices, resolve_split_files

LETTERS = ("A", "B", "C", "D")


class MMLU(RecordTask, CategoricalTask):
    name = "mmlu"

    def __init__(self, split: str = "test", path: str | Path | None = None, *, seed: int | None = 42,
                 subjects: tuple[str, ...] = (), home: str = "", mirror: str = ""):
        self.split = split
        rows = read_records(resolve_split_files("mmlu", split, path, home=home, mirror=mirror))
        rows = [unwrap(r) for r in rows]
        if subjects:
            rows = [r for r in rows if r.get("subject") in subjects]
        super().__init__(rows, seed)

    def make_example(self, row: dict) -> dict:
        choices = row["choices"]
        letters = LETTERS[: len(choices)]
        gold = letters[int(row["answer"])]
        messages = [
            {"role": "user", "content": render_choices(row["question"], letters, choices)},
            {"role": "assistant", "content": gold},
        ]
        return {"messages": messages, "letters": letters, "answer": gold, "subject": row.get("subject", "")}


def unwrap(row: dict) -> dict:
    """A row of the older auxiliary_train layout, {"train": {question, ...}}, as a flat row."""
    return row["train"] if "question" not in row and isinstance(row.get("train"), dict) else row
