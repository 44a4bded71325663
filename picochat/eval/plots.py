"""The report card's plots (matplotlib, Agg backend: no display needed). Each plot function draws
what exists and returns False when there is nothing to draw, so a partial run gets the plots it
can have. Figures are written atomically, like every other file of a run."""

from __future__ import annotations

import io
from pathlib import Path

STAGE_COLORS = {"base": "#1f77b4", "mid": "#ff7f0e", "sft": "#2ca02c", "rl": "#d62728"}
RL_KEYS = ("mean_reward", "pass@1", "pass@k", "mean_length")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # before pyplot is imported: render to files only
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from picochat.common.io import atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _panels(plt, n: int, title: str):
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, layout="constrained")
    fig.suptitle(title)
    return fig, axes[0]


def _style(xs: list) -> str:
    """Points as well as lines for short series (a one-point line is invisible)."""
    return "o-" if len(xs) <= 40 else "-"


def plot_loss(stages, path: Path) -> bool:
    """Training loss (and validation loss at evals) against step, one panel per stage."""
    ran = [s for s in stages.values() if s.series("loss")[0] or s.series("val_loss")[0]]
    if not ran:
        return False
    plt = _pyplot()
    fig, axes = _panels(plt, len(ran), "loss per stage")
    for ax, s in zip(axes, ran):
        color = STAGE_COLORS.get(s.name, "gray")
        tx, ty = s.series("loss")
        ax.plot(tx, ty, _style(tx), ms=3, color=color, lw=1.2, label="train")
        vx, vy = s.series("val_loss")
        if vx:
            ax.plot(vx, vy, "o--", color="black", ms=3, lw=0.8, label="val")
        ax.set(title=s.name.upper(), xlabel="step", ylabel="loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_bpb(stages, path: Path) -> bool:
    """Validation bits per byte against step: every stage on one axis, so they can be compared."""
    ran = [s for s in stages.values() if s.series("val_bpb")[0]]
    if not ran:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for s in ran:
        ax.plot(*s.series("val_bpb"), "o-", ms=3, color=STAGE_COLORS.get(s.name, "gray"), label=s.name.upper())
    ax.set(title="validation bits per byte", xlabel="step (within the stage)", ylabel="bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return True


def eval_bars(stages) -> dict[str, dict[str, float]]:
    """{metric: {stage: accuracy-like value in [0, 1]}} for the eval bar chart."""
    from picochat.eval.chat import DISPLAY_NAMES

    bars: dict[str, dict[str, float]] = {}
    for s in stages.values():
        core = s.evals.get("core", {})
        if isinstance(core.get("score"), (int, float)):
            bars.setdefault(core.get("metric", "CORE"), {})[s.name] = core["score"]
        chat = s.evals.get("chat", {})
        for task, r in chat.get("tasks", {}).items():
            if isinstance(r, dict) and isinstance(r.get("accuracy"), (int, float)):
                bars.setdefault(DISPLAY_NAMES.get(task, task), {})[s.name] = r["accuracy"]
        cc = chat.get("chatcore") or {}
        if isinstance(cc.get("score"), (int, float)):
            bars.setdefault(cc.get("metric", "ChatCORE"), {})[s.name] = cc["score"]
    return bars


def plot_evals(stages, path: Path) -> bool:
    """Grouped bars: one group per metric, one bar per stage."""
    bars = eval_bars(stages)
    if not bars:
        return False
    plt = _pyplot()
    names = [s for s in stages if any(s in v for v in bars.values())]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(bars) + 2), 4.0))
    for k, stage in enumerate(names):
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(bars))]
        ys = [v.get(stage, float("nan")) for v in bars.values()]
        rects = ax.bar(xs, ys, width, label=stage.upper(), color=STAGE_COLORS.get(stage, "gray"))
        ax.bar_label(rects, labels=[f"{y:.2f}" if y == y else "" for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(bars)), list(bars), rotation=20, ha="right")
    ax.axhline(0, color="black", lw=0.6)
    values = [y for v in bars.values() for y in v.values()]
    ax.set_ylim(min(0.0, min(values) * 1.15), max(0.1, max(values) * 1.15))  # centred scores may be < 0
    ax.set(title="evaluations per stage (accuracy; CORE/ChatCORE centred)", ylabel="score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def plot_core(stages, path: Path) -> bool:
    """Centred accuracy of each CORE task, per stage that ran CORE (horizontal bars)."""
    ran = [s for s in stages.values() if isinstance(s.evals.get("core", {}).get("centered"), dict)
           and s.evals["core"]["centered"]]
    if not ran:
        return False
    plt = _pyplot()
    tasks = sorted({t for s in ran for t in s.evals["core"]["centered"]})
    height = 0.8 / len(ran)
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(tasks) * max(1, len(ran)) + 1.2))
    for k, s in enumerate(ran):
        ys = [i + k * height for i in range(len(tasks))]
        xs = [s.evals["core"]["centered"].get(t, float("nan")) for t in tasks]
        ax.barh(ys, xs, height, label=s.name.upper(), color=STAGE_COLORS.get(s.name, "gray"))
    ax.set_yticks([i + (len(ran) - 1) * height / 2 for i in range(len(tasks))], tasks, fontsize=8)
    ax.axvline(0, color="black", lw=0.6)
    ax.invert_yaxis()
    ax.set(title="CORE tasks: centred accuracy (0 = chance)", xlabel="centred accuracy")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def _rl_series(rl, key: str) -> tuple[list, list]:
    """The RL stage's logged series for `key`, starting at step 0 with the SFT model's score from
    rl/eval/rl.json ("before"), so the curve shows the gain from where RL started."""
    steps, values = rl.series(key)
    before = rl.evals.get("rl", {}).get("before")
    if isinstance(before, dict) and isinstance(before.get(key), (int, float)) and steps:
        return [0, *steps], [before[key], *values]
    return steps, values


def plot_rl(stages, path: Path) -> bool:
    """Whatever of mean reward, pass@1, pass@k and mean length the RL stage logged, against step
    (step 0 = the SFT model, when RL recorded it)."""
    rl = stages.get("rl")
    keys = [k for k in RL_KEYS if rl is not None and rl.series(k)[0]]
    if not keys:
        return False
    plt = _pyplot()
    rates = [k for k in keys if k != "mean_length"]
    fig, axes = _panels(plt, 2 if rates and "mean_length" in keys else 1, "RL")
    if rates:
        for k in rates:
            axes[0].plot(*_rl_series(rl, k), "o-", ms=3, label=k)
        axes[0].set(title="reward and pass rates", xlabel="step", ylabel="rate")
        axes[0].legend(fontsize=8)
        axes[0].grid(alpha=0.3)
    if "mean_length" in keys:
        ax = axes[-1]
        ax.plot(*_rl_series(rl, "mean_length"), "o-", ms=3, color="purple")
        ax.set(title="mean reply length", xlabel="step", ylabel="tokens")
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _metric_label(name: str, n_tasks: list[float], full: int) -> str:
    """CORE / ChatCORE when every task was there, CORE-18 / ChatCORE-3 otherwise (as eval/ labels them)."""
    n = int(n_tasks[-1]) if n_tasks else 0
    return name if n == full else f"{name}-{n}"


def in_loop_panels(stages) -> list[tuple[str, str, list[tuple[str, tuple[list, list]]]]]:
    """[(stage, metric label, [(series label, (steps, values))])] for each stage whose metrics have
    in-loop evals: CORE in base (eval/in_loop.py), ChatCORE and its tasks in chat stages. Every
    value is centred (0 = chance, 1 = perfect), the tasks' accuracies too, so they share an axis."""
    from picochat.eval.chat import BASELINES, CHATCORE_TASKS, DISPLAY_NAMES, centered
    from picochat.eval.core import NUM_CORE_TASKS

    panels = []
    for s in stages.values():
        if s.series("core")[0]:
            label = _metric_label("CORE", s.series("core_tasks")[1], NUM_CORE_TASKS)
            panels.append((s.name, label, [(label, s.series("core"))]))
        tasks = sorted({k.removeprefix("chat_") for r in s.metrics for k in r if k.startswith("chat_")})
        lines = []
        if s.series("chatcore")[0]:
            lines.append((_metric_label("ChatCORE", s.series("chatcore_tasks")[1], len(CHATCORE_TASKS)),
                          s.series("chatcore")))
        for task in tasks:
            steps, accs = s.series(f"chat_{task}")
            centred = [centered(a, BASELINES.get(task, 0.0)) for a in accs]
            lines.append((DISPLAY_NAMES.get(task, task), (steps, centred)))
        if lines:
            panels.append((s.name, lines[0][0] if s.series("chatcore")[0] else "chat tasks", lines))
    return panels


def plot_in_loop(stages, path: Path) -> bool:
    """The evals run during training against step: CORE for base, ChatCORE (bold) and each chat
    task's centred accuracy (thin, dashed) for the chat stages."""
    panels = in_loop_panels(stages)
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = _panels(plt, len(panels), "in-loop evaluations")
    for ax, (stage, label, lines) in zip(axes, panels):
        for i, (name, (xs, ys)) in enumerate(lines):
            bold = i == 0 and name == label
            fmt = _style(xs) if bold else _style(xs).replace("-", "--")  # tasks dashed: told apart from the metric
            ax.plot(xs, ys, fmt, ms=3 if bold else 2, lw=1.6 if bold else 0.8, label=name,
                    color=STAGE_COLORS.get(stage, "gray") if bold else None)
        ax.axhline(0, color="black", lw=0.5)
        ax.set(title=f"{stage.upper()}: {label}", xlabel="step", ylabel="centred accuracy (0 = chance)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
    return True


def write_plots(stages, out: Path, notes: list[str]) -> dict[str, str]:
    """Draw every plot that has data into `out`; returns {plot key: file name}."""
    made = {}
    for key, draw in (("loss", plot_loss), ("bpb", plot_bpb), ("evals", plot_evals), ("core", plot_core),
                      ("in_loop", plot_in_loop), ("rl", plot_rl)):
        try:
            if draw(stages, out / f"{key}.png"):
                made[key] = f"{key}.png"
        except (ValueError, TypeError, KeyError) as e:  # malformed numbers in a file: skip the plot
            notes.append(f"plot '{key}' skipped ({e.__class__.__name__}: {e})")
    return made
