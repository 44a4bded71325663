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

from picochat.sandbox import Verdict, grade_function, isolation_record, require_isolation
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
        self.layers_seen: tuple[str, ...] | None = None  # isolation layers active in every grading so far
        rows = read_records(resolve_split_files("humaneval", "test", path, home=home, mirror=mirror))
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
        verdict = self.grade(example, reply)
        seen = self.layers_seen
        self.layers_seen = verdict.isolation if seen is None else tuple(x for x in seen if x in verdict.isolation)
        return verdict.passed


def code_tasks(task: object) -> list:
    """The parts of `task` (itself, or inside a mixture / subset) whose grading runs model code."""
    if getattr(task, "runs_code", False):
        return [task]
    parts = list(getattr(task, "tasks", ())) + [getattr(task, "task", None)]
    return [leaf for t in parts if t is not None for leaf in code_tasks(t)]


def runs_code(task: object) -> bool:
    return bool(code_tasks(task))


def sandbox_record(tasks: list, checked: dict) -> dict:
    """The isolation record (picochat.sandbox.isolation_record) of the layers active in every
    grading the tasks have run so far, for the eval's JSON and the report card; `checked` (what
    check_sandbox returned) when they ran none."""
    seen = [t.layers_seen for task in tasks for t in code_tasks(task) if t.layers_seen is not None]
    if not seen:
        return checked
    return isolation_record(tuple(x for x in seen[0] if all(x in s for s in seen)), checked["unsafe"])


def check_sandbox(tasks: list, unsafe: bool) -> dict | None:
    """Before grading or rewarding: refuse (UserError, one sentence naming what is missing and
    --unsafe-sandbox) when a task runs model code and the sandbox lacks a required isolation
    layer, unless `unsafe`. The sandbox's isolation record, or None when no task runs code."""
    return require_isolation(unsafe) if any(runs_code(t) for t in tasks) else None
