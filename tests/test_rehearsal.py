"""A rehearsal of the real job: `picochat speedrun --preset d20`, end to end, against a local hub.

The hub (tests/helpers/fake_hub.py) serves small files in each dataset's exact published format
at the registered URLs' paths (PICOCHAT_URL_PREFIX keeps host and path), so download, format
checks, tokenizer, base, CORE (all 22 tasks), mid, SFT, chat evals, RL and the report run through
the code a GPU user runs. Only the model's size, batch sizes, step counts and eval sample sizes are
overridden (and compilation, which is the GPU fast path), so it finishes on 2 CPU cores.
"""

from __future__ import annotations

import json

import pytest
from helpers.fake_hub import build_fake_hub, serve_fake_hub

from picochat import cli

TRAIN = "compile = false\ncompile_optim = false\nfused_adamw = false\neval_every = 0\nsave_every = 0\n"
TINY = f"""
[model]
depth = 2
head_dim = 64
seq_len = 128
vocab_size = 1024

[tokenizer]
vocab_size = 1024
max_chars = 2000000

[base]
device_batch_size = 4
total_batch_tokens = 512
num_steps = 4
eval_tokens = 1024
{TRAIN}
[mid]
device_batch_size = 4
total_batch_tokens = 512
num_steps = 3
eval_tokens = 1024
{TRAIN}
[sft]
device_batch_size = 4
total_batch_tokens = 512
num_steps = 3
eval_tokens = 1024
{TRAIN}
[rl]
device_batch_size = 4
num_steps = 1
{TRAIN}
[grpo]
prompts_per_step = 2
samples_per_prompt = 2
max_new_tokens = 16
eval_problems = 4
pass_k = 2
max_rows = 8

[eval]
max_bytes = 20000

[chateval]
max_problems = 4
max_new_tokens = 16
"""


def _run(argv: list[str]) -> None:
    try:
        cli.main(argv)
    except SystemExit as e:
        assert e.code in (0, None), f"`picochat {' '.join(argv)}` exited with {e.code}"


@pytest.mark.slow
def test_d20_speedrun_from_download_to_report_card(tmp_path, monkeypatch, capsys):
    root = build_fake_hub(tmp_path / "hub", train_shards=2)
    monkeypatch.delenv("PICOCHAT_MIRROR", raising=False)  # everything must come through downloads
    (tmp_path / "tiny.toml").write_text(TINY)
    home = tmp_path / "home"
    with serve_fake_hub(root) as hub:
        monkeypatch.setenv("PICOCHAT_URL_PREFIX", hub.url_prefix)
        _run(["speedrun", "--preset", "d20", "--run", "rehearsal", "--home", str(home), "--device", "cpu",
              "--config", str(tmp_path / "tiny.toml")])
    out = capsys.readouterr().out

    # the speedrun's first step downloaded every dataset from the hub, at its published path
    asked = "\n".join(hub.requests)
    for path in ("climbmix-400b-shuffle/resolve/main/shard_00000.parquet",
                 "climbmix-400b-shuffle/resolve/main/shard_06542.parquet", "smol-smoltalk", "auxiliary_train",
                 "ARC-Easy/train", "ARC-Challenge/train", "words_alpha.txt", "eval_bundle.zip",
                 "grade-school-math", "HumanEval.jsonl.gz"):
        assert path in asked, f"the rehearsal never downloaded {path}"

    run = home / "runs" / "rehearsal"
    for stage in ("tokenizer", "base", "mid", "sft", "rl", "report"):
        assert (run / stage).is_dir(), f"stage {stage} left no artifact"
    report = (run / "report" / "report.md").read_text()
    # the downloaded bundle has all 22 tasks, so the score is CORE itself, not CORE-18
    core = json.loads((run / "base" / "eval" / "core.json").read_text())
    assert core["metric"] == "CORE" and len(core["centered"]) == 22
    assert "CORE" in report and "CORE-18" not in report
    for task in ("ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval"):
        assert task.lower().replace("-", "_") in report.lower().replace("-", "_"), f"{task} missing from the report"
    assert "speedrun finished" in out
