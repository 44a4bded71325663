"""MMLU: 57-subject multiple-choice knowledge test (Hendrycks et al. 2021, arXiv:2009.03300).

File format (cais/mmlu parquet and shared/data's jsonl alike): rows of
{"question": str, "choices": [4 str], "answer": int 0-3, "subject": str}.
shared/data has the test split only; pass `path` for another (e.g. auxiliary_train for mid-training).
"""

from __future__ import annotations

from pathlib import Path

from picochat.tasks.common import CategoricalTask, RecordTask, read_records, render_choices, resolve_data_file

LETTERS = ("A", "B", "C", "D")


class MMLU(RecordTask, CategoricalTask):
    name = "mmlu"

    def __init__(self, split: str = "test", path: str | Path | None = None, *, seed: int | None = 42,
                 subjects: tuple[str, ...] = (), home: str = "", mirror: str = ""):
        self.split = split
        rows = read_records(resolve_data_file("mmlu", f"{split}.jsonl.gz", path, home=home, mirror=mirror))
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
