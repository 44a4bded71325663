"""Tasks by name, so configs and command lines can say which tasks to train or evaluate on.

A task spec is `name[:split[:n]]`, e.g. "gsm8k", "gsm8k:test", "spellingbee:train:20000".
`n` is the size of a generated task (spelling, identity, synthetic), and for a file-backed task
a cap: its first n examples in the task's seeded order, a fair random sample.
A mixture spec is comma-separated task specs, each with an optional `*passes` (default 1):
"smoltalk:train, gsm8k:train*2, identity*0.5" has every SmolTalk example once, every GSM8K
example twice and half the identity conversations (the way nanochat oversamples a task by
listing it twice, but with any real number).

The user's own conversations join a mixture as `chatfile:PATH` (tasks/chatfile.py: a .jsonl or
.jsonl.gz file of OpenAI-style {"messages": [...]} lines), e.g.
"chatfile:data/chats.jsonl*2, smoltalk:train". Everything after `chatfile:` up to the item's end
is the path, so the path may contain ':' (and '*'); only a trailing `*NUMBER` is read as passes,
and a path cannot contain ',' (the item separator). The whole file is one task (no split or n:
put held-out conversations in a second file for --val-mixture; use *passes to sub-sample).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from picochat.common.errors import UserError
from picochat.data.requirements import CHATFILE, TASK_DATA, mixture_items, parse_task_spec
from picochat.tasks.common import Subset, Task, TaskMixture

# name -> (default split, factory(split, n, home, mirror))
Factory = Callable[[str, "int | None", str, str], Task]


def _file_task(build: Callable[..., Task]) -> Factory:
    def make(split: str, n: int | None, home: str, mirror: str) -> Task:
        task = build(split, home=home, mirror=mirror)
        return task if n is None else Subset(task, 0, n)
    return make


def _generated(build: Callable[..., Task], default_size: int) -> Factory:
    def make(split: str, n: int | None, home: str, mirror: str) -> Task:
        return build(split, default_size if n is None else n, home=home, mirror=mirror)
    return make


def _registry() -> dict[str, tuple[str, Factory]]:
    # imported here so that importing the registry loads no task module
    from picochat.tasks.arc import ARC
    from picochat.tasks.gsm8k import GSM8K
    from picochat.tasks.humaneval import HumanEval
    from picochat.tasks.identity import Identity
    from picochat.tasks.mmlu import MMLU
    from picochat.tasks.smoltalk import ChitChat, SmolTalk
    from picochat.tasks.spelling import SimpleSpelling, SpellingBee
    from picochat.tasks.synthetic import SmallTalk, WordProblems

    def no_files(cls: Callable[..., Task]) -> Callable[..., Task]:
        return lambda split, n, home="", mirror="": cls(split, n)

    factories: dict[str, Factory] = {
        "gsm8k": _file_task(GSM8K),
        "mmlu": _file_task(MMLU),
        "arc_easy": _file_task(lambda split, **kw: ARC("ARC-Easy", split, **kw)),
        "arc_challenge": _file_task(lambda split, **kw: ARC("ARC-Challenge", split, **kw)),
        "humaneval": _file_task(lambda split, **kw: HumanEval(**kw)),
        "smoltalk": _file_task(SmolTalk),
        "chitchat": _file_task(ChitChat),
        "spellingbee": _generated(SpellingBee, 10_000),
        "simplespelling": _generated(SimpleSpelling, 10_000),
        "identity": _generated(lambda split, n, **kw: Identity(n, seed=0 if split == "train" else 1), 48),
        "wordproblems": _generated(no_files(WordProblems), 2000),
        "smalltalk": _generated(no_files(SmallTalk), 2000),
    }
    # default splits and data sources: data/requirements.py's TASK_DATA (same names, held by a test)
    return {name: (TASK_DATA[name].default_split, f) for name, f in factories.items()}


def task_names() -> list[str]:
    return list(_registry())


def default_split(name: str) -> str:
    """The split a spec without one means, e.g. 'mmlu' -> 'test' ('' for an unknown name)."""
    entry = _registry().get(name.lower().replace("-", "_"))
    return entry[0] if entry else ""


def make_task(spec: str, *, home: str = "", mirror: str = "") -> Task:
    """The task a spec `name[:split[:n]]` names (see the module docstring)."""
    if spec.strip().lower().startswith(CHATFILE):
        from picochat.tasks.chatfile import ChatFile

        return ChatFile(spec.strip()[len(CHATFILE):].strip())
    registry = _registry()
    name, split, n = parse_task_spec(spec)
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown task spec '{spec}'{hint}; use name[:split[:n]] with a name from "
                        f"{', '.join(registry)}")
    default_split, factory = registry[name]
    try:
        return factory(split or default_split, n, home, mirror)
    except ValueError as e:  # a bad split or subset name
        raise UserError(f"task spec '{spec}': {e}") from e


def make_mixture(spec: str, *, size: int | None = None, seed: int = 0, home: str = "",
                 mirror: str = "") -> TaskMixture:
    """A TaskMixture from "spec[*passes], spec[*passes], ..." (see the module docstring);
    `size` rescales the whole mixture to that many examples, keeping the proportions."""
    items = mixture_items(spec)
    if not items:
        raise UserError("a task mixture needs at least one task spec")
    if any(p < 0 for _, p in items):
        raise UserError(f"mixture '{spec}': the number of passes after '*' must not be negative")
    tasks = [make_task(task_spec, home=home, mirror=mirror) for task_spec, _ in items]
    # passes -> proportions: task k contributes passes[k] * len(task k) examples
    weights = [p * len(t) for (_, p), t in zip(items, tasks, strict=True)]
    total = round(sum(weights)) if size is None else size
    return TaskMixture(tasks, weights, size=total, seed=seed)
