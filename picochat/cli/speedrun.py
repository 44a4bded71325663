"""`picochat speedrun`: tokenizer -> base -> mid -> SFT -> RL -> evals -> report, in one command.

Each step is an ordinary CLI command (the same table as `picochat --help`), run in this process
with the speedrun's shared flags (--preset, --run, --home, --device, --seed, --mirror); with
`--gpus N` the training stages run on N processes through torchrun (picochat/cli/launch.py). A stage
whose artifact is complete is skipped; a stage with a checkpoint resumes. So after Ctrl-C or a
crash, rerunning the same command continues where it stopped.

`--config run.toml` may hold tables for every step: [run], [model], [tokenizer], [eval],
[chateval], [report], and one table per training stage ([base], [mid], [sft], [rl]) whose keys
are TrainConfig fields for that stage only.
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from dataclasses import replace

from picochat import config as C
from picochat.cli.launch import check_devices, multi_node_commands, run_distributed
from picochat.cli.plan import PLAN, Step, core_per_task
from picochat.common.errors import UserError
from picochat.common.log import banner, duration, print0
from picochat.common.paths import stage_dir

TRAIN_STAGES = ("base", "mid", "sft", "rl")
DATA_STEPS = (("tokenizer", "train"), ("train", "base"))  # the steps `--data` (own pretraining text) goes to


# Sizing the download of a sharded pretraining source: nanochat's repackaged shards hold ~250M
# characters each (dev/repackage_data_reference.py); 5 characters per token is above what a 32k BPE
# reaches on English web text (~4.3-4.8), so the estimate errs towards one shard too many, never
# towards a base stage that wraps around into a second epoch.
CHARS_PER_SHARD = 250_000_000
CHARS_PER_TOKEN = 5.0

def _command(words: tuple[str, ...]):
    from picochat.cli import COMMANDS

    return next((c for c in COMMANDS if c.words == words), None)


def resolve_step(step: Step, cfg):
    """The step's Resolved config: preset < the speedrun's TOML tables < its run flags and argv."""
    from picochat.cli import build_parser, resolve

    cmd = _command(step.words)
    if cmd is None:
        return None
    run = cfg.run
    argv = [*step.words, "--preset", run.preset, "--run", run.run, "--device", run.device,
            "--seed", str(run.seed), *step.argv]
    argv += ["--home", run.home] if run.home else []
    argv += ["--mirror", run.mirror] if run.mirror else []
    if getattr(cfg.args, "data", "") and step.words in DATA_STEPS:  # eval bpb reads them from base's config
        argv += ["--data", cfg.args.data, "--text-field", cfg.args.text_field, "--val-data", cfg.args.val_data]
    tables = None
    if cfg.args.config:
        data = C.load_toml(cfg.args.config)
        tables = {k: v for k, v in data.items() if k not in TRAIN_STAGES}
        if cmd.stage in data:
            tables["train"] = data[cmd.stage]
    resolved = resolve(cmd, build_parser().parse_args(argv), toml=tables)
    if step.words == ("eval", "core"):
        resolved.eval.max_per_task = core_per_task(resolved.eval.max_per_task)
    return resolved


def main(cfg) -> None:
    skip = {s.strip() for s in cfg.args.skip.split(",") if s.strip()}
    unknown = skip - {s.name for s in PLAN} - {"data"}
    if unknown:
        raise C.ConfigError(f"--skip names unknown steps {sorted(unknown)}; steps are data, "
                            + ", ".join(s.name for s in PLAN))
    gpus = cfg.args.gpus
    if cfg.args.dry_run:
        from picochat.cli.cost import print_plan

        print_plan(cfg, skip)
        return _print_multi_node(cfg, skip) if gpus > 1 else None
    check_devices(gpus, cfg.run.device)
    if gpus > 1:
        print0(f"[speedrun] training stages on {gpus} processes (torchrun, one node); evals and report on one")
        _print_multi_node(cfg, skip)
    t0, timings = time.time(), {}
    if "data" not in skip:  # everything the steps will read, before the first one starts
        banner(f"speedrun {cfg.run.preset}/{cfg.run.run}: data")
        fetch_data(cfg)
        timings["data"] = time.time() - t0
    for step in PLAN:
        if step.name in skip:
            print0(f"[speedrun] skipping {step.name} (--skip)")
            continue
        resolved = resolve_step(step, cfg)
        if resolved is None:
            print0(f"[speedrun] {step.name}: `picochat {' '.join(step.words)}` is not available; skipping")
            continue
        banner(f"speedrun {cfg.run.preset}/{cfg.run.run}: {step.name}")
        t = time.time()
        _run_step(step, resolved, gpus)
        timings[step.name] = time.time() - t
    _summary(cfg, time.time() - t0, timings)


def fetch_data(cfg) -> None:
    """Download what this run's steps read (data/requirements.py: download_preset), so a missing
    dataset fails in the first minute, not after hours of pretraining: the pretraining shards the
    base stage's horizon consumes (+ the validation shard), every task split, the CORE bundle."""
    from picochat.data.requirements import download_preset
    from picochat.data.sources import get_source
    from picochat.train.base import horizon_for

    tok = resolve_step(Step("tokenizer", ("tokenizer", "train")), cfg).tokenizer
    base = resolve_step(Step("base", ("train", "base")), cfg)
    preset = C.get_preset(cfg.run.preset)
    stages = {name: resolve_step(Step(name, ("train", name)), cfg).train for name in TRAIN_STAGES}
    if base.train.data:  # the user's own text: nothing to download for pretraining
        stages["base"] = replace(stages["base"], source="synthetic")
        tok = replace(tok, source="synthetic")
    horizon = horizon_for(base.model, base.model.vocab_size, base.train, max(1, cfg.args.gpus))
    chars = max(horizon.tokens * CHARS_PER_TOKEN, tok.max_chars)
    shards = list(range(math.ceil(chars / CHARS_PER_SHARD) + 1))
    sharded = sorted({s for s in (tok.source, stages["base"].source) if get_source(s).num_shards})
    if sharded:
        print0(f"[speedrun] base: {horizon.steps} steps x {horizon.batch_tokens} tokens -> {len(shards)} training "
               f"shard(s) of {', '.join(sharded)} (at <= {CHARS_PER_TOKEN:g} chars/token)")
    download_preset(replace(preset, tokenizer=tok, stages=stages), shards=shards, home=cfg.run.home,
                    mirror=cfg.run.mirror, log=lambda line: print0(f"[speedrun] {line}"))


def _run_step(step: Step, resolved, gpus: int) -> None:
    """A training stage on `gpus` processes (torchrun) when gpus > 1; anything else in this process."""
    cmd = _command(step.words)
    if gpus > 1 and cmd.stage is not None:
        return run_distributed(step.name, gpus, step.words, resolved, cmd.sections)
    module, func = cmd.target.split(":")
    try:
        getattr(importlib.import_module(module), func)(resolved)
    except UserError as e:
        if not step.optional:
            raise
        print0(f"[speedrun] {step.name} skipped: {e}")
    finally:
        _release_gpu_memory()  # the next stage's rank 0 shares this process's GPU


def _release_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _print_multi_node(cfg, skip: set[str]) -> None:
    stages = [s.name for s in PLAN if s.name in TRAIN_STAGES and s.name not in skip]
    print0("on several nodes: run the tokenizer once (`picochat tokenizer train`), then each line on every node "
           "(HOST: the first node's address; --home on a shared filesystem), then the evals and "
           "`picochat report` on one node (`picochat speedrun --skip base,mid,sft,rl`):")
    for line in multi_node_commands(cfg.run, stages, cfg.args.gpus, cfg.args.config):
        print0("  " + line)


def _summary(cfg, total: float, timings: dict[str, float]) -> None:
    banner("speedrun finished")
    for name, secs in timings.items():
        print0(f"  {name:12s} {duration(secs):>9s}  {100 * secs / max(total, 1e-9):5.1f}%")
    print0(f"  {'total':12s} {duration(total):>9s}")
    report = stage_dir(cfg.run.run, "report", cfg.run.home) / "report.md"
    flags = f"--run {cfg.run.run}" + (f" --home {cfg.run.home}" if cfg.run.home else "")
    print0(f"\nreport card: {report}")
    print0(f"talk to it:  picochat chat {flags}")
    print0(f"serve it:    picochat serve {flags}   (then open http://127.0.0.1:8000)")
