"""Distributed training on CPU (gloo, torchrun --nproc_per_node=2): FSDP2 equals one process, its
consolidated checkpoints resume on 1 and on 2 ranks, DistMuon equals Muon, fused AdamW equals the
written-out one, a warm start seeds FSDP2-sharded optimizers, RL's held-out eval on 2 ranks equals
one process; `picochat train base` stopped on 2 ranks resumes on 1 with exactly the remaining
documents; and a two-node rehearsal (two torchrun agents, c10d rendezvous on localhost) loses a
node and resumes exactly. (DDP vs one process: tests/test_trainer.py.)"""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from picochat.common.device import DistInfo
from picochat.common.errors import UserError
from picochat.config import TrainConfig
from picochat.model import artifact
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
    a, b = artifact.load_weights(single / "full")[0], artifact.load_weights(tmp_path)[0]
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
    assert "written by 2 ranks, resuming on 1" in resumed.stdout and artifact.is_complete(one)

    # Same world size: the data cursors are exact, so the run is the uninterrupted one. This run
    # also switches to the fused AdamW kernel (same state, same math).
    resumed = run("toy_train.py", two, "--steps", 6, "--parallel", "fsdp", "--fused-adamw", port=29623)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed two from step 3/6" in resumed.stdout
    assert_same_losses(losses(two), losses(single / "full"))


def test_warm_start_seeds_fsdp_sharded_optimizers(tmp_path):
    """A chat stage's warm start under FSDP2: rank 0 reads optimizer.pt, every rank gets its shard."""
    from picochat.train.trainer import Batch, Trainer

    class RandomRows:
        name = "toy"

        def batches(self, cursor):
            g = torch.Generator().manual_seed(0)
            while True:
                x = torch.randint(0, 64, (2, 17), generator=g)
                yield Batch(x[:, :-1], x[:, 1:], None, 0)

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, head_dim=32, vocab_size=64, seq_len=16))
    model.init_weights()
    cfg = TrainConfig(device_batch_size=2, total_batch_tokens=32, num_steps=3, eval_every=0, save_every=0)
    Trainer(model, cfg, tmp_path / "base", num_steps=3, device=torch.device("cpu")).fit(RandomRows())
    result = run("warm_start_check.py", tmp_path / "base", tmp_path / "mid", port=29627)
    assert result.returncode == 0, f"stdout: {result.stdout[-500:]}\nstderr: {result.stderr[-3000:]}"
    assert "warm start under FSDP matches" in result.stdout


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


def test_policy_eval_is_the_same_on_one_and_two_ranks():
    """RL's held-out eval split over 2 ranks (gloo) gives one process's numbers: every problem has its
    own seed, and the counts, rewards, lengths and per-problem results are gathered from both ranks."""
    one, two = run("policy_eval_check.py"), run("policy_eval_check.py", port=29637)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = json.loads(one.stdout.splitlines()[-1]), json.loads(two.stdout.splitlines()[-1])
    assert a["problems"] == b["problems"] == 7 and len(a["correct"]) == 7
    assert a["correct"] == b["correct"] and a["mean_length"] == b["mean_length"]
    for key in ("pass@1", "pass@k", "mean_reward", "pass@1_stderr"):
        assert a[key] == pytest.approx(b[key], abs=1e-12), key
    assert 0 < a["mean_reward"] < 1  # a random model writes some digits: a number that can differ


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


# ----------------------------------------------------------------------------- base on another world size


def base_run_dir(tmp_path: Path) -> Path:
    """A run home whose run 't' has a small tokenizer, ready for `picochat train base`."""
    from picochat.data import synthetic
    from picochat.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.train(synthetic.chunk("train", 0), 400, native=False)
    tok.save(tmp_path / "runs" / "t" / "tokenizer" / "tokenizer.json")
    return tmp_path


def base_cmd(home: Path, stop_after: int, *extra, ranks: int = 0, port: int = 0) -> list[str]:
    """`picochat train base` on a depth-1 model, 64 rows of 256 tokens per step, killed right after
    the checkpoint of step `stop_after` (0: run to the end); under torchrun when ranks > 0."""
    cmd = [sys.executable]
    if ranks:
        cmd += ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={port}"]
    helper = [str(HELPERS / "stop_after_save.py"), "--", str(stop_after)] if stop_after else ["-m", "picochat", "--"]
    return cmd + helper + ["train", "base", "--run", "t", "--home", str(home), "--device", "cpu",
                           "--depth", "1", "--head-dim", "64", "--seq-len", "256", "--device-batch-size", "32",
                           "--total-batch-tokens", "16384", "--num-steps", "20", "--save-every", "2",
                           "--eval-every", "0", "--eval-tokens", "512", "--log-every", "1", *extra]


def logged_docs(log: Path, up_to_rows: int) -> Counter:
    """Documents a rank packed into the batches up to its checkpointed row count (PICOCHAT_DOC_LOG)."""
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    return Counter(tuple(d) for e in entries if e["rows"] <= up_to_rows for d in e["docs"])


@pytest.mark.slow
def test_base_stopped_on_two_ranks_resumes_on_one_with_exactly_the_remaining_documents(tmp_path):
    """The must-show of "resume anywhere": 2 gloo ranks train base and die after the step-2
    checkpoint; 1 rank resumes, re-sharding their cursors, and dies after step 16. What the 2 ranks
    packed, what the 1 rank packed and what it still holds are, together, exactly the first
    documents of the single-rank stream, each once: nothing trained twice, nothing skipped."""
    from picochat.data.corpus import open_corpus

    home = base_run_dir(tmp_path)
    logs = tmp_path / "doclog"
    env = {**ENV, "PICOCHAT_DOC_LOG": str(logs)}
    two = subprocess.run(base_cmd(home, 2, ranks=2, port=29626), capture_output=True, text=True, env=env,
                         timeout=300)
    assert "killed after the step-2 checkpoint" in two.stdout, two.stderr[-3000:]
    out = home / "runs" / "t" / "base"
    old = checkpoint.load_latest_checkpoint(out)["cursors"]
    assert [c["world_size"] for c in old] == [2, 2]
    before = sum((logged_docs(logs / f"train-rank{r}-of2.jsonl", c["stats"]["rows"]) for r, c in enumerate(old)),
                 Counter())

    one = subprocess.run(base_cmd(home, 16), capture_output=True, text=True, env=env, timeout=300)
    assert "killed after the step-16 checkpoint" in one.stdout, one.stderr[-3000:]
    assert "written by 2 ranks, resuming on 1: the data cursors are re-sharded" in one.stdout
    state = checkpoint.load_latest_checkpoint(out)
    assert state["step"] == 16
    (cursor,) = state["cursors"]
    after = logged_docs(logs / "train-rank0-of1.jsonl", cursor["stats"]["rows"])
    pending = Counter(tuple(d) for d in cursor["pending"])
    assert before and after and not set(before) & set(after)

    # The old ranks' leftovers are read by now, so the one rank stands at a plain position
    # [epoch 0, chunk, offset]: everything before it, in single-rank order, has been read once.
    assert "leftover" not in cursor and cursor["next"][0] == 0
    _, chunk, offset = cursor["next"]
    corpus = open_corpus("synthetic", "train")
    read = Counter((c, i) for c in range(chunk) for i in range(len(corpus.chunk(c))))
    read.update((chunk, i) for i in range(offset))
    assert before + after + pending == read

    done = subprocess.run(base_cmd(home, 0), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed base from step 16/20" in done.stdout and artifact.is_complete(out)


# ----------------------------------------------------------------------------- two nodes (issue 23)


def fsdp_base_args(home: Path) -> list[str]:
    """`picochat train base` with FSDP2 on a depth-2 model: 10 steps of 8 rows of 128 tokens."""
    return ["train", "base", "--run", "t", "--home", str(home), "--device", "cpu", "--parallel", "fsdp",
            "--depth", "2", "--head-dim", "64", "--seq-len", "128", "--device-batch-size", "4",
            "--total-batch-tokens", "1024", "--num-steps", "10", "--save-every", "3", "--eval-every", "0",
            "--eval-tokens", "1024", "--log-every", "1"]


def two_nodes(home: Path, port: int, kill_node_after: int = 0) -> list[subprocess.CompletedProcess]:
    """The job on two "nodes" of one process each: two torchrun agents meeting by c10d rendezvous on
    localhost, as `torchrun --nnodes=2` on two machines would. With kill_node_after, the second
    node's agent and worker die right after the checkpoint of that step (a lost machine)."""
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=job{port}", "--max_restarts=0"]
    doomed = [str(HELPERS / "stop_after_save.py"), "--", str(kill_node_after), "--node"]
    entries = [["-m", "picochat", "--"], doomed if kill_node_after else ["-m", "picochat", "--"]]
    procs = [subprocess.Popen(node + entry + fsdp_base_args(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV, start_new_session=True) for entry in entries]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:  # a node left waiting: end its whole tree, then fail below
            os.killpg(p.pid, 9)
            out, err = p.communicate()
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


@pytest.mark.slow
def test_two_nodes_fsdp_lose_a_node_and_the_restarted_job_resumes_exactly(tmp_path):
    """Multi-node rehearsal without GPUs: base with FSDP2 over two single-process "nodes" (gloo).
    One node dies after the step-6 checkpoint; the other fails in its next collective; the job,
    started again, resumes from step 6 and ends with the losses and weights of a run that was
    never interrupted."""
    ref, run = base_run_dir(tmp_path / "ref"), base_run_dir(tmp_path / "run")
    done = two_nodes(ref, 29631)
    assert all(r.returncode == 0 for r in done), [r.stderr[-2000:] for r in done]

    lost = two_nodes(run, 29632, kill_node_after=6)
    assert "killed after the step-6 checkpoint" in lost[1].stdout, lost[1].stderr[-3000:]
    assert lost[0].returncode != 0 and lost[1].returncode != 0  # the surviving node's job fails too
    out = run / "runs" / "t" / "base"
    assert not artifact.is_complete(out) and checkpoint.load_latest_checkpoint(out)["step"] == 6

    again = two_nodes(run, 29633)
    assert all(r.returncode == 0 for r in again), [r.stderr[-2000:] for r in again]
    assert "resumed base from step 6/10" in again[0].stdout + again[1].stdout
    ref_out = ref / "runs" / "t" / "base"
    assert losses(out) == losses(ref_out) and len(losses(out)) == 10  # exact, every step
    (a, _), (b, _) = artifact.load_weights(ref_out), artifact.load_weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
