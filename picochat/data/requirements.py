"""What data a preset needs: every source its stages read, resolved against the registry.

A preset names data in several places: the tokenizer's and the base stage's `source`, the mid/SFT
`mixture` and `val_mixture` task specs, RL's `grpo.task` and `grpo.eval_task`, the chat evals'
`chateval.task` (the five ChatCORE tasks when empty), and the CORE bundle of `eval core`.
`preset_needs` turns all of them into (source, split) pairs, `check_preset` fails on the first one
the registry cannot serve, and `download_preset` fetches them all, so a GPU run finds a missing
dataset in its first minute, not after hours of pretraining.

Task names map to sources here (`TASK_DATA`) as plain data, so this layer needs no task code; the
task registry (tasks/registry.py) parses specs with `parse_task_spec` and `mixture_items` below,
and a test holds both name lists equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from picochat.common.errors import UserError
from picochat.common.paths import data_dir
from picochat.data.sources import CORE_BUNDLE_DIR, REGISTRY, SPLITS, local_folders

# eval/chat.py's default_tasks() for every preset but the demo (held equal by a test)
CHATCORE_DEFAULT = "arc_easy,arc_challenge,mmlu,gsm8k:test,humaneval"


@dataclass(frozen=True)
class TaskData:
    """Where a task's examples come from: `split_key` (with {split}) names the split of `source`
    a task spec reads; None for tasks generated in code."""

    source: str | None
    default_split: str = "train"
    split_key: str = "{split}"


TASK_DATA: dict[str, TaskData] = {
    "gsm8k": TaskData("gsm8k"),
    "mmlu": TaskData("mmlu", "test"),
    "arc_easy": TaskData("arc", "test", "ARC-Easy/{split}"),
    "arc_challenge": TaskData("arc", "test", "ARC-Challenge/{split}"),
    "humaneval": TaskData("humaneval", "test", "test"),
    "smoltalk": TaskData("smoltalk"),
    "chitchat": TaskData("chitchat", "train", "all"),  # one file; the split is a held-out slice
    "spellingbee": TaskData("words", "train", "all"),  # one word list; the split is a hash of the word
    "simplespelling": TaskData("words", "train", "all"),
    "identity": TaskData(None),
    "wordproblems": TaskData(None),
    "smalltalk": TaskData(None),
}


def parse_task_spec(spec: str) -> tuple[str, str | None, int | None]:
    """`name[:split[:n]]` -> (normalised name, split or None, n or None); the name is not checked."""
    fields = [f.strip() for f in spec.strip().split(":")]
    if len(fields) > 3:
        raise UserError(f"unknown task spec '{spec}': use name[:split[:n]] (at most two ':')")
    name = fields[0].lower().replace("-", "_")
    split = fields[1] if len(fields) > 1 and fields[1] else None
    n = None
    if len(fields) > 2:
        if not fields[2].isdigit():
            raise UserError(f"task spec '{spec}': the size after the second ':' must be a whole number")
        n = int(fields[2])
    return name, split, n


CHATFILE = "chatfile:"  # a user's chat file in a mixture (tasks/chatfile.py): the rest of the item is its path


def split_passes(item: str) -> tuple[str, str]:
    """(task spec, passes text) of one mixture item. A chatfile path may itself hold '*' (and ':'),
    so there only a trailing `*NUMBER` is passes."""
    if not item.strip().lower().startswith(CHATFILE):
        task_spec, _, weight = item.partition("*")
        return task_spec, weight
    head, star, tail = item.rpartition("*")
    try:
        float(tail)
    except ValueError:
        return item, ""
    return (head, tail) if star else (item, "")


def mixture_items(spec: str) -> list[tuple[str, float]]:
    """"spec[*passes], ..." -> [(task spec, passes)] (passes default 1)."""
    items = []
    for item in [s for s in spec.split(",") if s.strip()]:
        task_spec, weight = split_passes(item)
        try:
            items.append((task_spec.strip(), float(weight) if weight.strip() else 1.0))
        except ValueError:
            raise UserError(f"mixture item '{item.strip()}': the passes after '*' must be a number") from None
    return items


@dataclass(frozen=True)
class Need:
    """One split of one source that a preset reads, and the setting that asks for it."""

    source: str
    split: str  # a split of Source.splits; "train"/"val" shards of a pretraining corpus
    used_by: str  # e.g. "mid.mixture 'smoltalk:train'"
    optional: bool = False  # scored when present, skipped when not (CORE on an offline preset)


def task_need(spec: str, used_by: str) -> Need | None:
    """The data a task spec reads, or None for a generated task."""
    name, split, _ = parse_task_spec(spec)
    if name not in TASK_DATA:
        raise UserError(f"{used_by} names the unknown task '{name}'; known tasks: {', '.join(TASK_DATA)}")
    data = TASK_DATA[name]
    if data.source is None:
        return None
    return Need(data.source, data.split_key.format(split=split or data.default_split), f"{used_by} '{spec.strip()}'")


def preset_needs(preset) -> list[Need]:
    """Every (source, split) a preset's settings name, in pipeline order (duplicates removed)."""
    needs: list[Need] = []
    for where, source in (("tokenizer.source", preset.tokenizer.source),
                          ("base.source", preset.stages["base"].source)):
        needs += [Need(source, split, where) for split in SPLITS]
    if preset.eval.source:  # bits per byte on another source's held-out text
        needs.append(Need(preset.eval.source, preset.eval.split, "eval.source"))
    specs = []
    for stage in ("mid", "sft"):
        row = preset.stages.get(stage)
        for key in ("mixture", "val_mixture"):
            specs += [(s, f"{stage}.{key}") for s, _ in mixture_items(getattr(row, key, "") or "")]
    specs += [(preset.grpo.task, "grpo.task"), (preset.grpo.eval_task, "grpo.eval_task")]
    chat = preset.chateval.task or CHATCORE_DEFAULT
    specs += [(s, "chateval.task" if preset.chateval.task else "ChatCORE default")
              for s in chat.split(",") if s.strip()]
    needs += [n for s, where in specs if (n := task_need(s, where))]
    offline = all(n.source == "synthetic" for n in needs)
    needs.append(Need("core", "bundle", "eval core (CORE bundle)", optional=offline))
    unique: dict[tuple[str, str], list[Need]] = {}
    for n in needs:
        unique.setdefault((n.source, n.split), []).append(n)
    return [_merged(group) for group in unique.values()]


def _merged(group: list[Need]) -> Need:
    """One need named by several settings: the first setting, and how many more."""
    more = len({n.used_by for n in group}) - 1
    return Need(group[0].source, group[0].split, group[0].used_by + (f" (+{more} more)" if more else ""),
                all(n.optional for n in group))


def need_problem(need: Need, registry: dict | None = None) -> str | None:
    """Why the registry cannot serve a need, or None."""
    registry = REGISTRY if registry is None else registry
    src = registry.get(need.source)
    if src is None:
        return f"{need.used_by} needs the data source '{need.source}', which is not registered"
    if src.num_shards or src.name == "synthetic":  # shards by URL pattern, or generated
        if need.split in SPLITS:
            return None
    elif need.split in src.splits:
        if all(src.url_for(f) for f in src.splits[need.split][-1]):
            return None
        return (f"{need.used_by} reads {src.name} split '{need.split}', whose files have no download URL "
                "(only a mirror has them)")
    return f"{need.used_by} reads split '{need.split}' of {src.name}, which has no such split"


def check_preset(preset, registry: dict | None = None) -> list[Need]:
    """`preset_needs`, after checking every one is a registered, downloadable source split; a
    UserError names the first that is not."""
    needs = preset_needs(preset)
    for need in needs:
        problem = need_problem(need, registry)
        if problem:
            raise UserError(f"preset {preset.name}: {problem}; see `picochat data list -v`")
    return needs


def need_present(need: Need, home: str = "", mirror: str = "") -> str:
    """Where a need is satisfied now ('embedded', 'mirror', 'downloaded', 'N shard(s)', ...) or ''."""
    from picochat.data import download

    src = REGISTRY.get(need.source)
    if src is None:
        return ""
    if src.name == "synthetic":
        return "embedded"
    if src.num_shards:
        val = src.shard_file(src.num_shards - 1)
        for folder in local_folders(src, home, mirror):
            names = {p.name for p in folder.glob("shard_?????.parquet")} if folder.is_dir() else set()
            n = len(names - {val}) if need.split == "train" else int(val in names)
            if n:
                return f"{n} shard(s)" if need.split == "train" else "val shard"
        return ""
    if src.name == "core":
        return core_bundle_tasks(home, mirror)
    for files in src.splits.get(need.split, ()):
        try:
            paths = [download.local_copy(src.name, f, home=home, mirror=mirror) for f in files]
        except UserError:
            continue  # a damaged mirror copy is not "present"
        if all(paths):
            return "downloaded" if data_dir(home) in paths[0].parents else "mirror"
    return ""


def core_bundle_tasks(home: str, mirror: str) -> str:
    """'n/22 tasks' for the most complete unpacked CORE bundle here, or ''."""
    import yaml

    counts = []
    for folder in [f.parent / CORE_BUNDLE_DIR for f in local_folders(REGISTRY["core"], home, mirror)]:
        try:
            tasks = yaml.safe_load((folder / "core.yaml").read_text())["icl_tasks"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            continue
        counts.append((sum((folder / "eval_data" / t["dataset_uri"]).is_file() for t in tasks), len(tasks)))
    return "{}/{} tasks".format(*max(counts)) if counts else ""


def download_preset(preset, *, shards: list[int], home: str = "", mirror: str = "", workers: int = 8,
                    log=print) -> None:
    """Fetch everything a preset needs: `shards` (+ the validation shard) of its pretraining
    corpora, every task split, and the CORE bundle (unless optional)."""
    from picochat.data import download

    needs = check_preset(preset)
    for source in dict.fromkeys(n.source for n in needs if REGISTRY[n.source].num_shards):
        log(f"{source}: shards {shards[0]}..{shards[-1]} + validation" if shards else f"{source}: validation")
        download.download_shards(source, shards, home=home, mirror=mirror, workers=workers)
    for need in needs:
        src = REGISTRY[need.source]
        if src.num_shards or src.name == "synthetic" or need.optional:
            continue
        if src.name == "core":
            log(f"core: {download.fetch_unpacked('core', home=home, mirror=mirror)}")
        else:
            paths = download.fetch_split(src.name, need.split, home=home, mirror=mirror)
            log(f"{src.name}/{need.split}: {len(paths)} file(s) ({need.used_by})")
