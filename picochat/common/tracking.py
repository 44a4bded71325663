"""Experiment tracking: the numbers of a stage's metrics.jsonl, mirrored to TensorBoard or W&B.

The trainer writes one JSON line per logged step; a tracker receives that same record at that same
moment (`log`), so the two cannot disagree. It also records the resolved config when it opens and,
at the end of the stage, the final numbers and the run's report card (`finish`).

    none         nothing (the default; no dependency)
    tensorboard  event files in <stage>/tensorboard/ (`pip install 'picochat[tensorboard]'`,
                 then `tensorboard --logdir $PICOCHAT_HOME/runs`)
    wandb        a Weights & Biases run in <stage>/wandb/ (`pip install 'picochat[wandb]'`).
                 Offline unless you say otherwise: WANDB_MODE=online (after `wandb login`) streams
                 it live; an offline run is uploaded later with `wandb sync <stage>/wandb/offline-run-*`.

Trackers open on the first record, not before: a resumed stage then knows where it resumed.
TensorBoard drops the events at or after that step (they were logged by the run that was killed;
exact resume recomputes them). W&B keeps one run id per stage across resumes, and starts a new
one when the stage starts again from scratch.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from picochat.common.errors import UserError
from picochat.common.io import atomic_write_json, atomic_write_text

TRACKERS = ("none", "tensorboard", "wandb")


def scalars(record: dict[str, Any], skip: tuple[str, ...] = ("step",)) -> dict[str, float]:
    """The numeric fields of a metrics record (the step itself left out: it is the x axis)."""
    return {k: float(v) for k, v in record.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _resolved_config(out_dir: Path, fallback: dict[str, Any]) -> dict[str, Any]:
    """The stage's resolved config.json (every section, written before training starts), else `fallback`."""
    try:
        return json.loads((out_dir / "config.json").read_text())
    except (OSError, ValueError):
        return fallback


class Tracker:
    """The `none` tracker, and the interface of the others."""

    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record: {"step": N, "loss": ..., ...}."""

    def finish(self, summary: dict[str, Any], report: Callable[[], str] | None = None) -> None:
        """The stage's final numbers, and `report()`: the report card (markdown) as it stands after
        this stage (a callable, so that the `none` tracker reads nothing)."""


class TensorBoardTracker(Tracker):
    def __init__(self, out_dir: Path, config: dict[str, Any]):
        self.log_dir, self.config, self.writer = out_dir / "tensorboard", config, None

    def _open(self, first_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at or after it from an earlier (killed) process are discarded
        self.writer = SummaryWriter(str(self.log_dir), purge_step=first_step)
        self.writer.add_text("config", "```json\n" + json.dumps(self.config, indent=2) + "\n```", first_step)

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            self._open(record["step"])
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record["step"])
        self.writer.flush()  # as durable as the JSONL line just written

    def finish(self, summary: dict[str, Any], report: Callable[[], str] | None = None) -> None:
        if self.writer is None:
            return
        step = int(summary.get("step", 0))
        self.writer.add_text("final", "```json\n" + json.dumps(summary, indent=2) + "\n```", step)
        if report is not None:
            self.writer.add_text("report_card", report(), step)
        self.writer.close()
        self.writer = None


class WandbTracker(Tracker):
    def __init__(self, out_dir: Path, config: dict[str, Any]):
        self.out_dir, self.config, self.run = out_dir, config, None
        self.state_path = out_dir / "wandb" / "picochat-run.json"  # the run id kept across resumes

    def _run_id(self, first_step: int) -> str:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if not state or first_step <= state.get("first_step", 0):  # a fresh start, not a resume
            state = {"id": secrets.token_hex(4), "first_step": first_step}
            atomic_write_json(self.state_path, state)
        return state["id"]

    def _open(self, first_step: int) -> None:
        import wandb

        run_name, stage = self.out_dir.parent.name, self.out_dir.name
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "picochat"), name=f"{run_name}/{stage}", group=run_name,
            job_type=stage, id=self._run_id(first_step), resume="allow", dir=str(self.out_dir),
            # offline unless the user chose a mode: training must never wait on (or fail for) a network
            mode=os.environ.get("WANDB_MODE") or "offline", config=self.config,
            settings=wandb.Settings(console="off", silent=True))

    def log(self, record: dict[str, Any]) -> None:
        if self.run is None:
            self._open(record["step"])
        self.run.log(scalars(record), step=record["step"])

    def finish(self, summary: dict[str, Any], report: Callable[[], str] | None = None) -> None:
        if self.run is None:
            return
        self.run.summary.update({f"final/{k}": v for k, v in scalars(summary, skip=()).items()})
        if report is not None:
            path = Path(self.run.dir) / "report_card.md"
            atomic_write_text(path, report())
            self.run.save(str(path), base_path=self.run.dir, policy="now")
        self.run.finish()
        self.run = None
        import wandb

        wandb.teardown()  # finish() returns before the offline .wandb file is flushed; this waits for it


def open_tracker(kind: str, out_dir: str | Path, fallback_config: dict[str, Any] | None = None) -> Tracker:
    """The tracker `kind` for the stage in `out_dir` (it opens on its first record). A missing
    optional dependency is a UserError now, before any training time is spent."""
    if kind not in TRACKERS:
        raise UserError(f"unknown tracker '{kind}'; choose one of {', '.join(TRACKERS)}")
    if kind == "none":
        return Tracker()
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}[kind]
    try:
        __import__(package)
    except ImportError:
        raise UserError(f"--tracker {kind} needs the {package} package; install it with "
                        f"`pip install 'picochat[{kind}]'` (or run with --tracker none)") from None
    out_dir = Path(out_dir)
    config = _resolved_config(out_dir, fallback_config or {})
    return TensorBoardTracker(out_dir, config) if kind == "tensorboard" else WandbTracker(out_dir, config)
