"""CORE: the in-context-learning score of the DCLM paper (Li et al. 2024, arXiv:2406.11794), computed
the way nanochat computes it (nanochat/core_eval.py + scripts/base_eval.py), so numbers compare.

Each task is a jsonl file of one of three types; every example becomes 1..n token rows, each
`[bos] + encode(prompt)`, scored with one forward pass of the base model:

- multiple_choice `{query, choices, gold}`: one prompt per choice, "query<delim>choice". The
  choices differ after their common token prefix; the choice whose continuation tokens have the
  lowest *mean* next-token loss wins (ties: the first).
- schema `{context_options, continuation, gold}`: one prompt per context, "context<delim>cont".
  The rows share a token suffix (the continuation); the context under which that suffix has
  the lowest mean loss wins.
- language_modeling `{context, continuation}`: "context.strip()<delim>continuation"; correct iff
  greedy argmax reproduces every continuation token. The prompt without the continuation is
  stripped, so its tokens are a clean prefix of the full prompt's.

Few-shot examples (k = the task's `num_fewshot`) are drawn from the same file, excluding the
item: `random.Random(1234 + idx).sample(other indices, k)`, each rendered as the item would be
(with its gold answer) and followed by a blank line. With `max_per_task`, the file is first
shuffled with `random.Random(1337)` and cut, and shots come from the cut list (as nanochat).

Accuracy is centred against the task's random baseline RB (percent, eval_meta_data.csv):
`centered = (acc - RB/100) / (1 - RB/100)`, so chance is 0 and perfect is 1. CORE is the mean
centred accuracy over the 22 tasks; when some task files are missing (an offline bundle has 18)
the mean is labelled "CORE-<n>" and must not be reported as CORE.

Rows longer than the model can take (its rotary table) keep their *last* tokens; nanochat's own
models never need that crop at their sizes, so it is a fallback, not a change of metric.
"""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from picochat.common.errors import UserError
from picochat.common.paths import data_dir, mirror_location
from picochat.data.sources import CORE_BUNDLE_DIR as BUNDLE_DIR  # the bundle folder in a mirror / the data dir

NUM_CORE_TASKS = 22


@dataclass(frozen=True)
class TaskSpec:
    label: str
    task_type: str  # multiple_choice | schema | language_modeling
    dataset_uri: str  # path under <bundle>/eval_data/
    num_fewshot: int
    delimiter: str
    random_baseline: float  # percent


@dataclass
class Prepared:
    """One example as token rows, with the span [start, end) of each row that is scored."""

    rows: list[list[int]]
    starts: list[int]
    ends: list[int]
    gold: int  # index of the right row (multiple_choice, schema); 0 for language_modeling


@dataclass
class CoreResult:
    accuracy: dict[str, float]
    centered: dict[str, float]
    examples: dict[str, int]
    missing: list[str] = field(default_factory=list)  # tasks in core.yaml whose file is absent
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        n = len(self.centered)
        return "CORE" if n == NUM_CORE_TASKS and not self.missing else f"CORE-{n}"

    @property
    def score(self) -> float:
        return sum(self.centered.values()) / max(1, len(self.centered))

    def to_dict(self) -> dict:
        return {"metric": self.name, "score": self.score, "accuracy": self.accuracy,
                "centered": self.centered, "examples": self.examples, "missing": self.missing,
                "seconds": self.seconds}


# ---------------------------------------------------------------------------------------------
# The task bundle


def _tasks_present(folder: Path) -> int:
    """How many of the task files that the folder's core.yaml lists are present (0: no bundle)."""
    if not ((folder / "core.yaml").is_file() and (folder / "eval_meta_data.csv").is_file()):
        return 0
    try:
        return 1 + sum((folder / "eval_data" / s.dataset_uri).is_file() for s in load_specs(folder))
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return 0


def bundle_dir(mirror: str = "", home: str = "") -> Path:
    """The CORE bundle: the most complete of <mirror folder>/core_icl and <data dir>/core_icl; with
    neither, nanochat's eval_bundle.zip (source `core`) is fetched through data/download.py (from
    the mirror when one is set) and unpacked into <data dir>/core_icl. A mirror folder with only some
    task files (shared/data has 18 of 22) is used as it is: the score is then named CORE-18."""
    from picochat.data.download import fetch_unpacked

    candidates = []
    if mirror_location(mirror) and "://" not in mirror_location(mirror):
        candidates.append(Path(mirror_location(mirror)) / BUNDLE_DIR)
    candidates.append(data_dir(home) / BUNDLE_DIR)
    present = [(n, c) for c in candidates if (n := _tasks_present(c))]
    if present:
        return max(present, key=lambda nc: nc[0])[1]  # ties: the mirror's (listed first)
    try:
        return fetch_unpacked("core", home=home, mirror=mirror)
    except UserError as e:
        raise UserError(f"the CORE eval bundle was not found (looked in {', '.join(map(str, candidates))}) "
                        f"and could not be fetched: {e}") from None


def load_specs(bundle: Path) -> list[TaskSpec]:
    """The tasks of core.yaml, in its order, with their random baselines."""
    import yaml

    config = yaml.safe_load((bundle / "core.yaml").read_text(encoding="utf-8"))
    with open(bundle / "eval_meta_data.csv", encoding="utf-8", newline="") as f:
        baselines = {row["Eval Task"]: float(row["Random baseline"]) for row in csv.DictReader(f)}
    specs = []
    for t in config["icl_tasks"]:
        if t["label"] not in baselines:
            raise UserError(f"task {t['label']} has no random baseline in {bundle / 'eval_meta_data.csv'}")
        shots = t["num_fewshot"]
        specs.append(TaskSpec(t["label"], t["icl_task_type"], t["dataset_uri"],
                              int(shots[0] if isinstance(shots, list) else shots),
                              t.get("continuation_delimiter", " "), baselines[t["label"]]))
    return specs


def load_examples(bundle: Path, spec: TaskSpec, max_per_task: int = -1) -> list[dict]:
    path = bundle / "eval_data" / spec.dataset_uri
    with open(path, encoding="utf-8") as f:
        data = [json.loads(line) for line in f if line.strip()]
    random.Random(1337).shuffle(data)  # fixed order, so a cut is the same subset every time
    return data[:max_per_task] if max_per_task > 0 else data


# ---------------------------------------------------------------------------------------------
# Prompts


def fewshot_indices(idx: int, n: int, k: int) -> list[int]:
    """nanochat's draw; k is capped at n - 1 (where nanochat would fail on a tiny `max_per_task`)."""
    k = min(k, n - 1)
    if k <= 0:
        return []
    return random.Random(1234 + idx).sample([i for i in range(n) if i != idx], k)


def render_mc(item: dict, delim: str, shots: list[dict]) -> list[str]:
    head = "".join(f"{s['query']}{delim}{s['choices'][s['gold']]}\n\n" for s in shots)
    return [f"{head}{item['query']}{delim}{choice}" for choice in item["choices"]]


def render_schema(item: dict, delim: str, shots: list[dict]) -> list[str]:
    head = "".join(f"{s['context_options'][s['gold']]}{delim}{s['continuation']}\n\n" for s in shots)
    return [f"{head}{ctx}{delim}{item['continuation']}" for ctx in item["context_options"]]


def render_lm(item: dict, delim: str, shots: list[dict]) -> list[str]:
    """[prompt without the continuation (stripped), prompt with it]."""
    head = "".join(f"{s['context'].strip()}{delim}{s['continuation']}\n\n" for s in shots)
    without = f"{head}{item['context'].strip()}{delim}"
    return [without.strip(), without + item["continuation"]]


def _common_prefix(rows: list[list[int]]) -> int:
    n = min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return n


def _common_suffix(rows: list[list[int]]) -> int:
    return _common_prefix([r[::-1] for r in rows])


def prepare(idx: int, data: list[dict], spec: TaskSpec, tokenizer) -> Prepared:
    """Render example `idx` (with its few-shot examples) and tokenize it into scored rows."""
    item = data[idx]
    shots = [data[i] for i in fewshot_indices(idx, len(data), spec.num_fewshot)]
    render = {"multiple_choice": render_mc, "schema": render_schema, "language_modeling": render_lm}
    if spec.task_type not in render:
        raise ValueError(f"unknown CORE task type {spec.task_type!r}")
    prompts = render[spec.task_type](item, spec.delimiter, shots)
    rows = [tokenizer.encode(p, prepend=tokenizer.bos_id) for p in prompts]
    if spec.task_type == "multiple_choice":
        start = _common_prefix(rows)
        return Prepared(rows, [start] * len(rows), [len(r) for r in rows], item["gold"])
    if spec.task_type == "schema":
        suffix = _common_suffix(rows)
        return Prepared(rows, [len(r) - suffix for r in rows], [len(r) for r in rows], item["gold"])
    without, with_ = rows
    # The stripped prompt is normally a token prefix of the full one; if a merge crosses the
    # boundary, score from the last shared token instead of failing.
    start = min(len(without), _common_prefix(rows))
    return Prepared([with_], [start], [len(with_)], 0)


def crop(p: Prepared, max_len: int) -> Prepared:
    """Keep the last `max_len` tokens of each row, shifting its scored span (at least 1 token of context)."""
    rows, starts, ends = [], [], []
    for r, s, e in zip(p.rows, p.starts, p.ends):
        cut = max(0, len(r) - max_len)
        rows.append(r[cut:])
        starts.append(max(1, s - cut))
        ends.append(e - cut)
    return Prepared(rows, starts, ends, p.gold)


# ---------------------------------------------------------------------------------------------
# Scoring


def row_scores(logits: torch.Tensor, row: list[int], start: int, end: int) -> tuple[float, bool]:
    """(mean loss of tokens row[start:end], whether greedy argmax predicts all of them)."""
    targets = torch.tensor(row[start:end], device=logits.device)
    pred_logits = logits[start - 1:end - 1].float()  # position t predicts token t + 1
    loss = F.cross_entropy(pred_logits, targets, reduction="mean").item()
    exact = bool((pred_logits.argmax(dim=-1) == targets).all().item())
    return loss, exact


def judge(p: Prepared, task_type: str, scores: list[tuple[float, bool]]) -> bool:
    if task_type == "language_modeling":
        return scores[0][1]
    losses = [s[0] for s in scores]
    return losses.index(min(losses)) == p.gold


def model_max_len(model: torch.nn.Module) -> int | None:
    """The longest row the model can take: picochat's GPT is bounded by its rotary table."""
    cos = getattr(model, "cos", None)
    return int(cos.size(1)) if isinstance(cos, torch.Tensor) and cos.dim() >= 2 else None


@torch.no_grad()
def score_batch(model: torch.nn.Module, batch: list[Prepared], pad_id: int,
                device: torch.device | str) -> list[list[tuple[float, bool]]]:
    """One forward pass over the rows of several examples (right-padded: a causal model's real
    positions do not see the padding)."""
    rows = [r for p in batch for r in p.rows]
    width = max(len(r) for r in rows)
    idx = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        idx[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    logits = model(idx.to(device))
    out, i = [], 0
    for p in batch:
        scores = []
        for r, s, e in zip(p.rows, p.starts, p.ends):
            scores.append(row_scores(logits[i], r, s, e))
            i += 1
        out.append(scores)
    return out


def evaluate_task(model: torch.nn.Module, tokenizer, data: list[dict], spec: TaskSpec, *,
                  device: torch.device | str = "cpu", batch_size: int = 8,
                  max_len: int | None = None) -> float:
    """Accuracy on one task. Examples are grouped into forwards of up to `batch_size` rows; under
    torchrun each rank takes every world_size-th example and the counts are summed."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    max_len = max_len or model_max_len(model)
    correct = torch.zeros(len(data), dtype=torch.float32, device=device)
    pending: list[tuple[int, Prepared]] = []

    def flush() -> None:
        results = score_batch(model, [p for _, p in pending], tokenizer.bos_id, device)
        for (i, p), scores in zip(pending, results):
            correct[i] = float(judge(p, spec.task_type, scores))
        pending.clear()

    for i in range(rank, len(data), world):
        p = prepare(i, data, spec, tokenizer)
        if max_len is not None:
            p = crop(p, max_len)
        if pending and sum(len(q.rows) for _, q in pending) + len(p.rows) > batch_size:
            flush()
        pending.append((i, p))
    if pending:
        flush()
    if world > 1:
        dist.all_reduce(correct, op=dist.ReduceOp.SUM)
    return correct.mean().item() if len(data) else 0.0


def centered(accuracy: float, random_baseline: float) -> float:
    rb = 0.01 * random_baseline
    return (accuracy - rb) / (1.0 - rb)


def evaluate_core(model: torch.nn.Module, tokenizer, bundle: Path, *, tasks: list[str] | None = None,
                  max_per_task: int = -1, batch_size: int = 8, device: torch.device | str = "cpu",
                  max_len: int | None = None, log: Callable[[str], None] | None = print) -> CoreResult:
    """Run every task of the bundle whose file exists (or only `tasks`); see the module docstring."""
    specs = load_specs(bundle)
    if tasks:
        unknown = sorted(set(tasks) - {s.label for s in specs})
        if unknown:
            raise UserError(f"unknown CORE task(s) {', '.join(unknown)}; known: {', '.join(s.label for s in specs)}")
        specs = [s for s in specs if s.label in tasks]
    result = CoreResult({}, {}, {})
    for spec in specs:
        if not (bundle / "eval_data" / spec.dataset_uri).is_file():
            result.missing.append(spec.label)
            continue
        t0 = time.time()
        data = load_examples(bundle, spec, max_per_task)
        acc = evaluate_task(model, tokenizer, data, spec, device=device, batch_size=batch_size, max_len=max_len)
        result.accuracy[spec.label] = acc
        result.centered[spec.label] = centered(acc, spec.random_baseline)
        result.examples[spec.label] = len(data)
        result.seconds[spec.label] = time.time() - t0
        if log:
            log(f"{spec.label:<34} {spec.num_fewshot:>2}-shot {spec.task_type:<17} n={len(data):<6} "
                f"acc {acc:.4f}  centered {result.centered[spec.label]:+.4f}  ({result.seconds[spec.label]:.1f}s)")
    if log:
        note = f" (missing: {', '.join(result.missing)})" if result.missing else ""
        log(f"{result.name}: {result.score:.4f}{note}")
    return result
