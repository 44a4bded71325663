"""In-loop evaluation (eval/in_loop.py): CORE + greedy samples during base, ChatCORE during SFT,
handed to the stages by the `picochat train` commands (picochat/cli/__init__.py), through the trainer's
`in_loop` hook into metrics.jsonl and the report's plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from test_mid_sft import SEQ, make_run, tok  # noqa: F401  (tok: the module-scoped tokenizer fixture)

from picochat.cli import Resolved
from picochat.cli.train import base_main, sft_main
from picochat.config import ModelConfig, RunConfig, TrainConfig
from picochat.eval import in_loop, plots
from picochat.eval.report import StageData, write_report
from picochat.model.gpt import GPT, GPTConfig
from picochat.tokenizer.tokenizer import Tokenizer
from picochat.train.trainer import Batch, Trainer

MIRROR = os.environ.get("PICOCHAT_MIRROR", "")


def needs_mirror(*parts: str):
    present = bool(MIRROR) and Path(MIRROR, *parts).exists()
    return pytest.mark.skipif(not present, reason=f"PICOCHAT_MIRROR with {'/'.join(parts)} is not available")


def metric_rows(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- the trainer's hook


class CountingStage:
    name = "toy"

    def __init__(self, in_loop=None):
        self.in_loop, self.evaluated = in_loop, []

    def batches(self, cursor):
        i = cursor or 0
        while True:
            rows = (torch.full((2, 1), i % 64) + torch.arange(17)) % 64
            yield Batch(rows[:, :-1], rows[:, 1:], None, i + 1)
            i += 1

    def evaluate(self, model):  # the regular hook: eval_every and the end only
        self.evaluated.append("regular")
        return {"regular": 1.0}


class RecordingInLoop:
    def __init__(self, every: int):
        self.every, self.asked, self.ran = every, [], []

    def due(self, step: int, last: bool) -> bool:
        self.asked.append(step)
        return in_loop.is_due(self.every, step, last)

    def run(self, model, step):
        assert not model.training  # evals run in eval mode
        self.ran.append(step)
        return {"score": step / 10, "samples": [{"prompt": "p", "completion": "c"}]}


def test_trainer_asks_every_step_and_logs_the_in_loop_evals(tmp_path, capsys):
    hook = RecordingInLoop(every=3)
    stage = CountingStage(hook)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, head_dim=32, vocab_size=64, seq_len=16))
    cfg = TrainConfig(device_batch_size=2, total_batch_tokens=32, num_steps=7, eval_every=5, save_every=0,
                      log_every=100)
    final = Trainer(model, cfg, tmp_path / "toy", num_steps=7, device=torch.device("cpu")).fit(stage)
    assert hook.asked == list(range(1, 8)) and hook.ran == [3, 6, 7]      # every 3 steps and the last
    assert stage.evaluated == ["regular", "regular"]                       # step 5 and the last, not 3 or 6
    rows = {r["step"]: r for r in metric_rows(tmp_path / "toy")}
    assert rows[3]["score"] == 0.3 and "regular" not in rows[3] and rows[5]["regular"] == 1.0
    assert rows[7]["score"] == 0.7 and rows[7]["samples"] == [{"prompt": "p", "completion": "c"}]
    assert final["score"] == 0.7
    assert "toy step 3: score 0.3000\n" in capsys.readouterr().out       # numbers printed, samples not


def test_schedules_and_off_switches(tok, tmp_path):  # noqa: F811
    assert [s for s in range(1, 11) if in_loop.is_due(4, s, s == 10)] == [4, 8, 10]
    assert not any(in_loop.is_due(0, s, True) for s in range(1, 5))
    lines: list[str] = []
    train = TrainConfig(core_every=2, parallel="fsdp")
    assert in_loop.InLoopCore(train, tok, torch.device("cpu"), mirror="", home=str(tmp_path), world_size=2,
                              log=lines.append).every == 0
    assert lines == ["in-loop CORE: off under --parallel fsdp (each rank would run different forwards of the "
                     "sharded model); evaluate the finished model instead"]
    lines.clear()
    missing = in_loop.InLoopCore(TrainConfig(core_every=2), tok, torch.device("cpu"), mirror=str(tmp_path),
                                 home=str(tmp_path), log=lines.append)
    assert missing.bundle is None and missing.every == 2 and len(lines) == 1          # samples still run
    assert lines[0].startswith("in-loop CORE: off (the CORE eval bundle was not found")
    lines.clear()
    chat = in_loop.InLoopChatCore(TrainConfig(chatcore_every=2, chatcore_tasks="arc_easy"), tok,
                                  torch.device("cpu"), preset="d20", mirror=str(tmp_path), home=str(tmp_path),
                                  log=lines.append)
    assert chat.every == 0 and lines[-1].startswith("in-loop ChatCORE: off (")


# ----------------------------------------------------------------------------- the stages, end to end


def make_tokenizer_run(tmp_path: Path, tokenizer: Tokenizer) -> str:
    tokenizer.save(tmp_path / "runs" / "t" / "tokenizer" / "tokenizer.json")
    return str(tmp_path)


@needs_mirror("core_icl", "core.yaml")
def test_base_writes_core_and_samples_into_metrics_and_the_report_plots_them(tmp_path, tok, capsys):  # noqa: F811
    home = make_tokenizer_run(tmp_path, tok)
    cfg = Resolved(run=RunConfig(run="t", home=home, device="cpu", seed=0, mirror=MIRROR),
                   model=ModelConfig(depth=1, head_dim=32, vocab_size=tok.vocab_size, seq_len=SEQ),
                   train=TrainConfig(device_batch_size=4, total_batch_tokens=4 * SEQ, num_steps=4, eval_every=0,
                                     eval_tokens=4 * SEQ, save_every=0, log_every=1, core_every=2,
                                     core_max_per_task=2))
    base_main(cfg)
    rows = {r["step"]: r for r in metric_rows(tmp_path / "runs/t/base")}
    assert [s for s, r in rows.items() if "core" in r] == [2, 4]
    for s in (2, 4):
        assert rows[s]["core_tasks"] == 18 and -1.0 <= rows[s]["core"] <= 1.0
        assert len(rows[s]["samples"]) == 8 and rows[s]["samples"][0]["prompt"] == "The capital of France is"
    out = capsys.readouterr().out
    assert "step 2: CORE-18 " in out and "The capital of France is▸" in out
    report = write_report("t", home)
    assert (report.parent / "in_loop.png").stat().st_size > 1000
    assert "![In-loop evaluations (CORE, ChatCORE vs step)](in_loop.png)" in report.read_text()


@needs_mirror("arc", "ARC-Easy-Test.jsonl")
def test_sft_writes_chatcore_into_metrics_and_the_report_plots_it(tmp_path, tok):  # noqa: F811
    home = make_run(tmp_path, tok)  # a tokenizer and a random depth-1 base model
    train = TrainConfig(device_batch_size=4, total_batch_tokens=4 * SEQ, num_steps=4, eval_every=0,
                        save_every=0, log_every=1, mixture="wordproblems:train:100, smalltalk:train:20",
                        chatcore_every=2, chatcore_tasks="arc_easy, mmlu", chatcore_max_categorical=6)
    sft_main(Resolved(run=RunConfig(run="t", home=home, device="cpu", seed=0, mirror=MIRROR), train=train))
    rows = {r["step"]: r for r in metric_rows(tmp_path / "runs/t/sft")}
    assert [s for s, r in rows.items() if "chatcore" in r] == [2, 4]
    for s in (2, 4):
        r = rows[s]
        assert r["chatcore_tasks"] == 2
        assert all(k * 6 == round(k * 6) for k in (r["chat_arc_easy"], r["chat_mmlu"]))  # out of 6 problems
        assert r["chatcore"] == pytest.approx(((r["chat_arc_easy"] - 0.25) + (r["chat_mmlu"] - 0.25)) / 0.75 / 2)
    report = write_report("t", home)
    assert (report.parent / "in_loop.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- the plot


def test_in_loop_panels_label_partial_metrics():
    base_rows = [{"step": 10, "loss": 3.0}, {"step": 20, "core": 0.05, "core_tasks": 18},
                 {"step": 40, "core": 0.09, "core_tasks": 18}]
    sft_rows = [{"step": 5, "chatcore": 0.1, "chatcore_tasks": 5, "chat_arc_easy": 0.4, "chat_gsm8k": 0.02}]
    demo_rows = [{"step": 5, "chat_wordproblems": 0.5}]
    stages = {"base": StageData("base", metrics=base_rows), "mid": StageData("mid", metrics=demo_rows),
              "sft": StageData("sft", metrics=sft_rows), "rl": StageData("rl")}
    panels = plots.in_loop_panels(stages)
    assert [(p[0], p[1]) for p in panels] == [("base", "CORE-18"), ("mid", "chat tasks"), ("sft", "ChatCORE")]
    assert panels[0][2] == [("CORE-18", ([20, 40], [0.05, 0.09]))]
    assert [name for name, _ in panels[2][2]] == ["ChatCORE", "ARC-Easy", "GSM8K"]
    assert panels[2][2][1][1] == ([5], [pytest.approx(0.2)])               # centred: (0.4 - 0.25) / 0.75
    assert panels[1][2] == [("demo arithmetic", ([5], [0.5]))]            # no baseline: accuracy as is
    assert plots.in_loop_panels({"base": StageData("base", metrics=base_rows[:1])}) == []


def test_preset_defaults():
    """GPU presets: CORE every 2000 base steps on 500 examples per task (nanochat's base_train) and
    ChatCORE every 100 SFT steps; the demo runs neither (it must stay within its time)."""
    from picochat.config import PRESETS

    for name, preset in PRESETS.items():
        rows = preset.stages
        if name == "demo":
            assert all(r.core_every == 0 and r.chatcore_every == 0 for r in rows.values())
            continue
        assert (rows["base"].core_every, rows["base"].core_max_per_task) == (2000, 500)
        assert rows["sft"].chatcore_every == 100 and rows["mid"].chatcore_every == rows["rl"].core_every == 0
