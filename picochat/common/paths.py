"""Where things live on disk: $PICOCHAT_HOME/runs/<run>/<stage>/ and $PICOCHAT_HOME/data/."""

from __future__ import annotations

import os
from pathlib import Path

STAGES = ("tokenizer", "base", "mid", "sft", "rl", "report")


def home_dir(home: str = "") -> Path:
    """The root for runs and downloads: --home, else $PICOCHAT_HOME, else ~/.cache/picochat."""
    return Path(home or os.environ.get("PICOCHAT_HOME") or Path.home() / ".cache" / "picochat")


def run_dir(run: str, home: str = "") -> Path:
    return home_dir(home) / "runs" / run


def stage_dir(run: str, stage: str, home: str = "") -> Path:
    if stage not in STAGES:
        raise ValueError(f"unknown stage '{stage}'; stages are {', '.join(STAGES)}")
    return run_dir(run, home) / stage


def data_dir(home: str = "") -> Path:
    return home_dir(home) / "data"


def mirror_location(mirror: str = "") -> str:
    """A local directory or URL mirroring the datasets: --mirror, else $PICOCHAT_MIRROR, else ''."""
    return mirror or os.environ.get("PICOCHAT_MIRROR", "")
