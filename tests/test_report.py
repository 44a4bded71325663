"""The report card on a fake run directory written here: the metrics table, summary, cost, plots,
and tolerance of missing and damaged files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from picochat.eval import report

pytestmark = pytest.mark.timeout(300)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def metrics(n: int, start_loss: float, eval_every: int, rl: bool = False) -> str:
    rows = []
    for step in range(1, n + 1):
        row = {"step": step, "loss": start_loss * math.exp(-step / n), "lr_mult": 1.0, "tok_s": 1000.0 + step,
               "elapsed": 2.0 * step}
        if step % eval_every == 0:
            row.update(val_loss=row["loss"] + 0.1, val_bpb=row["loss"] / 3)
            if rl:
                row.update({"mean_reward": step / n, "pass@1": step / (2 * n), "pass@k": step / n,
                            "mean_length": 100 - step})
        rows.append(json.dumps(row))
    return "\n".join(rows) + "\n"


def meta(stage: str, steps: int, tokens: int, elapsed: float, val_bpb: float) -> dict:
    return {"stage": stage, "run": "fake", "num_params": 1_000_000, "flops_per_token": 6e6,
            "model_config": {"n_layer": 4, "n_embd": 256, "vocab_size": 4096, "sequence_len": 256},
            "train_config": {"num_steps": steps, "matrix_lr": 0.02 if stage == "base" else 0.005,
                             "source": "synthetic"},
            "final": {"step": steps, "tokens": tokens, "elapsed": elapsed, "val_bpb": val_bpb, "val_loss": 3.0}}


def chat_record(accs: dict[str, float], wp_pass1: float | None = None) -> dict:
    from picochat.eval.chat import chatcore

    tasks = {t: {"accuracy": a, "pass@1": a, "passed": round(100 * a), "total": 100} for t, a in accs.items()}
    if wp_pass1 is not None:
        tasks["wordproblems"] = {"accuracy": wp_pass1, "pass@1": wp_pass1, "total": 50}
    cc = chatcore(accs)
    return {"tasks": tasks, "chatcore": cc and {"metric": cc[0], "score": cc[1]}}


@pytest.fixture
def fake_run(tmp_path) -> tuple[str, Path]:
    run = tmp_path / "runs" / "fake"
    write(run / "tokenizer" / "config.json", {"tokenizer": {"source": "synthetic"}, "train_seconds": 60.0,
                                              "vocab_size": 4096})
    write(run / "base" / "metrics.jsonl", metrics(40, 8.0, 10))
    write(run / "base" / "meta.json", meta("base", 40, 400_000, 80.0, 1.25))
    write(run / "base" / "config.json", {"run": {"device": "cpu"}})
    write(run / "base" / "eval" / "core.json", {"metric": "CORE-18", "score": 0.0512,
                                               "centered": {"hellaswag": 0.02, "arc_easy": 0.1, "piqa": -0.01}})
    write(run / "base" / "eval" / "bpb.json", {"bpb": 1.3456})
    write(run / "base" / "eval" / "samples.json", {"decoding": "greedy", "samples": [
        {"prompt": "The capital of France is", "completion": " Paris."}]})
    write(run / "sft" / "metrics.jsonl", metrics(20, 2.0, 5))
    write(run / "sft" / "meta.json", meta("sft", 20, 100_000, 40.0, 0.9))
    write(run / "sft" / "eval" / "chat.json", chat_record(
        {"arc_easy": 0.40, "arc_challenge": 0.28, "mmlu": 0.31, "gsm8k": 0.05, "humaneval": 0.02}, 0.6))
    write(run / "rl" / "metrics.jsonl", metrics(10, 1.0, 2, rl=True))
    write(run / "rl" / "eval" / "chat.json", chat_record({"gsm8k": 0.08}, 0.75))
    return "fake", tmp_path


def table_row(text: str, label: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in the report")


def tables(text: str) -> dict[str, list[str]]:
    """The header line of each metrics table ("Language modelling", "Chat") as its cells."""
    lines = text.splitlines()
    return {lines[i][:-1]: [c.strip() for c in lines[i + 2].strip("|").split("|")]
            for i in range(len(lines) - 2) if lines[i] in ("Language modelling:", "Chat:")}


def test_report_has_the_metrics_table_and_plots(fake_run):
    run, home = fake_run
    path = report.write_report(run, str(home), gpu_hour_price=3.0)
    text = path.read_text()
    assert path == home / "runs" / run / "report" / "report.md"
    # one column per stage that ran (MID did not); the chat table only has the chat stages
    assert tables(text) == {"Language modelling": ["metric", "BASE", "SFT", "RL"], "Chat": ["metric", "SFT", "RL"]}
    assert table_row(text, "CORE-18 (all examples)") == ["0.0512", "—", "—"]
    assert table_row(text, "ARC-Easy (100 problems)") == ["0.4000", "—"]
    assert table_row(text, "GSM8K (100 problems)") == ["0.0500", "0.0800"]
    # ChatCORE by hand: centred (0.15/0.75, 0.03/0.75, 0.06/0.75, 0.05, 0.02) averaged
    want = (0.15 / 0.75 + 0.03 / 0.75 + 0.06 / 0.75 + 0.05 + 0.02) / 5
    row = table_row(text, "ChatCORE")
    assert row[0] == f"{want:.4f}"
    assert row[1] == f"{(0.08 - 0) / 1:.4f} (ChatCORE-1)"  # only GSM8K evaluated after RL
    assert table_row(text, "demo arithmetic pass@1 (50 problems)") == ["0.6000", "0.7500"]
    assert table_row(text, "bits per byte") == ["1.3456", "—", "—"]  # bpb.json without its byte count
    assert "val bpb on each stage's own held-out set: BASE 1.2500, SFT 0.9000" in text
    assert "RL pass@1 at its last training eval: 0.5000" in text
    # summary: tokens per param and time; CPU run: no dollar cost
    assert table_row(text, "BASE")[:5] == ["1.0M", "40", "400.0k", "0.4", "1m20s"]
    assert "ran on CPU" in text and "$" not in text.split("## Time and cost")[1].split("## Plots")[0]
    assert "The capital of France is▸ Paris." in text
    assert "- SFT gsm8k: 5/100 problems" in text and "- BASE CORE-18: " not in text  # core.json has no sizes
    for name in ("loss", "bpb", "evals", "core", "rl"):
        png = path.parent / f"{name}.png"
        assert f"]({name}.png)" in text
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


def test_gpu_run_gets_a_cost_estimate(fake_run):
    run, home = fake_run
    for stage in ("base", "sft"):
        write(home / "runs" / run / stage / "config.json", {"run": {"device": "cuda"}})
    text = report.write_report(run, str(home), gpu_hour_price=2.5).read_text()
    hours = (80 + 40 + 2 * 10 + 60) / 3600  # base + sft + rl (last elapsed) + tokenizer
    assert f"{hours:.2f} GPU-hours x $2.50/h = **${hours * 2.5:.2f}**" in text


def test_missing_and_damaged_files_give_dashes_not_errors(tmp_path):
    run = tmp_path / "runs" / "broken"
    write(run / "base" / "metrics.jsonl", '{"step": 1, "loss": 5.0}\n{"step": 2, "lo')  # torn last line
    write(run / "base" / "meta.json", "{not json")
    write(run / "sft" / "eval" / "chat.json", {"tasks": {"mmlu": {"accuracy": "n/a"}}})
    text = report.write_report("broken", str(tmp_path)).read_text()
    assert "MMLU" not in text and "CORE" not in text  # nothing measured: no rows, no all-dash rows
    assert "nothing evaluated yet" in text
    assert "skipped" in text and "meta.json" in text  # the damaged file is named in the notes
    assert (run / "report" / "loss.png").exists()  # one loss point is still a plot
    assert not (run / "report" / "rl.png").exists()


def test_unknown_run_is_a_user_error(tmp_path):
    from picochat.common.errors import UserError

    with pytest.raises(UserError, match="no run 'nope'"):
        report.write_report("nope", str(tmp_path))


def test_cli_report(fake_run, capsys):
    from picochat.cli import main

    run, home = fake_run
    with pytest.raises(SystemExit) as e:
        main(["report", "--run", run, "--home", str(home), "--gpu-hour-price", "1.0"])
    assert e.value.code == 0
    assert "| ARC-Easy (100 problems) |" in capsys.readouterr().out


def test_rl_gain_over_sft_is_reported_with_its_sample_size(fake_run):
    run, home = fake_run
    write(home / "runs" / run / "rl" / "eval" / "rl.json", {
        "settings": {"eval_task": "wordproblems:test", "eval_temperature": 1.0},
        "before": {"pass@1": 0.5, "problems": 32, "k": 4},
        "after": {"pass@1": 0.625, "problems": 32, "k": 4},
        "gain": {"pass@1": 0.125, "pass@1_stderr": 0.03}})
    text = report.write_report(run, str(home)).read_text()
    assert ("RL held-out pass@1: SFT 0.5000 -> RL 0.6250 (gain +0.1250 ± 0.0300 paired stderr) "
            "on 32 held-out problems x 4 samples at temperature 1.0") in text


def test_a_run_evaluated_at_every_stage_has_a_number_in_every_cell(tmp_path):
    """The speedrun evaluates every stage (bpb, CORE, and chat on the chat stages): then the metrics
    tables have no empty cell, and each row says its sample size."""
    run = tmp_path / "runs" / "full"
    for i, stage in enumerate(("base", "mid", "sft", "rl")):
        write(run / stage / "meta.json", meta(stage, 10, 40_000, 5.0, 1.0 - i / 10))
        write(run / stage / "eval" / "bpb.json", {"bpb": 0.3 + i / 100, "bytes": 200_000, "tokens": 60_000})
        write(run / stage / "eval" / "core.json", {"metric": "CORE-18", "score": 0.01 * i, "max_per_task": 100,
                                                  "examples": {"copa": 100, "piqa": 100}})
        if stage != "base":
            write(run / stage / "eval" / "chat.json", {"tasks": {"wordproblems": {
                "accuracy": 0.9, "pass@1": 0.9, "passed": 58, "total": 64, "spec": "wordproblems:test:64"}}})
    text = report.write_report("full", str(tmp_path)).read_text()
    metrics = text.split("## Metrics")[1].split("Evaluation sizes:")[0]
    assert "—" not in metrics
    assert tables(text) == {"Language modelling": ["metric", "BASE", "MID", "SFT", "RL"],
                            "Chat": ["metric", "MID", "SFT", "RL"]}
    assert table_row(text, "CORE-18 (100/task)") == ["0.0000", "0.0100", "0.0200", "0.0300"]
    assert table_row(text, "bits per byte (200.0k bytes)") == ["0.3000", "0.3100", "0.3200", "0.3300"]
    assert table_row(text, "demo arithmetic pass@1 (64 problems)") == ["0.9000"] * 3
    assert "ARC" not in metrics and "ChatCORE" not in metrics  # not measured: no row


def test_differing_sample_sizes_are_written_in_each_cell(tmp_path):
    run = tmp_path / "runs" / "mixed"
    for stage, per_task in (("base", 100), ("sft", -1)):
        write(run / stage / "meta.json", meta(stage, 10, 40_000, 5.0, 1.0))
        write(run / stage / "eval" / "core.json", {"metric": "CORE-18", "score": 0.1, "max_per_task": per_task})
    text = report.write_report("mixed", str(tmp_path)).read_text()
    assert table_row(text, "CORE-18") == ["0.1000 (100/task)", "0.1000 (all examples)"]


def test_gpu_check_keeps_the_report_from_where_it_is_written(tmp_path):
    """benchmarks/gpu_check.sh asks the run layout where the demo's report is (it once copied it
    from a path that did not exist, and `2>/dev/null` hid that): its snippet, pointed at a run
    here, names the file write_report writes; and no script silences a failed copy."""
    import re
    import subprocess
    import sys

    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    script = (benchmarks / "gpu_check.sh").read_text()
    snippet = re.search(r'keep demo "\$\("\$py" -c "(.*?)"\)"', script, re.S)
    assert snippet, "gpu_check.sh no longer asks picochat where the demo report is"
    code = snippet.group(1).replace("/tmp/picochat_gpu_check", str(tmp_path))
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    write(tmp_path / "runs" / "gpu" / "base" / "metrics.jsonl", '{"step": 1, "loss": 5.0}\n')
    assert Path(printed.strip()) == report.write_report("gpu", str(tmp_path))
    silenced = re.compile(r"\s*cp\b.*(2>\s*/dev/null|\|\|\s*true)")
    for sh in benchmarks.glob("*.sh"):
        hidden = [line for line in sh.read_text().splitlines() if silenced.match(line)]
        assert not hidden, f"{sh.name} hides a failed copy: {hidden}"
