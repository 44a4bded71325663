"""RL (train/rl.py, train/rollouts.py): the pass@k estimator, advantages, rollout rows (loss only on
sampled tokens), the policy loss and its options against hand computations, exact resume, a
short RL run that measurably raises the reward of a toy verifiable task, held-out evals through
eval's generative evaluator (eval/chat.py: evaluate_policy), and the command."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
import torch
from helpers import tiny

from picochat.cli import Resolved
from picochat.cli import main as cli_main
from picochat.cli.train import rl_main
from picochat.config import GRPOConfig, RunConfig, TrainConfig
from picochat.engine.engine import Completion, Engine, derive_seed
from picochat.eval.chat import evaluate_policy, pass_at_k
from picochat.model import artifact
from picochat.model.gpt import GPT
from picochat.tasks.common import Task
from picochat.tokenizer.tokenizer import Tokenizer
from picochat.train import rl
from picochat.train.rollouts import (
    group_advantages,
    micro_batches,
    rollout_rows,
    token_logprobs,
)
from picochat.train.trainer import Trainer

TEXT = ("Say some digits please. Here are digits: 0 1 2 3 4 5 6 7 8 9 and 42 and 1234. "
        "Say some words please. Hello there, how are you today? ") * 20


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster, and far faster on a machine shared with other jobs
    (threads that wait on each other for every small matmul)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([TEXT], vocab_size=300, native=False)


class Digits(Task):
    """A toy verifiable task: the reward is the fraction of the reply's characters that are digits.
    A random model writes few digits; the policy gradient should make it write more."""

    name = "digits"

    def __init__(self, n: int, offset: int = 0):
        self.n, self.offset = n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        i = self._check_index(i) + self.offset
        return {"messages": [{"role": "user", "content": f"Say some digits please, {i}."},
                             {"role": "assistant", "content": "0123"}]}

    def reward(self, example: dict, reply: str) -> float:
        return sum(ch.isdigit() for ch in reply) / len(reply) if reply else 0.0

    def evaluate(self, example: dict, reply: str) -> bool:
        return self.reward(example, reply) > 0.5


def tiny_gpt(vocab_size: int, seed: int = 0) -> GPT:
    return tiny.tiny_gpt(vocab_size, seq_len=64, n_layer=2, n_embd=64, seed=seed)


GRPO = GRPOConfig(task="", eval_task="", prompts_per_step=4, samples_per_prompt=8, max_new_tokens=8,
                  eval_problems=16, pass_k=4, max_rows=32, top_k=0)
TRAIN = TrainConfig(device_batch_size=16, num_steps=16, matrix_lr=0.02, embedding_lr=0.05, unembedding_lr=0.02,
                    warmdown_frac=0.0, eval_every=0, save_every=0, log_every=1)


# ----------------------------------------------------------------------------- pieces


def test_pass_at_k_is_the_subset_probability():
    """pass@k = P(a random k-subset of the n samples holds a pass), by enumeration."""
    for n in range(1, 7):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(outcomes, k))
                want = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(want)
            assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    a = group_advantages(r)
    assert torch.allclose(a.mean(dim=1), torch.zeros(3), atol=1e-7)
    assert a[0].tolist() == [0.5, -0.5, -0.5, 0.5] and a[1].abs().sum() == 0
    s = group_advantages(r, std_normalize=True)
    assert torch.allclose(s[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-4)
    assert s[1].abs().sum() == 0  # an all-equal group stays at zero, no division blow-up
    assert torch.allclose(s[2].std(unbiased=False), torch.tensor(1.0), atol=1e-4)


def test_paired_stderr():
    """The gain's stderr is that of the per-problem differences: 0 when every problem moves alike."""
    assert rl.paired_stderr([1, 2, 3, 0], [2, 3, 4, 1], k=4) == 0.0
    d = [0.25, -0.25, 0.5, 0.0]
    want = torch.tensor(d).std().item() / 2
    assert rl.paired_stderr([0, 1, 0, 2], [1, 0, 2, 2], k=4) == pytest.approx(want)
    assert rl.paired_stderr([1], [2], k=4) is None


def test_derive_seed_is_stable_and_spreads():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    assert len({derive_seed(1, b, j) for b in range(10) for j in range(10)}) == 100
    assert 0 <= derive_seed(5) < 2**63


def test_rows_weight_only_sampled_tokens():
    """Targets are -1 on the prompt and on forced tool tokens; sampled targets carry the advantage
    and the engine's logprob; norm spreads the step's sampled-token count over micro-batches."""
    prompts = [[1, 2, 3], [4, 5]]
    c = [[Completion(ids=[10, 11, 12, 13], forced=[False, True, True, False], logprobs=[-1, -2, -3, -4]),
          Completion(ids=[20], forced=[False], logprobs=[-0.5])],
         [Completion(ids=[30, 31], forced=[False, False], logprobs=[-0.1, -0.2]),
          Completion(ids=[40, 41, 42], forced=[False, False, False], logprobs=[-1, -1, -1])]]
    adv = torch.tensor([[1.0, -1.0], [0.5, -0.5]])
    rows = rollout_rows(prompts, c, adv, max_len=63)
    batches = micro_batches(rows, rows_per_micro=3, pad_id=0)
    assert [b.inputs.size(0) for b in batches] == [3, 1]
    b = batches[0]
    assert b.inputs[0].tolist() == [1, 2, 3, 10, 11, 12]
    assert b.targets[0].tolist() == [-1, -1, 10, -1, -1, 13]
    assert b.weights[0].tolist() == [0, 0, 1, 0, 0, 1]
    assert b.old_logprobs[0].tolist() == [0, 0, -1, 0, 0, -4]
    assert b.targets[1].tolist() == [-1, -1, 20, -1, -1, -1]       # padding carries no loss
    assert b.weights[1].tolist() == [0, 0, -1, 0, 0, 0]
    assert b.targets[2].tolist()[:3] == [-1, 30, 31] and b.weights[2, 1].item() == 0.5
    total_sampled = 2 + 1 + 2 + 3
    assert all(m.norm == total_sampled / 2 for m in batches)
    assert sum(int((m.targets >= 0).sum()) for m in batches) == total_sampled


def _stage(tok, model, grpo=GRPO, n=64, seed=0, ref=None, rows_per_micro=16):
    engine = Engine(model, tok, tool=None)
    return rl.RLStage(engine, Digits(n), Digits(16, offset=1000), grpo, rows_per_micro=rows_per_micro,
                      seed=seed, evaluate_policy=evaluate_policy, ref_model=ref)


def test_loss_is_the_token_level_policy_gradient(tok):
    """-(sum A log p) / N by hand; the PPO form has the same gradient at pi = pi_old; the k3 KL
    term is 0 with zero gradient when the policy is the reference."""
    model = tiny_gpt(tok.vocab_size)
    stage = _stage(tok, model, rows_per_micro=32)
    batch = stage._micro_batches(stage.rollout(0))[0]
    logits = model(batch.inputs)
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    valid = batch.targets >= 0
    logp = logp_all.gather(-1, batch.targets.clamp_min(0)[..., None])[..., 0] * valid
    want = -(logp * batch.weights).sum() / batch.norm
    loss = stage.loss(model, batch)
    assert loss.item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)
    assert batch.norm == valid.sum().item()  # one micro-batch: normalised by its sampled tokens

    def grads(loss_value):
        model.zero_grad()
        loss_value.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    g_pg = grads(stage.loss(model, batch))
    ppo = _stage(tok, model, replace(GRPO, ppo_clip=0.2))
    on_policy = replace(batch, old_logprobs=token_logprobs(model, batch.inputs, batch.targets))
    assert torch.allclose(grads(ppo.loss(model, on_policy)), g_pg, atol=1e-5, rtol=1e-3)
    kl = _stage(tok, model, replace(GRPO, kl_coef=0.5))
    with_ref = replace(batch, ref_logprobs=token_logprobs(model, batch.inputs, batch.targets))
    assert torch.allclose(grads(kl.loss(model, with_ref)), g_pg, atol=1e-5, rtol=1e-3)
    assert kl.metrics()["kl"] == pytest.approx(0.0, abs=1e-6)


def test_ppo_clip_stops_the_gradient_outside_the_trust_region(tok):
    model = tiny_gpt(tok.vocab_size)
    stage = _stage(tok, model, replace(GRPO, ppo_clip=0.2))
    batch = stage._micro_batches(stage.rollout(0))[0]
    current = token_logprobs(model, batch.inputs, batch.targets)
    # old policy much less likely than the current one: ratio >> 1+eps where A > 0 -> clipped
    far = replace(batch, old_logprobs=current - 5.0 * (batch.weights > 0), weights=batch.weights.clamp_min(0))
    model.zero_grad()
    stage.loss(model, far).backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.parameters())
    assert stage.metrics()["clipped"] > 0


def test_batches_resume_exactly(tok):
    """The cursor after step s restarts the stream at step s+1: same rollouts, same rows (also
    between the updates of one rollout batch, whose samples ride in the cursor)."""
    for grpo in (GRPO, replace(GRPO, updates_per_batch=2, ppo_clip=0.2)):
        model = tiny_gpt(tok.vocab_size)
        stage = _stage(tok, model, grpo, rows_per_micro=8)
        it = stage.batches(None)
        per_step = stage.micro_per_step
        assert per_step == 4
        seen = [next(it) for _ in range(3 * per_step)]
        cursor = seen[per_step - 1].cursor
        resumed = _stage(tok, model, grpo, rows_per_micro=8).batches(cursor)
        for want in seen[per_step:]:
            got = next(resumed)
            assert torch.equal(got.inputs, want.inputs) and torch.equal(got.targets, want.targets)
            assert torch.equal(got.weights, want.weights)
        c = seen[per_step - 1].cursor
        assert (c["batch"], c["update"]) == ((1, 0) if grpo.updates_per_batch == 1 else (0, 1))
        assert (c["rollouts"] is None) == (grpo.updates_per_batch == 1)


class _Crash(Exception):
    pass


def _fit(tok, out, crash_after=None, grpo=GRPO):
    """4 RL steps through the real Trainer (checkpoint every 2); optionally die after some micro-batches."""
    model = tiny_gpt(tok.vocab_size)
    stage = _stage(tok, model, grpo, seed=5)
    batches = stage.batches

    def dying(cursor):
        for n, b in enumerate(batches(cursor)):
            if n == crash_after:
                raise _Crash
            yield b

    stage.batches = dying
    cfg = replace(TRAIN, num_steps=4, save_every=2)
    trainer = Trainer(model, cfg, out, num_steps=4, device=torch.device("cpu"), loss_fn=stage.loss,
                      accum_steps=stage.micro_per_step)
    trainer.fit(stage)
    return model


@pytest.mark.parametrize("updates", [1, 2])
def test_crash_and_resume_gives_the_same_model(tok, tmp_path, updates):
    """Killed during step 3 (checkpoint at step 2), rerun: the weights equal an uninterrupted run's
    (same rollouts, from the (seed, batch) seeds, or from the cursor between updates of one batch)."""
    grpo = GRPO if updates == 1 else replace(GRPO, updates_per_batch=2, ppo_clip=0.2)
    want = _fit(tok, tmp_path / "a", grpo=grpo)
    with pytest.raises(_Crash):
        _fit(tok, tmp_path / "b", crash_after=2 * 2 + 1, grpo=grpo)  # 2 micro-batches per step
    got = _fit(tok, tmp_path / "b", grpo=grpo)
    for a, b in zip(want.state_dict().values(), got.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- learning


def test_rl_raises_the_reward_of_a_toy_task(tok, tmp_path):
    """16 steps of GRPO on a tiny random model: the held-out mean reward (same problems, same seeds)
    and the rollouts' reward go up by a wide margin."""
    torch.manual_seed(0)
    model = tiny_gpt(tok.vocab_size)
    stage = _stage(tok, model, seed=3)
    model.eval()
    before = evaluate_policy(stage.engine, stage.eval_task, GRPO, seed=3)
    rewards = []
    metrics = stage.metrics

    def record():
        out = metrics()
        rewards.append(out["rollout_reward"])
        return out

    stage.metrics = record
    trainer = Trainer(model, TRAIN, tmp_path / "rl", num_steps=TRAIN.num_steps, device=torch.device("cpu"),
                      loss_fn=stage.loss, accum_steps=stage.micro_per_step)
    final = trainer.fit(stage)
    after = {k: final[k] for k in rl.EVAL_KEYS}
    assert len(rewards) == TRAIN.num_steps
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.2, rewards
    assert after["mean_reward"] > before["mean_reward"] + 0.2, (before, after)
    assert after["pass@k"] >= after["pass@1"]
    lines = [json.loads(x) for x in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert {"rollout_reward", "rollout_length", "pass@1", "pass@k", "mean_reward", "mean_length"} <= set(lines[-1])


# ----------------------------------------------------------------------------- the command


def _tiny_run(tok, home, run="t"):
    tiny.save_run(home, tok, tiny_gpt(tok.vocab_size), run=run, final={})


def test_train_rl_command(tok, tmp_path, capsys):
    home = str(tmp_path)
    _tiny_run(tok, home)
    grpo = replace(GRPO, task="wordproblems:train:40", eval_task="wordproblems:test:8", eval_problems=8,
                   max_new_tokens=6)
    cfg = Resolved(run=RunConfig(run="t", home=home, device="cpu"), grpo=grpo,
                   train=replace(TRAIN, num_steps=3, eval_every=2, save_every=1))
    final = rl_main(cfg)
    assert final["step"] == 3
    out = tmp_path / "runs" / "t" / "rl"
    assert artifact.is_complete(out)
    report = json.loads((out / "eval" / "rl.json").read_text())
    assert [h["step"] for h in report["history"]] == [2, 3]
    assert report["before"]["problems"] == 8 and report["after"]["k"] == grpo.pass_k
    assert set(report["gain"]) == {*rl.EVAL_KEYS, "pass@1_stderr"}
    assert len(report["after"]["correct"]) == 8 and all(0 <= c <= grpo.pass_k for c in report["after"]["correct"])
    assert rl_main(cfg) is None  # complete: skipped
    assert "already complete" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "rl", "--help"])
    assert e.value.code == 0
    assert "--samples-per-prompt" in capsys.readouterr().out


def test_bad_options_are_user_errors():
    from picochat.common.errors import UserError

    for bad in (replace(GRPO, samples_per_prompt=1), replace(GRPO, updates_per_batch=2),
                replace(GRPO, kl_coef=-1.0)):
        with pytest.raises(UserError):
            rl.check_config(bad)
    with pytest.raises(ValueError):  # more passing samples than samples
        pass_at_k(8, 9, 1)
