"""The Task interface: a dataset of conversations that also knows how to score a reply.

One object serves three uses (the design nanochat's `tasks/common.py` showed works well):
mid-training and SFT read `task[i]["messages"]`, evaluation asks `task.evaluate(example, reply)`,
and RL asks `task.reward(example, reply)`.

Two kinds of evaluation:
- "categorical": the example carries `letters` (the choices, e.g. ("A", "B", "C", "D")) and
  `answer` (the gold letter). The evaluator scores the logits of each letter's token right after
  `<|assistant_start|>` and picks the highest; `evaluate(example, letter)` checks the pick.
- "generative": the evaluator samples a reply; `evaluate` extracts the answer from its text.

Mixing (`TaskMixture`, with exact proportions and a seeded shuffle) and curricula
(`TaskSequence`) are Tasks too, so a training stage only ever sees one Task.
"""

from __future__ import annotations

import bisect
import gzip
import json
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from picochat.common.errors import UserError


class Task:
    """A sized, indexable collection of examples: `{"messages": [...], ...task fields}`."""

    name: str = "task"
    eval_type: str = "generative"

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self[i]

    def evaluate(self, example: dict, reply: str) -> bool:
        raise NotImplementedError(f"task {self.name} has no evaluation")

    def reward(self, example: dict, reply: str) -> float:
        """The RL reward; by default 1.0 for a correct reply and 0.0 otherwise."""
        return float(self.evaluate(example, reply))

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"task index must be an int, got {type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for task {self.name} of {n} examples")
        return int(i)


class CategoricalTask(Task):
    """Multiple choice: the assistant answers with one letter, scored by the letters' logits."""

    eval_type = "categorical"

    def evaluate(self, example: dict, reply: str) -> bool:
        return reply.strip() == example["answer"]

    @staticmethod
    def gold(example: dict) -> str:
        return example["answer"]


def render_choices(question: str, letters: Sequence[str], choices: Sequence[str]) -> str:
    """The user prompt of a multiple-choice question.

    Each choice is followed by `=LETTER` with no space before the letter: the assistant answers
    with the bare letter, and " A" and "A" are different tokens, so the prompt shows the model the
    exact token it must produce. Letter-after-choice also binds better in small models (a finding
    reported in nanochat's task code).
    """
    lines = [f"Multiple choice question: {question}"]
    lines += [f"- {choice}={letter}" for letter, choice in zip(letters, choices, strict=True)]
    lines.append("")
    lines.append("Answer with the letter of the correct choice only.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- answers

_FINAL_RE = re.compile(r"####\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\.[0-9]+)")


def extract_final_number(text: str) -> str | None:
    """The number after the last `####` marker, without thousands commas; None if absent.

    GSM8K's own grader (openai/grade-school-math, dataset.py) takes the text after "####" and
    strips commas; we do the same but also accept a trailing "." or "$" around the number.
    """
    matches = _FINAL_RE.findall(text.replace("$", ""))
    return matches[-1].replace(",", "") if matches else None


def same_number(a: str | None, b: str | None) -> bool:
    """Numeric equality of two decimal strings ("18" == "18.00"); False if either is missing."""
    if a is None or b is None:
        return False
    try:
        from decimal import Decimal, InvalidOperation

        return Decimal(a) == Decimal(b)
    except (InvalidOperation, ValueError):
        return a == b


# ----------------------------------------------------------------------------- data files


def resolve_split_files(name: str, split: str, path: str | Path | None = None, *,
                        home: str = "", mirror: str = "") -> list[Path]:
    """A task's data files: `path` if given (a file, or a folder of files), else the files of
    split `split` of data source `name` through the data layer (a mirror's copy or the publisher's
    download, whichever is here or can be fetched), which raises a UserError saying what to do."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise UserError(f"task data file {p} does not exist; check the path")
        return [p]
    from picochat.data.download import fetch_split

    return fetch_split(name, split, home=home, mirror=mirror)


def read_records(paths: str | Path | list[Path]) -> list[dict]:
    """Rows of .jsonl, .jsonl.gz, .json (a list) or .parquet files, as dicts, file after file."""
    if isinstance(paths, list):
        return [row for p in paths for row in read_records(p)]
    path = Path(paths)
    suffixes = "".join(path.suffixes[-2:])
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            if suffixes.startswith(".json") and not suffixes.startswith(".jsonl"):
                rows = json.load(f)
                return list(rows)
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError, EOFError) as e:  # pyarrow's errors derive from these too
        raise UserError(f"cannot read task data file {path} ({e}); re-download it or check the mirror") from e


def permutation(n: int, seed: int | None) -> np.ndarray:
    """A deterministic shuffle of range(n), or the identity when seed is None."""
    if seed is None:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)


class GeneratedTask(Task):
    """A task whose examples are made on demand (the demo's synthetic tasks, the spelling tasks):
    example i of a split is a pure function of `random.Random("<task>/<split>/<seed>/<i>")`, so the
    train and test streams are seeded from disjoint strings and each example is reproducible on its
    own. `size` is how many examples the split has."""

    eval_type = "generative"
    SPLITS = ("train", "test")

    def __init__(self, split: str = "train", size: int = 2000, seed: int = 0):
        if split not in self.SPLITS:
            raise ValueError(f"{self.name} split must be one of {self.SPLITS}, got {split!r}")
        self.split, self.size, self.seed = split, size, seed

    def __len__(self) -> int:
        return self.size

    def _rng(self, i: int) -> random.Random:
        # string seeds are hashed with SHA-512 by `random`, so streams are stable across runs
        return random.Random(f"{self.name}/{self.split}/{self.seed}/{self._check_index(i)}")


class RecordTask(Task):
    """A task over a list of file rows, seen in a seeded order (so a prefix is a fair sample)."""

    def __init__(self, rows: list[dict], seed: int | None = 42):
        self.rows = rows
        self.order = permutation(len(rows), seed)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.make_example(self.rows[int(self.order[self._check_index(i)])])

    def make_example(self, row: dict) -> dict:
        raise NotImplementedError


# ----------------------------------------------------------------------------- combinators


class Subset(Task):
    """A view of a task's examples start, start+step, ... before stop (e.g. the first N to evaluate)."""

    def __init__(self, task: Task, start: int = 0, stop: int | None = None, step: int = 1):
        if start < 0 or step < 1 or (stop is not None and stop < start):
            raise ValueError(f"bad slice start={start} stop={stop} step={step}")
        self.task = task
        self.indices = range(start, min(len(task), len(task) if stop is None else stop), step)
        self.name, self.eval_type = task.name, task.eval_type

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.task[self.indices[self._check_index(i)]]

    def evaluate(self, example: dict, reply: str) -> bool:
        return self.task.evaluate(example, reply)

    def reward(self, example: dict, reply: str) -> float:
        return self.task.reward(example, reply)


class _Composite(Task):
    """Shared parts of mixtures and sequences: tag examples with their task, delegate scoring."""

    def __init__(self, tasks: Sequence[Task], name: str):
        if not tasks:
            raise UserError(f"{name} needs at least one task")
        self.tasks = list(tasks)
        self.name = name
        kinds = {t.eval_type for t in self.tasks}
        self.eval_type = kinds.pop() if len(kinds) == 1 else "mixed"
        self._by_name: dict[str, Task] = {}
        for t in self.tasks:
            self._by_name.setdefault(t.name, t)

    def _tagged(self, task_idx: int, local_idx: int) -> dict:
        example = dict(self.tasks[task_idx][local_idx])
        example.setdefault("task", self.tasks[task_idx].name)
        return example

    def _task_of(self, example: dict) -> Task:
        name = example.get("task")
        if name not in self._by_name:
            raise ValueError(f"example has no known 'task' field ({name!r}); take it from this {self.name}")
        return self._by_name[name]

    def evaluate(self, example: dict, reply: str) -> bool:
        return self._task_of(example).evaluate(example, reply)

    def reward(self, example: dict, reply: str) -> float:
        return self._task_of(example).reward(example, reply)


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` into integer counts proportional to `weights` (largest-remainder method)."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) == 0 or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise UserError(f"mixture weights must be non-negative with a positive sum, got {list(weights)}")
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    # hand the leftover units to the largest remainders; ties go to the earlier task
    leftover = total - int(counts.sum())
    order = sorted(range(len(w)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in order[:leftover]:
        counts[k] += 1
    return counts.tolist()


class TaskMixture(_Composite):
    """Several tasks interleaved in a seeded random order, in configured proportions.

    weights=None: every example of every task exactly once (proportions follow the sizes).
    weights given: task k gets exactly apportion(size, weights)[k] examples, where `size` defaults
    to the total number of examples. A task asked for more examples than it has repeats them,
    each pass in a fresh seeded order, so oversampling never duplicates within a pass; one asked
    for fewer gives a seeded random subset.
    """

    def __init__(self, tasks: Sequence[Task], weights: Sequence[float] | None = None, *,
                 size: int | None = None, seed: int = 0, name: str = "mixture"):
        super().__init__(tasks, name)
        lengths = [len(t) for t in self.tasks]
        if any(n == 0 for n in lengths):
            empty = [t.name for t, n in zip(self.tasks, lengths, strict=True) if n == 0]
            raise UserError(f"{name}: tasks {empty} have no examples; drop them or fix their data")
        if weights is not None and len(weights) != len(self.tasks):
            raise UserError(f"{name}: {len(weights)} weights for {len(self.tasks)} tasks")
        total = sum(lengths) if size is None else size
        self.counts = lengths if weights is None and size is None else apportion(
            total, lengths if weights is None else weights)
        rng = np.random.default_rng(seed)
        task_ids, local_ids = [], []
        for k, (count, n) in enumerate(zip(self.counts, lengths, strict=True)):
            passes = -(-count // n)  # ceil
            picks = np.concatenate([rng.permutation(n) for _ in range(passes)])[:count] if count else []
            task_ids.append(np.full(count, k, dtype=np.int32))
            local_ids.append(np.asarray(picks, dtype=np.int64))
        shuffle = rng.permutation(total)
        self.task_ids = np.concatenate(task_ids)[shuffle]
        self.local_ids = np.concatenate(local_ids)[shuffle]

    def __len__(self) -> int:
        return len(self.task_ids)

    def __getitem__(self, i: int) -> dict:
        i = self._check_index(i)
        return self._tagged(int(self.task_ids[i]), int(self.local_ids[i]))


class TaskSequence(_Composite):
    """Tasks one after another, in order (a curriculum)."""

    def __init__(self, tasks: Sequence[Task], name: str = "sequence"):
        super().__init__(tasks, name)
        self.ends = np.cumsum([len(t) for t in self.tasks]).tolist()

    def __len__(self) -> int:
        return self.ends[-1]

    def __getitem__(self, i: int) -> dict:
        i = self._check_index(i)
        k = bisect.bisect_right(self.ends, i)
        start = self.ends[k - 1] if k else 0
        return self._tagged(k, i - start)


def describe(task: Task) -> dict[str, Any]:
    """A small summary (for logs and reports): name, type, size and, for mixtures, the counts."""
    info: dict[str, Any] = {"name": task.name, "eval_type": task.eval_type, "examples": len(task)}
    if isinstance(task, TaskMixture):
        info["counts"] = {t.name: c for t, c in zip(task.tasks, task.counts, strict=True)}
    return info
