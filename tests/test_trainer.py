import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from picochat.config import TrainConfig
from picochat.model import artifact
from picochat.model.gpt import GPT, GPTConfig
from picochat.train import checkpoint
from picochat.train.trainer import Batch, Trainer

SCRIPT = Path(__file__).parent / "helpers" / "toy_train.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(out, *args, torchrun: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), str(out), *args]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               str(SCRIPT), str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


def losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_kill_and_resume_is_bit_identical(tmp_path):
    ref = run(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    ref_losses = losses(tmp_path / "ref")
    assert len(ref_losses) == 12 and ref_losses[12] < ref_losses[1] - 0.5  # it learns

    # 4 micro-batches per step; batch 29 is in the middle of step 8 (checkpoints at 3 and 6)
    killed = run(tmp_path / "run", "--kill-at-batch", "29")
    assert killed.returncode == -9
    assert not artifact.is_complete(tmp_path / "run")
    resumed = run(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed run from step 6/12" in resumed.stdout
    assert losses(tmp_path / "run") == ref_losses  # exact float equality, every step
    a = artifact.load_weights(tmp_path / "ref")[0]
    b = artifact.load_weights(tmp_path / "run")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path, capsys):
    killed = run(tmp_path, "--kill-at-batch", "29")
    assert killed.returncode == -9
    ckpts = sorted((tmp_path / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts] == ["step_000003.pt", "step_000006.pt"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:1000])  # truncate the newest
    state = checkpoint.load_latest_checkpoint(tmp_path)
    assert state["step"] == 3
    err = capsys.readouterr().err
    assert "step_000006.pt is unusable because it is truncated" in err and err.count("\n") == 1
    assert ckpts[0].exists() and ckpts[-1].exists()  # nothing is deleted
    resumed = run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {tmp_path.name} from step 3/12" in resumed.stdout  # from the intact checkpoint
    assert artifact.is_complete(tmp_path)


def test_ddp_two_ranks_match_single_process(tmp_path):
    single = run(tmp_path / "one", "--steps", "6")
    assert single.returncode == 0, single.stderr
    double = run(tmp_path / "two", "--steps", "6", torchrun=True)
    assert double.returncode == 0, double.stderr
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-5)


def test_checkpoint_from_two_ranks_resumes_on_one(tmp_path):
    killed = run(tmp_path, "--steps", "6", "--kill-at-batch", "8", torchrun=True)  # 2 micro/step/rank
    assert killed.returncode != 0
    state = checkpoint.load_latest_checkpoint(tmp_path)
    assert state["step"] == 3 and state["cursors"] == [6, 6]  # both ranks' positions are kept
    resumed = run(tmp_path, "--steps", "6")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and artifact.is_complete(tmp_path)


class _ClockedStage:
    """Every training batch costs 1 s and every eval 100 s on a fake clock."""

    def __init__(self, clock: list[float]):
        self.clock = clock

    def batches(self, cursor):
        g = torch.Generator().manual_seed(0)
        while True:
            self.clock[0] += 1.0
            x = torch.randint(0, 32, (2, 8), generator=g)
            yield Batch(x, x, cursor=0)

    def evaluate(self, model) -> dict[str, float]:
        self.clock[0] += 100.0
        return {"score": 0.0}


def test_elapsed_counts_every_training_step_and_no_eval(tmp_path, monkeypatch):
    """Steps between the last progress line and an eval used to drop out of `elapsed` (and so out
    of tokens/s); evals must stay out. 10 steps of 1 s, evals every 3 steps, a line every 4."""
    import picochat.train.trainer as trainer_module

    clock = [0.0]
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: clock[0])
    cfg = TrainConfig(num_steps=10, eval_every=3, log_every=4, save_every=0, grad_clip=0.0,
                      device_batch_size=2, total_batch_tokens=16)
    model = GPT(GPTConfig.from_depth(1, head_dim=32, vocab_size=32, seq_len=8))
    trainer = Trainer(model, cfg, tmp_path / "run", num_steps=10, device=torch.device("cpu"))
    final = trainer.fit(_ClockedStage(clock))
    assert final["elapsed"] == 10.0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["tok_s"] for r in rows if "tok_s" in r] == [16.0, 16.0, 16.0]  # 16 tokens per 1-s step


def test_a_stop_request_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    # rank 1 alone gets SIGTERM during step 7 (2 micro-batches per step); without agreement rank 1
    # would enter the checkpoint save while rank 0 began step 8, and the job would hang
    stopped = run(tmp_path, "--term-at", "1:13", torchrun=True)
    assert stopped.returncode != 0  # a stopped stage exits 130 on every rank
    assert "stopped at step 7; checkpoint saved" in stopped.stdout, stopped.stdout + stopped.stderr
    assert [p.name for p in sorted((tmp_path / "checkpoints").glob("step_*.pt"))][-1] == "step_000007.pt"
    resumed = run(tmp_path, torchrun=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {tmp_path.name} from step 7/12" in resumed.stdout


def test_snapshots_keep_the_weights_of_every_nth_step_and_load_alone(tmp_path):
    """--snapshot-every N keeps the weights at steps N, 2N, ... (none pruned, the final step is the
    artifact); each snapshot loads to the model the trainer had at that step."""
    from picochat.model import artifact

    cfg = TrainConfig(num_steps=7, eval_every=0, log_every=100, save_every=0, snapshot_every=3, grad_clip=0.0,
                      device_batch_size=2, total_batch_tokens=16)
    model = GPT(GPTConfig.from_depth(1, head_dim=32, vocab_size=32, seq_len=8))
    seen = {}
    trainer = Trainer(model, cfg, tmp_path / "run", num_steps=7, device=torch.device("cpu"))
    original = trainer._snapshot

    def snapshot_and_remember():
        seen[trainer.step] = {k: v.clone() for k, v in model.state_dict().items()}
        original()

    trainer._snapshot = snapshot_and_remember
    trainer.fit(_ClockedStage([0.0]))
    snaps = artifact.list_snapshots(tmp_path / "run")
    assert list(snaps) == [3, 6] == sorted(seen)
    for step, path in snaps.items():
        loaded = artifact.load_snapshot(path).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in seen[step].items())
    assert not torch.equal(seen[3]["lm_head.weight"], seen[6]["lm_head.weight"])  # training moved between them
