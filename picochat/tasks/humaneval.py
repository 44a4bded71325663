"""HumanEval: write a Python function from its signature and docstring (Chen et al. 2021,
arXiv:2107.03374). A reply passes when the problem's unit tests, run in one sandboxed process,
accept the function the reply defines, run in another (`picochat.sandbox.grade_function`: the
reply cannot touch the tests or the verdict; an exit status never counts as a pass).

File format (openai/human-eval's HumanEval.jsonl.gz and the HF parquet alike): rows of
{"task_id", "prompt", "canonical_solution", "test", "entry_point"}.
"""

from __future__ import annotations

import re
from pathlib import Path

from picochat.sandbox import Verdict, grade_function
from picochat.tasks.common import RecordTask, read_records, resolve_data_file

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


def candidate_program(example: dict, reply: str) -> str:
    """What runs in the candidate's sandbox: the prompt's imports, then the reply's code."""
    return "\n\n".join([leading_imports(example["prompt"]), extract_code(reply)]) + "\n"


class HumanEval(RecordTask):
    """Generative; `evaluate` runs the reply's code in the sandbox (picochat/sandbox/)."""

    name = "humaneval"
    eval_type = "generative"
    runs_code = True  # evals and RL check the sandbox's isolation first (require_isolation)

    def __init__(self, path: str | Path | None = None, *, seed: int | None = 42, timeout: float = 5.0,
                 home: str = "", mirror: str = ""):
        self.timeout = timeout
        rows = read_records(resolve_data_file("humaneval", "HumanEval.jsonl.gz", path, home=home, mirror=mirror))
        super().__init__(rows, seed)

    def make_example(self, row: dict) -> dict:
        messages = [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["prompt"] + row["canonical_solution"]},
        ]
        return {"messages": messages, "task_id": row["task_id"], "prompt": row["prompt"],
                "test": row["test"], "entry_point": row["entry_point"]}

    def grade(self, example: dict, reply: str) -> Verdict:
        """The verdict with its reasons and the isolation layers that were active."""
        return grade_function(candidate_program(example, reply), entry_point=example["entry_point"],
                              prompt=example["prompt"], test=example["test"], timeout=self.timeout)

    def evaluate(self, example: dict, reply: str) -> bool:
        return self.grade(example, reply).passed


def runs_code(task: object) -> bool:
    """Whether grading `task` (or a part of a mixture / subset of it) executes model code."""
    if getattr(task, "runs_code", False):
        return True
    parts = list(getattr(task, "tasks", ())) + [getattr(task, "task", None)]
    return any(runs_code(t) for t in parts if t is not None)
