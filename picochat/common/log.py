"""Printing from rank 0 only, human-friendly numbers, and an ETA."""

from __future__ import annotations

import os
import sys


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def print0(*args, **kwargs) -> None:
    if is_main_process():
        print(*args, **kwargs, flush=True)


def human(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.3g}"


def duration(seconds: float) -> str:
    """3725 -> '1h02m05s'."""
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def banner(text: str) -> None:
    print0(f"\n=== {text} " + "=" * max(0, 70 - len(text)), file=sys.stdout)
