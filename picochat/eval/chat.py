"""Chat evaluation over the `tasks/` interface, and ChatCORE (the metrics of nanochat's chat_eval).

Two kinds of task (`Task.eval_type`):

- categorical (ARC-Easy, ARC-Challenge, MMLU): no sampling. The prompt is the user turn rendered
  for completion (ending in `<|assistant_start|>`); one forward pass gives the logits at that
  last position, i.e. the model's distribution over the first token of its reply. Only the
  example's answer letters compete: the letter whose token has the highest logit is the pick.
  Prompts of different lengths share one right-padded batch (a causal model's real positions
  never see the padding) and each is read at its own last position. A prompt longer than the
  model's context keeps its last tokens (the question's end and the letters survive).
- generative (GSM8K, HumanEval, the demo's word problems, ...): replies are sampled by the one
  shared `Engine` (continuous batching, the calculator tool on), num_samples per problem, each
  problem with its own seed; a sample passes when `task.reward(example, reply)` is positive
  (by default 1.0 exactly when `task.evaluate` passes it), a problem when any of its samples
  does (pass@k, as nanochat), and pass@1 is the mean over all samples. `reply` is the plain text
  of the reply (tool calls and their outputs left out). A prompt too long for the context keeps
  its end (engine.py: fit_prompt, the rule RL's rollouts use too). This one evaluator also
  measures RL's policy (`evaluate_policy`: pass@1, pass@k, mean reward and reply length).

ChatCORE, like CORE, centres each accuracy on chance, `(acc - baseline) / (1 - baseline)`, with
baseline 0.25 for the 4-way multiple-choice tasks and 0 for open-ended ones, and averages over
ARC-Easy, ARC-Challenge, MMLU, GSM8K and HumanEval. With only some of those five evaluated the
mean is labelled "ChatCORE-<n>" and must not be reported as ChatCORE.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from picochat.engine.engine import Engine, SamplingParams, derive_seed, fit_prompt
from picochat.tasks.common import Task
from picochat.tokenizer.chat import prompt_ids

# nanochat's chat_eval: the five tasks of ChatCORE and their chance accuracies
CHATCORE_TASKS = ("arc_easy", "arc_challenge", "mmlu", "gsm8k", "humaneval")
BASELINES = {"arc_easy": 0.25, "arc_challenge": 0.25, "mmlu": 0.25, "gsm8k": 0.0, "humaneval": 0.0}
DISPLAY_NAMES = {"arc_easy": "ARC-Easy", "arc_challenge": "ARC-Challenge", "mmlu": "MMLU", "gsm8k": "GSM8K",
                 "humaneval": "HumanEval", "wordproblems": "demo arithmetic", "spellingbee": "SpellingBee"}

Log = Callable[[str], None] | None


@dataclass
class TaskResult:
    """One task's outcome. For categorical tasks num_samples is 1 and passed == correct_samples."""

    name: str
    eval_type: str
    passed: int                   # problems solved (by at least one sample)
    total: int                    # problems evaluated
    correct_samples: int          # samples that passed, over all problems
    num_samples: int = 1
    baseline: float = 0.0
    seconds: float = 0.0
    cropped: int = 0              # prompts cut to fit the model's context
    # generative only: summed over all samples, and each problem's passing samples (by task index)
    reward: float = 0.0
    tokens: int = 0
    per_problem: dict[int, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def pass1(self) -> float:
        return self.correct_samples / (self.total * self.num_samples) if self.total else 0.0

    @property
    def centered(self) -> float:
        return centered(self.accuracy, self.baseline)

    def to_dict(self) -> dict:
        return {"name": self.name, "eval_type": self.eval_type, "accuracy": self.accuracy, "pass@1": self.pass1,
                f"pass@{self.num_samples}": self.accuracy, "passed": self.passed, "total": self.total,
                "num_samples": self.num_samples, "baseline": self.baseline, "centered": self.centered,
                "seconds": self.seconds, "cropped": self.cropped, **self.extra}


def centered(accuracy: float, baseline: float) -> float:
    """Accuracy rescaled so that chance is 0 and perfect is 1."""
    return (accuracy - baseline) / (1.0 - baseline)


def chance_baseline(task: Task, examples: Sequence[dict] = ()) -> float:
    """nanochat's fixed baseline for its five tasks; else 1/(number of letters) averaged over the
    examples for a categorical task, and 0 for a generative one."""
    if task.name in BASELINES:
        return BASELINES[task.name]
    if task.eval_type == "categorical" and examples:
        return sum(1.0 / len(ex["letters"]) for ex in examples) / len(examples)
    return 0.0


def chatcore(accuracies: dict[str, float]) -> tuple[str, float] | None:
    """(label, value): the centred mean over the ChatCORE tasks present in `accuracies` (keyed by
    task name); the label is "ChatCORE" with all five, "ChatCORE-<n>" with n of them; None with none."""
    present = [t for t in CHATCORE_TASKS if t in accuracies]
    if not present:
        return None
    value = sum(centered(accuracies[t], BASELINES[t]) for t in present) / len(present)
    return ("ChatCORE" if len(present) == len(CHATCORE_TASKS) else f"ChatCORE-{len(present)}"), value


# ----------------------------------------------------------------------------- categorical


def letter_token_ids(tokenizer, letters: Sequence[str], cache: dict[str, int] | None = None) -> list[int]:
    """The token id of each answer letter; each must encode to exactly one token."""
    cache = {} if cache is None else cache
    out = []
    for letter in letters:
        if letter not in cache:
            ids = tokenizer.encode(letter)
            if len(ids) != 1:
                raise ValueError(f"answer letter {letter!r} is {len(ids)} tokens; categorical scoring needs one")
            cache[letter] = ids[0]
        out.append(cache[letter])
    return out


def pick_letter(last_logits: torch.Tensor, letters: Sequence[str], letter_ids: Sequence[int]) -> str:
    """The letter whose token has the highest logit at the answer position (ties: the first)."""
    scores = last_logits[list(letter_ids)]
    return letters[int(scores.argmax().item())]


@torch.no_grad()
def categorical_picks(model: torch.nn.Module, tokenizer, examples: Sequence[dict], *,
                      device: torch.device | str = "cpu", max_len: int | None = None,
                      letter_cache: dict[str, int] | None = None) -> tuple[list[str], int]:
    """(the picked letter of each example, how many prompts were cropped), in one forward pass."""
    prompts = [prompt_ids(tokenizer, ex) for ex in examples]
    cropped = 0
    if max_len is not None:
        cropped = sum(len(p) > max_len for p in prompts)
        prompts = [p[-max_len:] for p in prompts]
    width = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), width), tokenizer.bos_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        idx[i, :len(p)] = torch.tensor(p, dtype=torch.long)
    logits = model(idx.to(device))                                   # (B, T, V)
    picks = []
    for i, (ex, p) in enumerate(zip(examples, prompts)):
        ids = letter_token_ids(tokenizer, ex["letters"], letter_cache)
        picks.append(pick_letter(logits[i, len(p) - 1], ex["letters"], ids))
    return picks, cropped


def evaluate_categorical(model: torch.nn.Module, tokenizer, task: Task, indices: Sequence[int], *,
                         batch_size: int = 8, device: torch.device | str = "cpu", max_len: int | None = None,
                         log: Log = None) -> TaskResult:
    """Accuracy of the letter picks over task[i] for i in indices (this rank's share)."""
    passed, cropped, cache, seen = 0, 0, {}, []
    for start in range(0, len(indices), batch_size):
        batch = [task[i] for i in indices[start:start + batch_size]]
        picks, c = categorical_picks(model, tokenizer, batch, device=device, max_len=max_len, letter_cache=cache)
        passed += sum(task.evaluate(ex, pick) for ex, pick in zip(batch, picks))
        cropped += c
        seen += batch
        if log:
            log(f"\r\033[K{task.name}: {passed}/{len(seen)} ({100 * passed / len(seen):.2f}%)")
    return TaskResult(task.name, "categorical", passed, len(seen), passed, 1,
                      chance_baseline(task, seen), cropped=cropped)


# ----------------------------------------------------------------------------- generative


def evaluate_generative(engine, tokenizer, task: Task, indices: Sequence[int], *, num_samples: int = 1,
                        max_new_tokens: int = 256, temperature: float = 0.0, top_k: int = 50,
                        max_rows: int = 32, seed: int | None = 0, log: Log = None) -> TaskResult:
    """pass@num_samples and pass@1 over task[i] for i in indices, sampled through the engine.

    Problem i samples with its own seed, derive_seed(seed, i): the same samples on any number of
    ranks, and the same at every evaluation (RL compares its evals problem by problem). Prompts are
    cut by the engine's `fit_prompt`. Each sample is graded once, by `task.reward` (for a task
    without its own reward: 1.0 when `evaluate` passes it, else 0.0), and passes when its reward is
    positive."""
    examples = [task[i] for i in indices]
    if not examples:
        return TaskResult(task.name, "generative", 0, 0, 0, num_samples, chance_baseline(task))
    context = engine.model.config.sequence_len
    full = [prompt_ids(tokenizer, ex) for ex in examples]
    prompts = [fit_prompt(p, context, max_new_tokens) for p in full]
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, n=num_samples)
    seeds = None if seed is None else [derive_seed(seed, i) for i in indices]
    texts: list[list[list[str]]] = [[[] for _ in range(num_samples)] for _ in examples]
    done = [0] * len(examples)
    r = TaskResult(task.name, "generative", 0, 0, 0, num_samples, chance_baseline(task),
                   cropped=sum(len(p) < len(f) for p, f in zip(prompts, full)))
    for ev in engine.stream(prompts, params, max_rows=max(max_rows, num_samples), seeds=seeds):
        texts[ev.key][ev.sample] += [t for seg, t in ev.text if seg == "text"]
        r.tokens += 1  # every token of the reply, forced tool output included
        if ev.finish is None:
            continue
        done[ev.key] += 1
        if done[ev.key] < num_samples:
            continue
        ex = examples[ev.key]
        rewards = [float(task.reward(ex, "".join(parts))) for parts in texts[ev.key]]
        passing = sum(x > 0 for x in rewards)
        r.passed, r.correct_samples, r.total = r.passed + (passing > 0), r.correct_samples + passing, r.total + 1
        r.reward += sum(rewards)
        r.per_problem[indices[ev.key]] = passing
        if log:
            log(f"\r\033[K{task.name}: {r.passed}/{r.total} ({100 * r.passed / r.total:.2f}%)")
    return r


# ----------------------------------------------------------------------------- one task, all ranks


def _all_reduce(result: TaskResult, device: torch.device | str) -> TaskResult:
    """Sum the counts of every rank's share (torchrun); a no-op in a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return result
    t = torch.tensor([result.passed, result.total, result.correct_samples, result.cropped, result.tokens,
                      result.reward], dtype=torch.float64, device=device)  # float64: counts stay exact
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    *counts, result.reward = t.tolist()
    result.passed, result.total, result.correct_samples, result.cropped, result.tokens = (int(v) for v in counts)
    shares: list = [None] * dist.get_world_size()
    dist.all_gather_object(shares, result.per_problem)
    result.per_problem = {i: c for share in shares for i, c in share.items()}
    return result


def evaluate_task(task: Task, model: torch.nn.Module, tokenizer, *, engine=None, max_problems: int = -1,
                  batch_size: int = 8, num_samples: int = 1, max_new_tokens: int = 256,
                  temperature: float = 0.0, top_k: int = 50, rank: int = 0, world_size: int = 1,
                  device: torch.device | str = "cpu", log: Log = None) -> TaskResult:
    """Evaluate the first `max_problems` examples of `task` (-1 = all), split over ranks."""
    n = len(task) if max_problems < 0 else min(len(task), max_problems)
    t0 = time.time()
    if task.eval_type == "categorical":
        from picochat.eval.core import model_max_len

        # spread whole batches over ranks, so each rank's batches are as full as on one rank
        batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
        indices = [i for b in batches[rank::world_size] for i in b]
        result = evaluate_categorical(model, tokenizer, task, indices, batch_size=batch_size,
                                      device=device, max_len=model_max_len(model), log=log)
    elif task.eval_type == "generative":
        if engine is None:
            engine = Engine(model, tokenizer)
        result = evaluate_generative(engine, tokenizer, task, list(range(rank, n, world_size)),
                                     num_samples=num_samples, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_k=top_k, max_rows=batch_size, log=log)
    else:
        raise ValueError(f"task {task.name} has eval_type {task.eval_type!r}; it cannot be evaluated alone")
    if log:
        log("\n")
    result = _all_reduce(result, device)
    result.seconds = time.time() - t0
    return result


# ----------------------------------------------------------------------------- RL's held-out eval

POLICY_SEED = 7_777  # mixed with the run seed: every evaluation of an RL run samples with the same seeds


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k samples passes) from n samples of which c pass:
    1 - C(n-c, k) / C(n, k), computed as a stable product (Chen et al. 2021, arXiv:2107.03374, Fig. 3)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= c <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def evaluate_policy(engine, task: Task, rl, *, seed: int, rank: int = 0, world_size: int = 1) -> dict:
    """RL's eval of the policy (train/rl.py receives it from picochat/cli/train.py: rl_main): `rl.pass_k`
    samples of each of the first `rl.eval_problems` problems of `task` at `rl.eval_temperature`,
    through `evaluate_generative`, split over ranks. pass@1 and pass@k are means over problems of
    the unbiased estimator; pass@1's standard error is over problems, and `correct` (passing
    samples per problem, by index) lets two evals of a run be compared problem by problem
    (train/rl.py: paired_stderr)."""
    n = min(len(task), rl.eval_problems)
    r = evaluate_generative(engine, engine.tokenizer, task, list(range(rank, n, world_size)),
                            num_samples=rl.pass_k, max_new_tokens=rl.max_new_tokens,
                            temperature=rl.eval_temperature, top_k=rl.top_k, max_rows=rl.max_rows,
                            seed=derive_seed(seed, POLICY_SEED))
    r = _all_reduce(r, engine.model.device)
    k, m = r.num_samples, max(r.total, 1)
    correct = [c for _, c in sorted(r.per_problem.items())]
    p1 = [pass_at_k(k, c, 1) for c in correct]
    var = max(sum(x * x for x in p1) / m - (sum(p1) / m) ** 2, 0.0)
    return {"pass@1": sum(p1) / m, "pass@k": sum(pass_at_k(k, c, k) for c in correct) / m,
            "mean_reward": r.reward / (m * k), "mean_length": r.tokens / (m * k),
            "pass@1_stderr": math.sqrt(var / m), "problems": r.total, "k": k, "correct": correct}


# ----------------------------------------------------------------------------- the command


def merge_results(path, record: dict) -> dict:
    """The chat.json at `path` with `record`'s tasks added (a task evaluated again replaces its
    entry), and ChatCORE recomputed over everything the file now holds."""
    import json
    from pathlib import Path

    old: dict = {}
    if Path(path).exists():
        try:
            old = json.loads(Path(path).read_text())
        except ValueError:
            old = {}  # a damaged file is replaced by this run's results
    merged = {**old, **{k: v for k, v in record.items() if k != "tasks"}}
    merged["tasks"] = {**old.get("tasks", {}), **record.get("tasks", {})}
    score = chatcore({k: v["accuracy"] for k, v in merged["tasks"].items()})
    merged["chatcore"] = None if score is None else {"metric": score[0], "score": score[1]}
    return merged


def default_tasks(preset: str) -> str:
    """The five ChatCORE tasks; the demo preset's offline arithmetic instead (no data files)."""
    return "wordproblems:test:100" if preset == "demo" else "arc_easy,arc_challenge,mmlu,gsm8k:test,humaneval"


def load_tasks(spec: str, home: str, mirror: str) -> tuple[list[str], list[Task]]:
    """The tasks of a comma-separated spec. A task whose data is missing is skipped with a note
    (ChatCORE is then labelled with the number of tasks it covers); none at all is an error."""
    from picochat.common.errors import UserError
    from picochat.common.log import print0
    from picochat.tasks.registry import make_task

    specs, tasks, errors = [], [], []
    for s in (s.strip() for s in spec.split(",") if s.strip()):
        try:
            tasks.append(make_task(s, home=home, mirror=mirror))
            specs.append(s)
        except UserError as e:
            errors.append(e)
            print0(f"skipping {s}: {e}")
    if not tasks:
        raise errors[0] if errors else UserError("--task is empty; give task specs such as arc_easy,gsm8k:test")
    return specs, tasks


def main(cfg) -> None:
    """`picochat eval chat`: evaluate a finished model on chat tasks; writes <stage>/eval/chat.json."""
    from picochat.common.device import autocast_for, init_distributed
    from picochat.common.io import atomic_write_json
    from picochat.common.log import banner, is_main_process, print0
    from picochat.common.paths import stage_dir
    from picochat.run_layout import load_model_and_tokenizer
    from picochat.tasks.humaneval import check_sandbox, runs_code, sandbox_record
    ce = cfg.chateval
    info, device = init_distributed(cfg.run.device)
    specs, tasks = load_tasks(ce.task or default_tasks(cfg.run.preset), cfg.run.home, cfg.run.mirror)
    sandbox = check_sandbox(tasks, ce.unsafe_sandbox)
    model, tokenizer, stage = load_model_and_tokenizer(cfg.run.run, cfg.run.home, ce.stage, device)
    engine = Engine(model, tokenizer)
    banner(f"chat eval: run '{cfg.run.run}', stage {stage} on {device}")
    results = {}
    # A live counter rewrites one terminal line; in a log file it would be one run-on line.
    live = (lambda s: print0(s, end="")) if sys.stdout.isatty() else None
    with autocast_for(device, ce.dtype):
        for spec, task in zip(specs, tasks):
            r = evaluate_task(task, model, tokenizer, engine=engine, max_problems=ce.max_problems,
                              batch_size=ce.batch_size, num_samples=ce.num_samples,
                              max_new_tokens=ce.max_new_tokens, temperature=ce.temperature, top_k=ce.top_k,
                              rank=info.rank, world_size=info.world_size, device=device,
                              log=live)
            r.extra = {"spec": spec}
            if runs_code(task):  # the layers active in every grading of this task (the report shows them)
                r.extra["sandbox"] = sandbox_record([task], sandbox)
            if r.eval_type == "generative":
                r.extra.update(temperature=ce.temperature, top_k=ce.top_k, max_new_tokens=ce.max_new_tokens)
            results[task.name] = r.to_dict()
            print0(("\r\033[K" if live else "") + f"{DISPLAY_NAMES.get(task.name, task.name)}: {100 * r.accuracy:.2f}% "
                   f"({r.passed}/{r.total}, {r.seconds:.1f}s)" + (f"; pass@1 {100 * r.pass1:.2f}%"
                                                                  if r.num_samples > 1 else ""))
    if is_main_process():
        path = stage_dir(cfg.run.run, stage, cfg.run.home) / "eval" / "chat.json"
        merged = merge_results(path, {"stage": stage, "tasks": results})
        atomic_write_json(path, merged)
        if merged["chatcore"]:
            print0(f"{merged['chatcore']['metric']}: {merged['chatcore']['score']:.4f}")
        print0(f"wrote {path}")
