"""The report card of a run: `runs/<run>/report/report.md` and its plots, from files on disk only.

Nothing is recomputed here and no model is loaded: every number comes from a file a stage or
an eval wrote (the report can be rebuilt at any time, on any machine, in a second):

    runs/<run>/tokenizer/config.json       tokenizer settings and training time
    runs/<run>/<stage>/meta.json           model config, train config, final metrics, params, FLOPs/token
    runs/<run>/<stage>/config.json         the resolved command config (device, source, ...)
    runs/<run>/<stage>/metrics.jsonl       per step: loss, lr_mult, tok_s, elapsed; at evals val_loss,
                                           val_bpb; in RL also mean_reward, pass@1, pass@k, mean_length
    runs/<run>/<stage>/eval/<name>.json    one file per evaluation: core.json (`picochat eval core`),
                                           bpb.json (`eval bpb`), chat.json (`eval chat`),
                                           samples.json (`eval samples`)

for stage in base, mid, sft, rl. The metrics follow nanochat's report card (one row per metric, one
column per stage) in two tables: language modelling (CORE, bits per byte: every stage) and chat
(the chat stages). A row appears only if some stage measured it, with the sample it rests on
("100/task", "64 problems"); a cell is "—" only where that stage's eval did not run. A damaged
file is skipped with a note, never a crash.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from picochat.common.log import duration, human

STAGES = ("base", "mid", "sft", "rl")
DASH = "—"


@dataclass
class StageData:
    """Everything one stage left on disk (empty fields when it left nothing)."""

    name: str
    meta: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    evals: dict[str, dict] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return bool(self.meta or self.metrics or self.evals)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of a metric over the metrics.jsonl rows that have it."""
        rows = [r for r in self.metrics if isinstance(r.get(key), (int, float)) and "step" in r]
        return [r["step"] for r in rows], [float(r[key]) for r in rows]

    def last(self, key: str) -> float | None:
        final = self.meta.get("final", {})
        if isinstance(final.get(key), (int, float)):
            return float(final[key])
        _, values = self.series(key)
        return values[-1] if values else None


def read_json(path: Path, notes: list[str]) -> dict:
    """A JSON object from `path`, or {} if it is absent (or damaged: then a note says so)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        notes.append(f"skipped {path} ({e.__class__.__name__}: {e})")
        return {}


def read_jsonl(path: Path, notes: list[str]) -> list[dict]:
    """The JSON objects of a .jsonl file; a torn last line (a crash mid-write) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        notes.append(f"skipped {path} ({e})")
        return []
    rows, bad = [], 0
    for line in lines:
        try:
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(row)
        except ValueError:
            bad += bool(line.strip())
    if bad:
        notes.append(f"{path}: skipped {bad} unreadable line(s)")
    return rows


def load_stage(run_path: Path, name: str, notes: list[str]) -> StageData:
    d = run_path / name
    evals = {}
    if (d / "eval").is_dir():
        for p in sorted((d / "eval").glob("*.json")):
            evals[p.stem] = read_json(p, notes)
    return StageData(name, read_json(d / "meta.json", notes), read_json(d / "config.json", notes),
                     read_jsonl(d / "metrics.jsonl", notes), evals)


def load_run(run_path: Path, notes: list[str]) -> dict[str, StageData]:
    return {s: load_stage(run_path, s, notes) for s in STAGES}


# ----------------------------------------------------------------------------- environment


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode != 0:
            return DASH
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return DASH


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str]:
    """Where this report was made (the training may have run elsewhere: see each stage's config)."""
    import torch

    gpu = "none"
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        gpu = f"{n} x {torch.cuda.get_device_name(0)}"
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "git commit": _git_commit(), "python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform(), "CPU": f"{_cpu_name()} ({os.cpu_count()} cores)", "GPU": gpu}


# ----------------------------------------------------------------------------- metrics table


def _fmt(x: float | None, digits: int = 4) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


@dataclass
class Cell:
    """One stage's value of a metric, with the sample it rests on ("64 problems", "100/task")."""

    value: float | None = None
    sample: str = ""
    label: str = ""  # CORE vs CORE-18, ChatCORE vs ChatCORE-3: what this cell measured


def table_row(name: str, cells: list[Cell]) -> tuple[str, list[str]] | None:
    """(label, cell texts) of a metric, or None when no stage measured it (no all-dash rows).
    The row takes the first cell's label; a sample or label shared by every measured cell goes into
    the row's label, one that differs is written in its cell."""
    measured = [c for c in cells if c.value is not None]
    if not measured:
        return None
    label = next((c.label for c in measured if c.label), name)
    samples = {c.sample for c in measured}
    shared = samples.pop() if len(samples) == 1 else ""
    texts = []
    for c in cells:
        notes = [c.label] if c.label and c.label != label else []
        notes += [c.sample] if c.sample and not shared else []
        texts.append(_fmt(c.value) + "".join(f" ({n})" for n in notes) if c.value is not None else DASH)
    return (f"{label} ({shared})" if shared else label), texts


def _chat_cell(stage: StageData, task: str, key: str = "accuracy") -> Cell:
    record = stage.evals.get("chat", {}).get("tasks", {}).get(task, {})
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, (int, float)):
        return Cell()
    k, total = record.get("num_samples", 1), record.get("total")
    sample = f"{total} problems" + (f" x {k} samples" if isinstance(k, int) and k > 1 else "") if total else ""
    return Cell(float(value), sample)


def _core_cell(stage: StageData) -> Cell:
    record = stage.evals.get("core", {})
    score = record.get("score")
    if not isinstance(score, (int, float)):
        return Cell()
    per_task = record.get("max_per_task", -1)
    sample = f"{per_task}/task" if isinstance(per_task, int) and per_task > 0 else "all examples"
    return Cell(float(score), sample, str(record.get("metric") or "CORE"))


def _chatcore_cell(stage: StageData) -> Cell:
    record = stage.evals.get("chat", {}).get("chatcore") or {}
    score = record.get("score") if isinstance(record, dict) else None
    return Cell(float(score), "", str(record.get("metric") or "ChatCORE")) if isinstance(score, (int, float)) \
        else Cell()


def _bpb_cell(stage: StageData) -> Cell:
    record = stage.evals.get("bpb", {})
    value, n = _num(record.get("bpb")), _num(record.get("bytes"))
    return Cell(value, f"{human(n)} bytes" if n else "")


CHAT_ROWS = (("ARC-Easy", "arc_easy"), ("ARC-Challenge", "arc_challenge"), ("MMLU", "mmlu"),
             ("GSM8K", "gsm8k"), ("HumanEval", "humaneval"))


def lm_columns(stages: dict[str, StageData]) -> list[StageData]:
    """Every stage that ran: CORE and bits per byte apply to any model."""
    return [s for s in stages.values() if s.exists]


def chat_columns(stages: dict[str, StageData]) -> list[StageData]:
    """The chat stages that ran (and base, if someone evaluated it as a chat model)."""
    return [s for s in stages.values() if s.exists and (s.name != "base" or "chat" in s.evals)]


def lm_rows(cols: list[StageData]) -> list[tuple[str, list[str]]]:
    """Language-modelling metrics, one column per stage: CORE and bits per byte on held-out text."""
    rows = [table_row("CORE", [_core_cell(s) for s in cols]),
            table_row("bits per byte", [_bpb_cell(s) for s in cols])]
    return [r for r in rows if r]


def chat_rows(cols: list[StageData]) -> list[tuple[str, list[str]]]:
    """Chat benchmarks, one column per chat stage; only tasks some stage was evaluated on."""
    rows = [table_row(label, [_chat_cell(s, task) for s in cols]) for label, task in CHAT_ROWS]
    rows.append(table_row("ChatCORE", [_chatcore_cell(s) for s in cols]))
    rows.append(table_row("demo arithmetic pass@1", [_chat_cell(s, "wordproblems", "pass@1") for s in cols]))
    known = {t for _, t in CHAT_ROWS} | {"wordproblems"}
    for task in sorted({t for s in cols for t in s.evals.get("chat", {}).get("tasks", {})} - known):
        rows.append(table_row(task, [_chat_cell(s, task) for s in cols]))
    return [r for r in rows if r]


def stage_val_line(stages: dict[str, StageData]) -> list[str]:
    """Each training stage's final validation bpb on its own held-out set (text for base, the chat
    mixture for mid/SFT): not comparable across stages, so a line rather than a table row."""
    found = [(s.name.upper(), s.last("val_bpb")) for s in stages.values()]
    cells = [f"{name} {v:.4f}" for name, v in found if v is not None]
    return [f"- val bpb on each stage's own held-out set: {', '.join(cells)}"] if cells else []


def rl_train_eval_line(stages: dict[str, StageData]) -> list[str]:
    rl = stages.get("rl")
    if rl is None or "rl" in rl.evals or rl.last("pass@1") is None:
        return []
    return [f"- RL pass@1 at its last training eval: {rl.last('pass@1'):.4f}"]


def metrics_table(run_path: Path) -> str:
    """The report card's metrics tables (markdown) for the run as it stands on disk: what a tracker
    records at the end of a stage and what an exported model's card shows."""
    return "\n".join(metrics_tables(load_run(Path(run_path), [])))


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) else None


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- run summary and cost


def stage_summary(stages: dict[str, StageData]) -> list[list[str]]:
    """Rows (stage, params, steps, tokens, tokens/param, time, tok/s, FLOPs) for stages that ran."""
    rows = []
    for s in stages.values():
        if not s.exists:
            continue
        final = s.meta.get("final", {})
        params, tokens = _num(s.meta.get("num_params")), _num(final.get("tokens"))
        elapsed = _num(final.get("elapsed")) or s.last("elapsed")
        steps = _num(final.get("step")) or (s.metrics[-1].get("step") if s.metrics else None)
        _, tok_s = s.series("tok_s")
        fpt = _num(s.meta.get("flops_per_token"))
        rows.append([s.name.upper(), human(params) if params else DASH, f"{steps:.0f}" if steps else DASH,
                     human(tokens) if tokens else DASH,
                     f"{tokens / params:.3g}" if tokens and params else DASH,
                     duration(elapsed) if elapsed is not None else DASH,
                     human(sum(tok_s) / len(tok_s)) if tok_s else DASH,
                     f"{fpt * tokens:.2e}" if fpt and tokens else DASH])
    return rows


def _stage_device(s: StageData) -> str:
    return str(s.meta.get("device") or s.config.get("run", {}).get("device") or "")


def cost_lines(stages: dict[str, StageData], tokenizer_meta: dict, price: float) -> list[str]:
    """Total wall time, and a dollar estimate when the stages ran on GPUs.

    meta.json does not record the device a stage trained on, so we read it from the resolved
    config; "auto" means "whatever was there", and then we assume this machine's kind."""
    import torch

    train_s = sum(_num(s.meta.get("final", {}).get("elapsed")) or s.last("elapsed") or 0.0 for s in stages.values())
    tok_s = _num(tokenizer_meta.get("train_seconds")) or 0.0
    lines = [f"- training time: {duration(train_s)} over {sum(s.exists for s in stages.values())} stage(s)"
             + (f", plus {duration(tok_s)} for the tokenizer" if tok_s >= 1 else "")]
    devices = {_stage_device(s) for s in stages.values() if s.exists} - {""}
    on_gpu = any("cuda" in d for d in devices) or (devices <= {"auto"} and torch.cuda.is_available())
    if not on_gpu:
        lines.append("- ran on CPU: no GPU cost (time only)")
        return lines
    gpus = max([int(_num(s.meta.get("world_size")) or 1) for s in stages.values() if s.exists] or [1])
    hours = (train_s + tok_s) / 3600 * gpus
    lines.append(f"- estimated cost: {hours:.2f} GPU-hours x ${price:.2f}/h = **${hours * price:.2f}** "
                 f"({gpus} GPU(s); set the price with --gpu-hour-price)")
    return lines


def config_tables(stages: dict[str, StageData]) -> str:
    """The model's shape, and every training setting side by side per stage."""
    ran = [s for s in stages.values() if s.meta.get("train_config") or s.meta.get("model_config")]
    if not ran:
        return f"{DASH} (no stage has finished)"
    model = ran[0].meta.get("model_config", {})
    out = ["Model: " + ", ".join(f"{k}={v}" for k, v in model.items()), ""]
    keys: list[str] = []
    for s in ran:
        keys += [k for k in s.meta.get("train_config", {}) if k not in keys]
    rows = [[k] + [str(s.meta.get("train_config", {}).get(k, DASH)) for s in ran] for k in keys]
    if rows:
        out.append(markdown_table(["setting"] + [s.name.upper() for s in ran], rows))
    return "\n".join(out)


# ----------------------------------------------------------------------------- the document


def samples_section(stages: dict[str, StageData]) -> list[str]:
    lines = []
    for s in stages.values():
        rows = s.evals.get("samples", {}).get("samples")
        if not isinstance(rows, list) or not rows:
            continue
        lines += [f"**{s.name.upper()}** ({s.evals['samples'].get('decoding', 'greedy')}):", "", "```"]
        for r in rows:
            if isinstance(r, dict):
                lines.append(f"{r.get('prompt', '')}▸{str(r.get('completion', '')).replace(chr(10), ' ')}")
        lines += ["```", ""]
    return lines or ["(none: run `picochat eval samples`)", ""]


def eval_details(stages: dict[str, StageData]) -> list[str]:
    """How much each number rests on: problems per chat task, examples per CORE task."""
    lines = []
    for s in stages.values():
        core = s.evals.get("core", {})
        if isinstance(core.get("examples"), dict) and core["examples"]:
            n = list(core["examples"].values())
            lines.append(f"- {s.name.upper()} {core.get('metric', 'CORE')}: {len(n)} tasks, {sum(n)} examples"
                         + (f" (at most {core['max_per_task']} per task)" if core.get("max_per_task", -1) > 0 else ""))
        for task, r in sorted(s.evals.get("chat", {}).get("tasks", {}).items()):
            if isinstance(r, dict) and "total" in r:
                k = r.get("num_samples", 1)
                lines.append(f"- {s.name.upper()} {task}: {r.get('passed', DASH)}/{r['total']} problems"
                             + (f", {k} samples each (pass@{k})" if k != 1 else "")
                             + (f", spec `{r['spec']}`" if r.get("spec") else ""))
    lines += _rl_gain_line(stages) + rl_train_eval_line(stages) + stage_val_line(stages)
    lines += sandbox_lines(stages)
    return lines or ["(no evaluation recorded)"]


def sandbox_lines(stages: dict[str, StageData]) -> list[str]:
    """Which isolation layers the sandbox had while model-written code was graded (HumanEval in
    `eval chat`, code rewards in RL), as recorded by those runs (picochat/sandbox/)."""
    records = [(f"{s.name.upper()} {task}", r.get("sandbox")) for s in stages.values()
               for task, r in sorted(s.evals.get("chat", {}).get("tasks", {}).items()) if isinstance(r, dict)]
    records += [(f"{s.name.upper()} rewards and evals", s.evals.get("rl", {}).get("sandbox")) for s in stages.values()]
    parts = []
    for where, rec in records:
        if not isinstance(rec, dict) or not isinstance(rec.get("layers"), list):
            continue
        unmet = rec.get("unmet") or []
        verdict = (f"**below the required isolation** (lacks {', '.join(unmet)}; run with --unsafe-sandbox)"
                   if unmet else "all required layers")
        parts.append(f"{where}: {', '.join(rec['layers']) or 'none'} ({verdict})")
    return [f"- sandbox layers active while model-written code ran: {'; '.join(parts)}"] if parts else []


def _rl_gain_line(stages: dict[str, StageData]) -> list[str]:
    rl = stages["rl"].evals.get("rl", {}) if "rl" in stages else {}
    before, after, gain = rl.get("before"), rl.get("after"), rl.get("gain", {})
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return []
    settings = rl.get("settings", {})
    stderr = _num(gain.get("pass@1_stderr"))
    return [f"- RL held-out pass@1: SFT {_fmt(_num(before.get('pass@1')))} -> RL {_fmt(_num(after.get('pass@1')))}"
            f" (gain {_num(gain.get('pass@1')) or 0:+.4f}" + (f" ± {stderr:.4f} paired stderr" if stderr else "")
            + f") on {after.get('problems', DASH)} held-out problems x {after.get('k', DASH)} samples at temperature "
            f"{settings.get('eval_temperature', DASH)}, spec `{settings.get('eval_task', DASH)}`"]


def metrics_tables(stages: dict[str, StageData]) -> list[str]:
    """The language-modelling table (every stage) and the chat table (the chat stages), each with
    only the rows some stage measured: a cell is empty only where its step did not run."""
    out = []
    for title, cols, rows in (("Language modelling", lm_columns(stages), lm_rows),
                              ("Chat", chat_columns(stages), chat_rows)):
        table = rows(cols) if cols else []
        if table:
            out += [f"{title}:", "", markdown_table(["metric"] + [s.name.upper() for s in cols],
                                                    [[label] + cells for label, cells in table]), ""]
    return out or ["(nothing evaluated yet: run `picochat eval core|bpb|chat`)", ""]


def render(run: str, stages: dict[str, StageData], env: dict[str, str], tokenizer_meta: dict,
           plots: dict[str, str], price: float, notes: list[str]) -> str:
    lines = [f"# picochat report card: run `{run}`", "", "## Environment", ""]
    lines += [f"- {k}: {v}" for k, v in env.items()]
    tok = tokenizer_meta.get("tokenizer", {})
    if tokenizer_meta:
        lines.append(f"- tokenizer: vocab {tokenizer_meta.get('vocab_size', DASH)}, trained on "
                     f"{tok.get('source', DASH) if isinstance(tok, dict) else DASH}")
    lines += ["", "## Metrics", ""] + metrics_tables(stages)
    lines += ["Evaluation sizes:", ""] + eval_details(stages) + ["", "## Time and cost", ""]
    summary = stage_summary(stages)
    if summary:
        lines += [markdown_table(["stage", "params", "steps", "tokens", "tokens/param", "time", "tok/s",
                                  "train FLOPs"], summary), ""]
    lines += cost_lines(stages, tokenizer_meta, price)
    lines += ["", "## Plots", ""]
    titles = {"loss": "Training loss", "bpb": "Validation bits per byte", "evals": "Evaluations per stage",
              "core": "CORE tasks (centred)", "in_loop": "In-loop evaluations (CORE, ChatCORE vs step)",
              "rl": "RL reward"}
    lines += [f"### {title}\n\n![{title}]({plots[key]})\n" for key, title in titles.items() if key in plots]
    if not plots:
        lines.append("(no stage has logged metrics yet)\n")
    lines += ["## Sample completions", ""] + samples_section(stages)
    lines += ["## Configuration", "", config_tables(stages), ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines) + "\n"


def write_report(run: str, home: str = "", gpu_hour_price: float = 3.0) -> Path:
    """Build runs/<run>/report/report.md and its PNGs; returns the report's path."""
    from picochat.common.errors import UserError
    from picochat.common.io import atomic_write_text
    from picochat.common.paths import run_dir, stage_dir
    from picochat.eval import plots as P

    run_path = run_dir(run, home)
    if not run_path.is_dir():
        raise UserError(f"there is no run '{run}' in {run_path.parent}; pass --run with an existing run name")
    notes: list[str] = []
    stages = load_run(run_path, notes)
    tokenizer_meta = read_json(run_path / "tokenizer" / "config.json", notes)
    out = stage_dir(run, "report", home)
    plots = P.write_plots(stages, out, notes)
    text = render(run, stages, environment(), tokenizer_meta, plots, gpu_hour_price, notes)
    atomic_write_text(out / "report.md", text)
    return out / "report.md"


def main(cfg) -> None:
    """`picochat report`: write the run's report card and print it."""
    path = write_report(cfg.run.run, cfg.run.home, cfg.report.gpu_hour_price)
    print(path.read_text())
    print(f"wrote {path} (and its plots beside it)")
