"""HumanEval: write a Python function from its signature and docstring (Chen et al. 2021,
arXiv:2107.03374). A reply passes when its code, run with the problem's unit tests in the
sandbox, exits cleanly.

File format (openai/human-eval's HumanEval.jsonl.gz and the HF parquet alike): rows of
{"task_id", "prompt", "canonical_solution", "test", "entry_point"}.
"""

from __future__ import annotations

import re
from pathlib import Path

from picochat.tasks.common import RecordTask, read_records, resolve_split_files

_FENCE_RE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(reply: str) -> str:
    """The first fenced code block of a reply, or the whole reply when it has none."""
    m = _FENCE_RE.search(reply)
    return (m.group(1) if m else reply).strip("\n")


def leading_imports(prompt: str) -> str:
    """The import lines at the top of a problem's prompt (a reply often omits them)."""
    imports = []
    for line in prompt.splitlines():
        s = line.strip()
        if s.startswith(("import ", "from ")):
            imports.append(s)
        elif s and not s.startswith("#"):
            break
    return "\n".join(imports)


def checking_program(example: dict, reply: str) -> str:
    """The program the sandbox runs: prompt imports, the reply's code, the tests, the check call."""
    return "\n\n".join([
        leading_imports(example["prompt"]),
        extract_code(reply),
        example["test"],
        f"check({example['entry_point']})",
    ]) + "\n"


class HumanEval(RecordTask):
    """Generative; `evaluate` runs code, so it needs `picochat.eval.sandbox`."""

    name = "humaneval"
    eval_type = "generative"

    def __init__(self, path: str | Path | None = None, *, seed: int | None = 42, timeout: float = 5.0,
                 home: str = "", mirror: str = ""):
        self.timeout = timeout
        rows = read_records(resolve_split_files("humaneval", "test", path, home=home, mirror=mirror))
        super().__init__(rows, seed)

    def make_example(self, row: dict) -> dict:
        messages = [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["prompt"] + row["canonical_solution"]},
        ]
        return {"messages": messages, "task_id": row["task_id"], "prompt": row["prompt"],
                "test": row["test"], "entry_point": row["entry_point"]}

    def evaluate(self, example: dict, reply: str) -> bool:
        from picochat.eval.sandbox import run_python

        return run_python(checking_program(example, reply), timeout=self.timeout).status == "ok"
