"""`picochat speedrun`: tokenizer -> base -> mid -> SFT -> RL -> evals -> report, in one command.

Each step is an ordinary CLI command (the same table as `picochat --help`), run in this process
with the speedrun's shared flags (--preset, --run, --home, --device, --seed, --mirror). A stage
whose artifact is complete is skipped; a stage with a checkpoint resumes. So after Ctrl-C or a
crash, rerunning the same command continues where it stopped.

`--config run.toml` may hold tables for every step: [run], [model], [tokenizer], [eval],
[chateval], [report], and one table per training stage ([base], [mid], [sft], [rl]) whose keys
are TrainConfig fields for that stage only.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass

from picochat import config as C
from picochat.common.errors import UserError
from picochat.common.log import banner, duration, print0
from picochat.common.paths import stage_dir

TRAIN_STAGES = ("base", "mid", "sft", "rl")


@dataclass(frozen=True)
class Step:
    name: str                      # shown in banners and accepted by --skip
    words: tuple[str, ...]         # the CLI command it runs
    argv: tuple[str, ...] = ()     # extra arguments for that command
    optional: bool = False         # a UserError here is reported and the run goes on (e.g. no eval data)


PLAN: tuple[Step, ...] = (
    Step("tokenizer", ("tokenizer", "train")),
    Step("base", ("train", "base")),
    Step("bpb-base", ("eval", "bpb"), ("--stage", "base"), optional=True),
    Step("core-base", ("eval", "core"), ("--stage", "base", "--max-per-task", "100"), optional=True),
    Step("samples-base", ("eval", "samples"), ("--stage", "base"), optional=True),
    Step("mid", ("train", "mid")),
    Step("sft", ("train", "sft")),
    Step("eval-sft", ("eval", "chat"), ("--stage", "sft"), optional=True),
    Step("rl", ("train", "rl")),
    Step("eval-rl", ("eval", "chat"), ("--stage", "rl"), optional=True),
    Step("report", ("report",)),
)


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
    tables = None
    if cfg.args.config:
        data = C.load_toml(cfg.args.config)
        tables = {k: v for k, v in data.items() if k not in TRAIN_STAGES}
        if cmd.stage in data:
            tables["train"] = data[cmd.stage]
    return resolve(cmd, build_parser().parse_args(argv), toml=tables)


def main(cfg) -> None:
    skip = {s.strip() for s in cfg.args.skip.split(",") if s.strip()}
    unknown = skip - {s.name for s in PLAN}
    if unknown:
        raise C.ConfigError(f"--skip names unknown steps {sorted(unknown)}; steps are "
                            + ", ".join(s.name for s in PLAN))
    if cfg.args.dry_run:
        from picochat.cost import print_plan

        return print_plan(cfg, skip)
    t0, timings = time.time(), {}
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
        module, func = _command(step.words).target.split(":")
        try:
            getattr(importlib.import_module(module), func)(resolved)
        except UserError as e:
            if not step.optional:
                raise
            print0(f"[speedrun] {step.name} skipped: {e}")
        timings[step.name] = time.time() - t
    _summary(cfg, time.time() - t0, timings)


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
