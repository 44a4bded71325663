"""The speedrun's dry-run plan (picochat/cli/plan.py, cost.py): tokens per step on the demo preset,
checked against the preset's own numbers worked out here, and the printed plan of a GPU preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from picochat.cli.plan import TASK_SIZES, plan_work, task_size
from picochat.config import RunConfig, get_preset


def demo_plan(tmp_path):
    return plan_work(get_preset("demo"), RunConfig(preset="demo", run="p", home=str(tmp_path)), devices=1)


def test_demo_plan_tokens_per_step(tmp_path):
    steps = {w.name: w for w in demo_plan(tmp_path).steps}
    assert steps["base"].train_tokens == 360 * 4096          # demo: num_steps 360 x 4096 tokens
    assert steps["mid"].train_tokens == 60 * 2048            # 60 steps x 2048
    assert steps["sft"].train_tokens == 40 * 2048            # 40 steps x 2048
    rl = steps["rl"]
    # 20 steps x 8 prompts x 8 samples, at most 64 new tokens each; evals: before + every 10 steps = 3,
    # each 128 held-out problems x 4 samples x 64 tokens
    assert rl.decode_tokens == 20 * 8 * 8 * 64 + 3 * 128 * 4 * 64
    assert rl.train_tokens > 20 * 8 * 8 * 64  # replies plus their prompts
    assert steps["bpb-base"].forward_tokens == 200_000 / 4.5  # eval max_bytes at 4.5 chars/token (no tokenizer)
    chat = steps["eval-sft"]  # wordproblems:test:64, generative, 64 new tokens each
    assert chat.decode_tokens == 64 * 64 and chat.forward_tokens > 0
    assert steps["tokenizer"].train_tokens == steps["report"].train_tokens == 0
    assert all(not w.spread for n, w in steps.items() if n.startswith(("eval", "bpb", "core", "samples")))


def test_missing_task_files_use_documented_sizes_without_downloading(tmp_path, monkeypatch):
    monkeypatch.delenv("PICOCHAT_MIRROR", raising=False)
    run = RunConfig(run="p", home=str(tmp_path))
    size = task_size("smoltalk:train", run, None, 2048)
    assert (size.conversations, size.tokens, size.measured) == (*TASK_SIZES[("smoltalk", "train")], False)
    assert task_size("mmlu", run, None, 2048).eval_type == "categorical"          # default split: test
    assert task_size("simplespelling:train:200000", run, None, 2048).conversations == 200_000  # generated: n = size
    assert task_size("gsm8k:train:100", run, None, 2048).conversations == 100      # a file task: n caps it
    assert task_size("smoltalk:train", run, None, 300).tokens == 300               # crop at the context
    assert not list(tmp_path.rglob("*.jsonl*")) and not list(tmp_path.rglob("*.parquet"))


def test_d24_dry_run_on_8_gpus_prints_every_step_time_and_cost(tmp_path):
    r = subprocess.run([sys.executable, "-m", "picochat", "speedrun", "--preset", "d24", "--dry-run", "--gpus", "8",
                        "--home", str(tmp_path)], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "PICOCHAT_MIRROR": ""})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "5,568 steps x 1,048,576 tokens/step (auto)" in out and "8.00 tokens per scaling param" in out
    for step in ("base", "mid", "sft", "eval-sft", "rl", "core-base"):
        assert f"\n  {step} " in out
    assert "estimated time" in out and "cost ~$" in out and "8 GPU(s)" in out


def test_local_only_finds_files_but_never_downloads(tmp_path, monkeypatch):
    import pytest

    from picochat.common.errors import UserError
    from picochat.data import download

    def no_network(*args, **kwargs):
        raise AssertionError("local_only must not download")

    mirror = Path(os.environ.get("PICOCHAT_MIRROR") or "../shared/data")
    monkeypatch.setattr(download, "download_file", no_network)
    monkeypatch.delenv("PICOCHAT_MIRROR", raising=False)
    with download.local_only(), pytest.raises(UserError, match="nothing is downloaded while planning"):
        download.fetch("gsm8k", "train.jsonl", home=str(tmp_path), mirror="")
    if not (mirror / "gsm8k" / "train.jsonl").exists():
        pytest.skip("no data mirror here (set PICOCHAT_MIRROR)")
    with download.local_only():  # a mirror's copy is found as usual
        assert download.fetch("gsm8k", "train.jsonl", home=str(tmp_path), mirror=str(mirror)).is_file()


def test_bad_mixtures_are_one_sentence(tmp_path, monkeypatch):
    import pytest

    monkeypatch.delenv("PICOCHAT_MIRROR", raising=False)  # chitchat's file must not be here (the mirror has it)
    from picochat.cli.plan import mixture_tokens
    from picochat.common.errors import UserError

    run = RunConfig(run="p", home=str(tmp_path))
    with pytest.raises(UserError, match="unknown task spec 'gsm9k:train'"):
        mixture_tokens("gsm9k:train", run, None, 256)
    with pytest.raises(UserError, match="passes after"):
        mixture_tokens("wordproblems:train:10*x", run, None, 256)
    with pytest.raises(UserError, match="no documented size"):
        mixture_tokens("chitchat:train", run, None, 256)
