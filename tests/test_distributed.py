"""Distributed training on CPU (gloo, torchrun --nproc_per_node=2): FSDP2 equals one process, its
consolidated checkpoints resume on 1 and on 2 ranks, DistMuon equals Muon, fused AdamW equals the
written-out one. (DDP vs one process: tests/test_trainer.py.)"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from picochat.common.device import DistInfo
from picochat.common.errors import UserError
from picochat.config import TrainConfig
from picochat.model.gpt import GPT, GPTConfig
from picochat.optim.adamw import AdamW
from picochat.optim.muon import orthogonalize
from picochat.train import checkpoint
from picochat.train.parallel import parallelize

HELPERS = Path(__file__).parent / "helpers"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(script: str, *args, port: int = 0) -> subprocess.CompletedProcess:
    """A helper script in one process, or under torchrun on 2 ranks when given a port."""
    cmd = [sys.executable, str(HELPERS / script), *map(str, args)]
    if port:
        cmd[1:1] = ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def assert_same_losses(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-5), step


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One process, 6 steps (the reference losses), and a copy killed in step 5 (its step-3 checkpoint)."""
    root = tmp_path_factory.mktemp("single")
    done = run("toy_train.py", root / "full", "--steps", 6)
    assert done.returncode == 0, done.stderr
    killed = run("toy_train.py", root / "killed", "--steps", 6, "--kill-at-batch", 16)  # 4 micro-steps/step
    assert killed.returncode == -9
    return root


def test_fsdp_two_ranks_match_single_process(single, tmp_path):
    two = run("toy_train.py", tmp_path, "--steps", 6, "--parallel", "fsdp", port=29621)
    assert two.returncode == 0, two.stderr
    assert_same_losses(losses(tmp_path), losses(single / "full"))
    a, b = checkpoint.load_weights(single / "full")[0], checkpoint.load_weights(tmp_path)[0]
    assert a.keys() == b.keys() and all(type(v) is torch.Tensor for v in b.values())  # whole tensors
    for k in a:  # Adam's g/sqrt(v) magnifies reduction-order rounding in rarely-seen embedding rows
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-3)


def _assert_close_states(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert type(b) is torch.Tensor and a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_close_states(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_close_states(x, y)
    else:
        assert a == pytest.approx(b)


def test_fsdp_checkpoint_is_consolidated_and_resumes_on_one_and_two(single, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    killed = run("toy_train.py", two, "--steps", 6, "--parallel", "fsdp", "--kill-at-batch", 8, port=29622)
    assert killed.returncode != 0  # 2 micro-steps per rank per step: killed in step 5
    state = checkpoint.load_latest_checkpoint(two)
    ref = checkpoint.load_latest_checkpoint(single / "killed")
    assert state["step"] == ref["step"] == 3 and state["cursors"] == [6, 6]
    # The same whole tensors, under the same names, as the one-process checkpoint.
    _assert_close_states(ref["model"], state["model"])
    _assert_close_states(ref["optimizers"], state["optimizers"])
    shutil.copytree(two, one)

    resumed = run("toy_train.py", one, "--steps", 6)
    assert resumed.returncode == 0, resumed.stderr
    assert "written by 2 ranks, resuming on 1" in resumed.stdout and checkpoint.is_complete(one)

    # Same world size: the data cursors are exact, so the run is the uninterrupted one. This run
    # also switches to the fused AdamW kernel (same state, same math).
    resumed = run("toy_train.py", two, "--steps", 6, "--parallel", "fsdp", "--fused-adamw", port=29623)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed two from step 3/6" in resumed.stdout
    assert_same_losses(losses(two), losses(single / "full"))


def test_dist_muon_matches_muon():
    result = run("dist_muon_check.py", port=29624)
    # stdout too: whether "matches" was printed tells a crash at teardown from one mid-run
    assert result.returncode == 0, f"stdout: {result.stdout[-500:]}\nstderr: {result.stderr[-3000:]}"
    assert "DistMuon matches Muon" in result.stdout


CLOSE_GLOO = """
import torch, torch.distributed as dist
from picochat.common.device import close_distributed
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
out = [torch.zeros(3)]
dist.all_gather(out, torch.arange(3.0))
print("gathered", out[0].tolist(), end="")  # no newline: only an explicit flush shows it
close_distributed(5)
print("not reached")
"""


def test_close_distributed_ends_a_gloo_rank_with_the_exit_code_and_output_flushed():
    result = subprocess.run([sys.executable, "-c", CLOSE_GLOO.format(port=29625)], capture_output=True,
                            text=True, env=ENV, timeout=120)
    assert result.returncode == 5, result.stderr
    assert result.stdout == "gathered [0.0, 1.0, 2.0]"


def test_fused_adamw_matches_reference():
    torch.manual_seed(0)
    shapes = [(7, 5), (3,), (4, 4)]
    ref = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    fused = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    opts = [AdamW([dict(params=ps[:2], lr=0.01), dict(params=ps[2:], lr=0.03)], weight_decay=0.1, fused=f)
            for ps, f in ((ref, False), (fused, True))]
    for step in range(5):
        for a, b in zip(ref, fused, strict=True):
            a.grad = torch.randn(a.shape, generator=torch.Generator().manual_seed(step))
            b.grad = a.grad.clone()
        for opt in opts:
            opt.step()
    for a, b in zip(ref, fused, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert opts[0].state_dict()["state"][0]["step"] == opts[1].state_dict()["state"][0]["step"] == 5


@pytest.mark.slow
def test_compiled_orthogonalize_matches_eager():
    G = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(orthogonalize, dynamic=False)
    torch.testing.assert_close(compiled(G, 5), orthogonalize(G, 5), rtol=1e-4, atol=1e-5)


def test_unknown_parallel_mode_is_a_user_error():
    model = GPT(GPTConfig.from_depth(1, head_dim=32, vocab_size=64, seq_len=8))
    with pytest.raises(UserError, match="--parallel 'tp' is not one of ddp, fsdp"):
        parallelize(model, TrainConfig(parallel="tp"), torch.device("cpu"), DistInfo(0, 0, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fast_paths_match_reference():
    """The CUDA-only paths (untestable on the CPU box): pinned non-blocking batch copies, the fused
    AdamW kernel and the compiled bf16 orthogonalisation, each against its plain version."""
    from picochat.train.trainer import Batch

    cuda = torch.device("cuda")
    x = torch.arange(12).view(3, 4)
    moved = Batch(x, x + 1).to(cuda)
    assert moved.inputs.is_cuda and torch.equal(moved.targets.cpu(), x + 1)

    torch.manual_seed(0)
    ref = [torch.nn.Parameter(torch.randn(64, 32, device=cuda)) for _ in range(3)]
    fused = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    opts = [AdamW(ref, lr=0.01, weight_decay=0.1), AdamW(fused, lr=0.01, weight_decay=0.1, fused=True)]
    for _ in range(3):
        for a, b in zip(ref, fused, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        for opt in opts:
            opt.step()
    for a, b in zip(ref, fused, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)

    # Compiled and eager bf16 iterations round differently and drift apart elementwise (a few %),
    # but both must be the same approximation of the polar factor U Vᵀ: equally far from it, with
    # singular values in the band Polar Express leaves after 5 steps (~[0.86, 1.14]).
    G = torch.randn(4, 256, 128, device=cuda)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    polar = U @ Vh
    compiled, eager = torch.compile(orthogonalize, dynamic=False)(G, 5), orthogonalize(G, 5)
    dist_c, dist_e = ((m - polar).norm() / polar.norm() for m in (compiled, eager))
    assert dist_e < 0.15 and abs(dist_c - dist_e) < 0.02, (dist_c, dist_e)
    sv = torch.linalg.svdvals(compiled)
    assert 0.75 < sv.min() and sv.max() < 1.25, sv.aminmax()
