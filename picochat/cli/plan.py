"""How much model work each step of the speedrun does, in tokens (costed by picochat/cli/cost.py).

Per step: tokens trained (forward + backward), tokens scored (forward only) and tokens generated
(decoded one at a time). Where the numbers come from:
  - base: the horizon rule (train/horizon.py), exact.
  - mid/SFT: `num_steps` x batch when set; else one pass over the mixture: conversations per task
    (x passes) times tokens per conversation, each crop at the context, in whole steps. Tokens per
    conversation are measured on a sample of the task's examples when its files are here (with the
    run's tokenizer if it has one, else at CHARS_PER_TOKEN), or taken from TASK_SIZES when not.
  - RL: steps x prompts x samples: prompts prefilled, at most max_new_tokens generated per sample,
    prompt + reply trained (x updates per batch; the reference model's forward when kl_coef > 0),
    plus the held-out evals (problems x samples x max_new_tokens) before training and every eval_every.
  - evals: bpb (max_bytes of text), CORE (examples x shots x choices, sized from the bundle's files
    when here), chat evals (prompts scored; generative tasks also generate up to max_new_tokens).
Generated-token counts are upper bounds (a reply may stop early); every estimate says what it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from picochat.common.errors import UserError
from picochat.config import Preset, RunConfig

CHARS_PER_TOKEN = 4.5  # assumed when the run has no tokenizer yet (a 32k BPE on English text: ~4-5)
SAMPLE = 64            # examples measured per task

# (task, split) -> (conversations, tokens per conversation) for tasks whose files are not here.
# Counts: the datasets' published sizes (SmolTalk: "smol-smoltalk", 460K train / 24K test rows as
# nanochat's tasks/smoltalk.py states; MMLU auxiliary_train: 99,842 rows; GSM8K 7,473 / 1,319;
# ARC-Easy 2,251 / 2,376, ARC-Challenge 1,119 / 1,172; HumanEval 164). Tokens per conversation are
# assumptions at ~4.5 characters per token, not measurements.
TASK_SIZES: dict[tuple[str, str], tuple[int, int]] = {
    ("smoltalk", "train"): (460_000, 450), ("smoltalk", "test"): (24_000, 450),
    ("mmlu", "auxiliary_train"): (99_842, 400), ("mmlu", "test"): (14_042, 110),
    ("gsm8k", "train"): (7_473, 220), ("gsm8k", "test"): (1_319, 220),
    ("arc_easy", "train"): (2_251, 90), ("arc_easy", "test"): (2_376, 90),
    ("arc_challenge", "train"): (1_119, 100), ("arc_challenge", "test"): (1_172, 100),
    ("humaneval", "test"): (164, 150),
    ("simplespelling", "train"): (10_000, 40), ("spellingbee", "train"): (10_000, 90),
    ("identity", "train"): (48, 120),
}
CATEGORICAL = {"mmlu", "arc_easy", "arc_challenge"}  # scored by one forward pass, nothing generated
GENERATED = {"simplespelling", "spellingbee", "identity"}  # made from a word list or templates: n is the size
CORE_ASSUMED = (22, 1000, 3, 600)  # no bundle here: tasks, examples per task, sequences each, tokens each


# The speedrun's steps, in order (picochat/cli/speedrun.py runs them; the dry-run sizes them).
@dataclass(frozen=True)
class Step:
    name: str                      # shown in banners and accepted by --skip
    words: tuple[str, ...]         # the CLI command it runs
    argv: tuple[str, ...] = ()     # extra arguments for that command
    optional: bool = False         # a UserError here is reported and the run goes on (e.g. no eval data)


CORE_PER_TASK = 100  # CORE examples per task in the speedrun, unless the preset's [eval] row sets fewer


def _stage_evals(stage: str, chat: bool) -> tuple[Step, ...]:
    """Every stage is measured the same way, so each report-card row has a number in every column:
    bits per byte and CORE for every model, the chat evals for the chat stages."""
    steps = (Step(f"bpb-{stage}", ("eval", "bpb"), ("--stage", stage), optional=True),
             Step(f"core-{stage}", ("eval", "core"), ("--stage", stage), optional=True))
    return steps + ((Step(f"eval-{stage}", ("eval", "chat"), ("--stage", stage), optional=True),) if chat else ())


PLAN: tuple[Step, ...] = (
    Step("tokenizer", ("tokenizer", "train")),
    Step("base", ("train", "base")),
    *_stage_evals("base", chat=False),
    Step("samples-base", ("eval", "samples"), ("--stage", "base"), optional=True),
    Step("mid", ("train", "mid")),
    *_stage_evals("mid", chat=True),
    Step("sft", ("train", "sft")),
    *_stage_evals("sft", chat=True),
    Step("rl", ("train", "rl")),
    *_stage_evals("rl", chat=True),
    Step("report", ("report",)),
)


def core_per_task(max_per_task: int) -> int:
    """The speedrun's CORE sample per task: the configured cap if there is one, else CORE_PER_TASK."""
    return max_per_task if 0 < max_per_task < CORE_PER_TASK else CORE_PER_TASK


@dataclass
class StepWork:
    name: str
    train_tokens: float = 0.0
    forward_tokens: float = 0.0
    decode_tokens: float = 0.0
    detail: str = ""
    spread: bool = True  # runs on every device (training) or on one (single-process evals)


@dataclass
class Plan:
    model_config: Any
    num_params: int
    horizon: Any
    steps: list[StepWork] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class TaskSize:
    conversations: float
    tokens: float      # per conversation
    measured: bool     # from the task's files (True) or TASK_SIZES (False)
    eval_type: str = "generative"


def _split_spec(spec: str) -> tuple[str, str | None, int | None]:
    fields = [f.strip() for f in spec.split(":")]
    n = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None
    return fields[0].lower().replace("-", "_"), (fields[1] if len(fields) > 1 and fields[1] else None), n


def _conversation_tokens(example: dict, tokenizer: Any) -> float:
    from picochat.tokenizer.chat import content_text, render_conversation

    if tokenizer is not None:
        return len(render_conversation(tokenizer, example)[0])
    chars = sum(len(content_text(m["content"])) for m in example["messages"])
    return chars / CHARS_PER_TOKEN + 2 * len(example["messages"]) + 1  # + the turn delimiters and BOS


def task_size(spec: str, run: RunConfig, tokenizer: Any, seq_len: int) -> TaskSize:
    """Conversations and tokens per conversation of one task spec, measured if its files are here
    (planning never downloads: a file that is not here falls back to the documented size)."""
    from picochat.data.download import local_only
    from picochat.tasks.registry import default_split, make_task

    try:
        with local_only():
            task = make_task(spec, home=run.home, mirror=run.mirror)
    except UserError:
        name, split, n = _split_spec(spec)
        if not default_split(name):
            raise  # not a task name at all: make_task's message says so
        key = (name, split or default_split(name))
        if key not in TASK_SIZES:
            raise UserError(f"cannot size task '{spec}': its files are not here and it has no documented size; "
                            f"download it (`picochat data list`)") from None
        count, tokens = TASK_SIZES[key]
        kind = "categorical" if name in CATEGORICAL else "generative"
        count = n if n and name in GENERATED else min(count, n or count)  # n: a generated task's size, else a cap
        return TaskSize(count, min(tokens, seq_len), False, kind)
    idx = sorted({i * len(task) // min(SAMPLE, len(task)) for i in range(min(SAMPLE, len(task)))})
    lengths = [min(_conversation_tokens(task[i], tokenizer), seq_len) for i in idx]
    return TaskSize(len(task), sum(lengths) / max(len(lengths), 1), True, task.eval_type)


def mixture_tokens(spec: str, run: RunConfig, tokenizer: Any, seq_len: int) -> tuple[float, float, list[str]]:
    """(conversations, tokens) of one pass over a mixture 'task*passes, ...', and per-task notes."""
    convs = tokens = 0.0
    notes = []
    for item in [s for s in spec.split(",") if s.strip()]:
        task_spec, _, weight = item.partition("*")
        try:
            passes = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise UserError(f"mixture item '{item.strip()}': the passes after '*' must be a number") from None
        size = task_size(task_spec.strip(), run, tokenizer, seq_len)
        convs += passes * size.conversations
        tokens += passes * size.conversations * size.tokens
        notes.append(f"{task_spec.strip()} {human_int(size.conversations)}x{size.tokens:.0f}"
                     + ("" if size.measured else " (documented)"))
    return convs, tokens, notes


def human_int(x: float) -> str:
    return f"{x / 1e3:.0f}k" if x >= 10_000 else f"{x:.0f}"


def run_tokenizer(run: RunConfig) -> Any:
    from picochat.run_layout import load_tokenizer, tokenizer_path

    return load_tokenizer(run.run, run.home) if tokenizer_path(run.run, run.home).exists() else None


def chat_stage_work(name: str, preset: Preset, run: RunConfig, tokenizer: Any, seq_len: int) -> StepWork:
    train = preset.stages[name]
    if train.num_steps > 0:
        tokens = train.num_steps * train.total_batch_tokens
        return StepWork(name, train_tokens=tokens, detail=f"{train.num_steps} steps x {train.total_batch_tokens}")
    convs, tokens, notes = mixture_tokens(train.mixture, run, tokenizer, seq_len)
    steps = max(1, math.ceil(tokens / train.total_batch_tokens))
    return StepWork(name, train_tokens=steps * train.total_batch_tokens,
                    detail=f"{steps} steps: one pass over {human_int(convs)} conversations ({', '.join(notes)})")


def rl_work(preset: Preset, run: RunConfig, tokenizer: Any, seq_len: int) -> StepWork:
    rl, train = preset.grpo, preset.stages["rl"]
    task, heldout = task_size(rl.task, run, tokenizer, seq_len), task_size(rl.eval_task, run, tokenizer, seq_len)
    steps = train.num_steps or max(1, int(task.conversations) // rl.prompts_per_step) * rl.updates_per_batch
    batches = steps / rl.updates_per_batch
    prompt = max(task.tokens - 64, 16)  # the problem without its answer (the answer is ~64 tokens of a solution)
    rollouts = batches * rl.prompts_per_step * rl.samples_per_prompt
    evals = 1 + math.ceil(steps / train.eval_every) if train.eval_every else 2
    eval_rollouts = evals * min(rl.eval_problems, heldout.conversations) * rl.pass_k
    trained = rollouts * (prompt + rl.max_new_tokens) * rl.updates_per_batch
    forward = (batches * rl.prompts_per_step * prompt + eval_rollouts * prompt / rl.pass_k
               + (rollouts * (prompt + rl.max_new_tokens) if rl.kl_coef > 0 else 0))
    return StepWork("rl", train_tokens=trained, forward_tokens=forward,
                    decode_tokens=(rollouts + eval_rollouts) * rl.max_new_tokens,
                    detail=f"{steps} steps x {rl.prompts_per_step} prompts x {rl.samples_per_prompt} samples x "
                           f"<= {rl.max_new_tokens} new tokens; {evals} evals of {rl.pass_k} samples")


def core_work(run: RunConfig, max_per_task: int, seq_len: int) -> tuple[float, str]:
    """(tokens scored, how it was sized) for CORE: per task, examples x (shots + 1) demonstrations
    x one sequence per choice, each example's size taken from its JSON line's length."""
    import json

    from picochat.eval.core import bundle_dir, load_specs

    try:
        bundle = bundle_dir(run.mirror, run.home)
    except UserError:
        tasks, per_task, seqs, tokens = CORE_ASSUMED
        n = min(per_task, max_per_task) if max_per_task > 0 else per_task
        return tasks * n * seqs * tokens, f"CORE bundle not here: {tasks} tasks x {n} x {seqs} x {tokens} (assumed)"
    total, examples, tasks = 0.0, 0, 0
    for spec in load_specs(bundle):
        path = bundle / "eval_data" / spec.dataset_uri
        if not path.exists():
            continue
        tasks += 1
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        n = min(len(lines), max_per_task) if max_per_task > 0 else len(lines)
        rows = [json.loads(ln) for ln in lines[:SAMPLE]]
        seqs = sum(len(r.get("choices") or r.get("context_options") or [0]) for r in rows) / len(rows)
        chars = sum(len(ln) for ln in lines[:SAMPLE]) / len(rows)
        total += n * seqs * min((spec.num_fewshot + 1) * chars / CHARS_PER_TOKEN, seq_len)
        examples += n
    return total, f"{examples} examples over {tasks} tasks (sized from the bundle)"


def eval_work(step: Any, preset: Preset, run: RunConfig, tokenizer: Any, seq_len: int) -> StepWork:
    kind = step.words[1]
    if kind == "bpb":
        tokens = preset.eval.max_bytes / CHARS_PER_TOKEN
        return StepWork(step.name, forward_tokens=tokens, detail=f"{preset.eval.max_bytes:,} bytes", spread=False)
    if kind == "core":

        per_task = core_per_task(preset.eval.max_per_task)
        tokens, detail = core_work(run, per_task, seq_len)
        return StepWork(step.name, forward_tokens=tokens, detail=detail, spread=False)
    if kind == "chat":
        return chat_eval_work(step.name, preset, run, tokenizer, seq_len)
    return StepWork(step.name, decode_tokens=16 * 24, detail="a few greedy samples", spread=False)


def chat_eval_work(name: str, preset: Preset, run: RunConfig, tokenizer: Any, seq_len: int) -> StepWork:
    from picochat.eval.chat import default_tasks

    ce = preset.chateval
    work = StepWork(name, detail="", spread=False)
    notes = []
    for spec in [s.strip() for s in (ce.task or default_tasks(preset.name)).split(",") if s.strip()]:
        size = task_size(spec, run, tokenizer, seq_len)
        n = min(size.conversations, ce.max_problems) if ce.max_problems > 0 else size.conversations
        work.forward_tokens += n * size.tokens
        if size.eval_type != "categorical":
            work.decode_tokens += n * ce.num_samples * ce.max_new_tokens
        notes.append(f"{spec} {human_int(n)}" + ("" if size.measured else " (documented)"))
    work.detail = ", ".join(notes)
    return work


def plan_work(preset: Preset, run: RunConfig, devices: int, skip: set[str] = frozenset()) -> Plan:
    """The model work of every step of the speedrun (PLAN) under `preset`."""
    import torch

    from picochat.data.download import local_only
    from picochat.run_layout import build_model
    from picochat.train.base import horizon_for

    tokenizer = run_tokenizer(run)
    vocab = tokenizer.vocab_size if tokenizer is not None else preset.model.vocab_size
    with torch.device("meta"):
        model = build_model(preset.model, vocab)
    horizon = horizon_for(preset.model, vocab, preset.stages["base"], devices)
    plan = Plan(model.config, model.num_params(), horizon)
    if tokenizer is None:
        plan.notes.append(f"run '{run.run}' has no tokenizer yet: conversation lengths at {CHARS_PER_TOKEN} "
                          "characters per token")
    with local_only():  # size what is here; never download while planning
        for step in (s for s in PLAN if s.name not in skip):
            plan.steps.append(step_work(step, preset, run, tokenizer, horizon))
    return plan


def step_work(step: Any, preset: Preset, run: RunConfig, tokenizer: Any, horizon: Any) -> StepWork:
    seq_len = preset.model.seq_len
    if step.words == ("train", "base"):
        return StepWork("base", train_tokens=horizon.tokens, detail=f"horizon: {horizon.rule}")
    if step.words in (("train", "mid"), ("train", "sft")):
        return chat_stage_work(step.words[1], preset, run, tokenizer, seq_len)
    if step.words == ("train", "rl"):
        return rl_work(preset, run, tokenizer, seq_len)
    if step.words[0] == "eval":
        return eval_work(step, preset, run, tokenizer, seq_len)
    return StepWork(step.name, detail="no model work", spread=False)
