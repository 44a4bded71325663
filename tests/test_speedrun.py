"""End to end: a shrunken demo through every stage, killed mid-way and rerun (marked slow; runs in CI)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HELPERS = Path(__file__).resolve().parent / "helpers"

# The demo preset, shrunk to seconds per stage: same stages, same code, tiny sizes.
TINY = """
[model]
depth = 1
seq_len = 128
[tokenizer]
vocab_size = 1024
max_chars = 1000000
[base]
num_steps = 24
device_batch_size = 8
total_batch_tokens = 1024
eval_every = 12
save_every = 4
eval_tokens = 2048
log_every = 2
[mid]
num_steps = 4
eval_every = 2
save_every = 2
eval_tokens = 2048
[sft]
num_steps = 4
eval_every = 2
save_every = 2
eval_tokens = 2048
[rl]
num_steps = 2
eval_every = 2
save_every = 1
[grpo]
prompts_per_step = 2
samples_per_prompt = 2
max_new_tokens = 24
eval_problems = 4
pass_k = 2
[eval]
max_bytes = 20000
[chateval]
task = "wordproblems:test:4"
max_new_tokens = 24
"""


def speedrun(home: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "picochat", "speedrun", "--run", "t", "--home", str(home), "--config", str(config)]


@pytest.mark.slow
def test_tiny_demo_every_stage_with_kill_and_rerun(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    home = tmp_path / "home"
    env = {**os.environ, "PICOCHAT_MIRROR": "", "OMP_NUM_THREADS": "2"}  # offline: the embedded corpus
    run = home / "runs" / "t"

    # 1. a crash (SIGKILL) right after base training's step-4 checkpoint is on disk: the helper kills
    # at a fixed point, where polling for the file raced a fast machine that finished first
    killed = subprocess.run([sys.executable, str(HELPERS / "stop_after_save.py"), "--", "4",
                             *speedrun(home, config)[3:]], env=env, capture_output=True, text=True, timeout=900)
    assert "killed after the step-4 checkpoint" in killed.stdout, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert list((run / "base" / "checkpoints").glob("step_*.json"))
    assert not (run / "base" / "meta.json").exists()

    # 2. the same command again continues, through every stage, to the report
    done = subprocess.run(speedrun(home, config), env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tokenizer" in done.stdout and "resumed base from step" in done.stdout
    for stage in ("base", "mid", "sft", "rl"):
        assert (run / stage / "meta.json").exists(), stage
    report = run / "report" / "report.md"
    assert report.exists() and "| metric | BASE | MID | SFT | RL |" in report.read_text()
    # every stage was evaluated: a number in every cell of the metrics, with its sample size
    metrics = report.read_text().split("## Metrics")[1].split("Evaluation sizes:")[0]
    assert "—" not in metrics and "| metric | MID | SFT | RL |" in metrics, metrics
    assert "bits per byte (" in metrics and "demo arithmetic pass@1 (4 problems)" in metrics, metrics
    assert list((run / "report").glob("*.png"))

    # 3. a third run finds everything complete and trains nothing
    again = subprocess.run(speedrun(home, config), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already complete" in again.stdout and "step 1/" not in again.stdout

    # 4. the finished model can be talked to from a script
    question = "Mia has 3 apples and buys 4 more. How many apples does Mia have now?"
    chat = subprocess.run([sys.executable, "-m", "picochat", "chat", "--run", "t", "--home", str(home),
                           "--temperature", "0", "-p", question],
                          env=env, capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr
    # the command's greedy reply is the latest stage's (RL's), through the one engine
    import io

    from picochat.cli.chat import reply
    from picochat.config import ChatConfig
    from picochat.engine.engine import Engine, SamplingParams
    from picochat.run_layout import load_model_and_tokenizer

    model, tokenizer, stage = load_model_and_tokenizer("t", str(home), "", "cpu")
    assert stage == "rl"
    expected = io.StringIO()
    reply(Engine(model, tokenizer), [{"role": "user", "content": question}],
          SamplingParams(max_tokens=ChatConfig().max_tokens, temperature=0.0), expected)
    assert expected.getvalue().strip() and chat.stdout == expected.getvalue()
