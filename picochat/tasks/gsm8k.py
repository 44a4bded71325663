"""GSM8K: grade-school math word problems (Cobbe et al. 2021, arXiv:2110.14168).

Each reference solution marks its arithmetic with calculator annotations, `<<48/2=24>>24`.
We turn every annotation into a `python` tool call, so the model learns to hand arithmetic to
the calculator instead of guessing digits (the same use of the annotations as nanochat). The
call's output is what our calculator tool really prints ("24.0" for 48/2), not the annotation's
"24": the model then conditions in training on exactly what the engine feeds it at inference.
On train.jsonl the tool and the annotation agree numerically on all 23,716 calls and differ in
format on 27% of them. The final answer follows `####`; evaluation compares that number.

File format (openai/grade-school-math and the HF parquet export alike): rows of
{"question": str, "answer": str}.
"""

from __future__ import annotations

import re
from pathlib import Path

from picochat.tasks.common import RecordTask, extract_final_number, read_records, resolve_split_files, same_number

SPLITS = ("train", "test")
_CALC_RE = re.compile(r"<<([^<>]*)>>")


def tool_output(expression: str, annotated: str) -> str:
    """What the calculator tool prints for `expression` when it agrees numerically with the
    annotated result; otherwise the annotation (a typo in the data should not change the answer)."""
    from picochat.sandbox.calculator import calculator

    computed = calculator(expression)
    if computed is None:
        return annotated
    try:
        want = float(annotated)
        return computed if abs(float(computed) - want) <= 1e-9 * max(1.0, abs(want)) else annotated
    except ValueError:
        return annotated


def solution_parts(answer: str) -> list[dict]:
    """A GSM8K solution as assistant parts: text, then python/python_output per annotation."""
    parts: list[dict] = []
    pos = 0
    for m in _CALC_RE.finditer(answer):
        if m.start() > pos:
            parts.append({"type": "text", "text": answer[pos:m.start()]})
        expression, _, result = m.group(1).rpartition("=")
        if not _:  # an annotation without "=" is a bare expression with no recorded result
            expression, result = result, ""
        parts.append({"type": "python", "text": expression})
        parts.append({"type": "python_output", "text": tool_output(expression, result)})
        pos = m.end()
    if pos < len(answer):
        parts.append({"type": "text", "text": answer[pos:]})
    return parts


class GSM8K(RecordTask):
    """Generative: the reply is correct when the number after its last `####` equals the gold one."""

    name = "gsm8k"
    eval_type = "generative"

    def __init__(self, split: str = "train", path: str | Path | None = None, *, seed: int | None = 42,
                 home: str = "", mirror: str = ""):
        if split not in SPLITS:
            raise ValueError(f"GSM8K split must be one of {SPLITS}, got {split!r}")
        self.split = split
        rows = read_records(resolve_split_files("gsm8k", split, path, home=home, mirror=mirror))
        super().__init__(rows, seed)

    def make_example(self, row: dict) -> dict:
        messages = [
            {"role": "user", "content": row["question"]},
            {"role": "assistant", "content": solution_parts(row["answer"])},
        ]
        return {"messages": messages, "answer": extract_final_number(row["answer"])}

    def evaluate(self, example: dict, reply: str) -> bool:
        return same_number(extract_final_number(reply), example["answer"])
