"""`picochat train base|mid|sft|rl`: each training stage with the evaluations of eval/ handed in.

Training (train/) sits below evaluation (eval/) and imports none of it, yet base runs CORE and
greedy samples as it trains, the chat stages ChatCORE, RL its pass@k on held-out problems, and
every stage's tracker shows the report card at the end. A stage's `main` takes these as `Evals`
(train/trainer.py); the CLI, above both layers, is where they meet. The command table
(cli/__init__.py) points here, so `picochat speedrun` (which runs the table's commands) and
torchrun's re-exec of a stage (`-m picochat -- train <stage>`) run the same.
"""

from __future__ import annotations

from typing import Any

from picochat.eval.chat import evaluate_policy
from picochat.eval.in_loop import chatcore_in_loop, core_in_loop
from picochat.eval.report import metrics_table
from picochat.train import base, mid, rl, sft
from picochat.train.trainer import Evals

CHAT_EVALS = Evals(in_loop=chatcore_in_loop, report_card=metrics_table)


def base_main(cfg: Any) -> None:
    base.main(cfg, Evals(in_loop=core_in_loop, report_card=metrics_table))


def mid_main(cfg: Any) -> dict | None:
    return mid.main(cfg, CHAT_EVALS)


def sft_main(cfg: Any) -> dict | None:
    return sft.main(cfg, CHAT_EVALS)


def rl_main(cfg: Any) -> dict | None:
    return rl.main(cfg, Evals(policy=evaluate_policy, report_card=metrics_table))
