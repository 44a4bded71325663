"""Learning-rate and momentum schedules, as functions of training progress in [0, 1].

Progress (not step count) is the argument so that a stage may end on "data exhausted" or a
token budget and still decay properly: the trainer computes progress = step / total_steps.
"""

from __future__ import annotations


def lr_multiplier(progress: float, warmup_frac: float = 0.0, warmdown_frac: float = 0.4,
                  final_lr_frac: float = 0.0) -> float:
    """Trapezoid ("warmup-stable-decay"): linear warmup, flat, then linear decay to final_lr_frac.

    Decaying to ~0 at the very end is worth a large share of the final loss (Hägele et al. 2024,
    arXiv:2405.18392); the flat middle means a run can be extended without restarting."""
    if warmup_frac > 0 and progress < warmup_frac:
        return (progress + 1e-9) / warmup_frac
    if warmdown_frac > 0 and progress > 1 - warmdown_frac:
        t = (1 - progress) / warmdown_frac  # 1 -> 0 across the warmdown
        return final_lr_frac + (1 - final_lr_frac) * t
    return 1.0


def muon_momentum(step: int, warmup_steps: int = 300, start: float = 0.85, end: float = 0.95) -> float:
    """Muon's momentum ramps 0.85 -> 0.95 over the first steps: early gradients change fast, so a
    shorter memory helps at the start (modded-nanogpt's schedule)."""
    frac = min(step / warmup_steps, 1.0)
    return (1 - frac) * start + frac * end
