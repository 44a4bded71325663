"""`picochat speedrun --gpus N` (picochat/cli/launch.py): refusals, the flags handed to torchrun, the
multi-node commands, and (slow) a 2-process CPU run of the training stages through torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from picochat import config as C
from picochat.cli import COMMANDS, build_parser, resolve
from picochat.cli.launch import check_devices, config_flags, multi_node_commands
from picochat.common.errors import UserError

TINY = Path(__file__).with_name("test_speedrun.py")


def speedrun(*argv: str, home: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "picochat", "speedrun", "--home", str(home), *argv],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PICOCHAT_MIRROR": "", "CUDA_VISIBLE_DEVICES": ""})


def test_more_gpus_than_the_machine_has_is_refused_in_one_sentence(tmp_path):
    r = speedrun("--gpus", "2", "--run", "x", home=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert msg.startswith("picochat: error: --gpus 2 needs 2 GPUs and this machine has no GPU")
    assert "--device cpu" in msg and not (tmp_path / "runs" / "x" / "tokenizer").exists()
    for gpus, device, match in ((0, "cpu", "at least 1"), (2, "mps", "drop --device mps")):
        with pytest.raises(UserError, match=match):
            check_devices(gpus, device)
    check_devices(4, "cpu")  # CPU processes: allowed anywhere


def test_torchrun_gets_the_exact_resolved_config_as_flags():
    """Every field of a stage's resolved config survives the trip through flags, whatever its type."""
    from picochat.cli.speedrun import PLAN, resolve_step

    parser = build_parser()
    ns = parser.parse_args(["speedrun", "--preset", "d24", "--run", "r", "--home", "/h", "--seed", "7"])
    cfg = resolve(ns._command, ns)
    for step in (s for s in PLAN if s.name in ("base", "mid", "sft", "rl")):
        want = resolve_step(step, cfg)
        cmd = next(c for c in COMMANDS if c.words == step.words)
        again = resolve(cmd, parser.parse_args([*step.words, *config_flags(want, cmd.sections)]))
        assert again.to_dict() == want.to_dict(), step.name
    assert want.train.fp8 is False and cfg.run.seed == 7  # rl: bf16; a bool went through as --no-fp8


def test_multi_node_commands_name_the_rendezvous_and_a_shared_home():
    run = C.RunConfig(preset="d24", run="d24")
    lines = multi_node_commands(run, ["base", "sft"], 8, None)
    assert lines[0] == ("torchrun --nnodes=NODES --nproc_per_node=8 --rdzv-backend=c10d "
                        "--rdzv-endpoint=HOST:29500 --rdzv-id=d24-base -m picochat -- train base "
                        "--preset d24 --run d24 --home /shared/picochat")
    assert "train sft" in lines[1] and len(lines) == 2


CHAT_ROW = "num_steps = 2\ndevice_batch_size = 4\ntotal_batch_tokens = 512\neval_every = 2\nsave_every = 0\n" \
           "eval_tokens = 512\n"
TWO_PROCESS_TOML = """
[model]
depth = 1
seq_len = 64
[tokenizer]
vocab_size = 512
max_chars = 300000
[eval]
max_bytes = 5000
[base]
num_steps = 6
device_batch_size = 4
total_batch_tokens = 512
eval_every = 6
save_every = 3
eval_tokens = 512
log_every = 2
""" + "[mid]\n" + CHAT_ROW + "[sft]\n" + CHAT_ROW


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_cpu_processes_train_every_stage_through_torchrun(tmp_path):
    config = tmp_path / "two.toml"
    config.write_text(TWO_PROCESS_TOML)
    skip = "core-base,samples-base,core-mid,eval-mid,core-sft,eval-sft,rl,bpb-rl,core-rl,eval-rl"
    r = speedrun("--gpus", "2", "--device", "cpu", "--run", "two", "--config", str(config), "--skip", skip,
                 home=tmp_path / "home", timeout=840)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "--rdzv-backend=c10d" in r.stdout and "--nproc_per_node=2" in r.stdout
    run = tmp_path / "home" / "runs" / "two"
    for stage, steps in (("base", 6), ("mid", 2), ("sft", 2)):
        meta = json.loads((run / stage / "meta.json").read_text())
        assert meta["world_size"] == 2 and meta["final"]["step"] == steps, stage
        assert meta["train_config"]["total_batch_tokens"] == 512  # the TOML's [stage] table reached the ranks
    assert (run / "tokenizer" / "tokenizer.json").exists() and (run / "report" / "report.md").exists()
