"""Reinforcement learning on verifiable rewards: GRPO-style policy gradient from the SFT model.

Each optimizer step (train/rollouts.py has the pieces):
  1. take the next `prompts_per_step` task problems and sample `samples_per_prompt` (k) replies to
     each with the shared engine (KV cache, calculator calls executed, tool outputs forced);
  2. score each reply with `task.reward(example, reply_text)` (GSM8K and the demo's word problems:
     1 if the number after #### is right, else 0);
  3. advantage = reward - mean reward of its group (optionally / group std);
  4. loss = token-level policy gradient over the tokens the model sampled (prompt and forced tool
     tokens carry none), normalised by the step's sampled-token count.
The loop is train/trainer.py's: to it this is per-token weighted NLL with weight = advantage,
and `RLStage.loss` is the only objective code.

Options (both off by default, as in nanochat's chat_rl, which is plain on-policy REINFORCE with
a group-mean baseline):
- `--kl-coef c`: penalty c * KL(policy || SFT reference) per sampled token, with the "k3"
  estimator exp(q - p) - (q - p) - 1 (p, q = policy and reference logprobs of the sampled token;
  Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html), which is
  unbiased, always >= 0, and what GRPO uses (Shao et al. 2024, arXiv:2402.03300, eq. 4). The
  reference is a frozen copy of the SFT model; its logprobs are computed once per rollout batch.
- `--ppo-clip eps` with `--updates-per-batch u`: reuse each rollout batch for u optimizer steps
  with PPO's clipped ratio min(rho A, clip(rho, 1-eps, 1+eps) A), rho = pi / pi_old (Schulman et
  al. 2017, arXiv:1707.06347); pi_old is the engine's logprob of each sampled token, recorded
  while sampling. Several updates on the same samples are off-policy, so they require the clip.

Evaluation (`evaluate`, at every eval_every steps, at the end, and once before training on the
SFT model): `pass_k` samples of each of `eval_problems` held-out problems at `eval_temperature`,
the same seeds every time (paired comparison); pass@1 and pass@k, mean reward, mean reply length.
The evaluator is eval's one generative evaluator (eval/chat.py: evaluate_policy), which this
stage receives as `Evals.policy` from the command that starts it (picochat/cli/train.py: rl_main):
evaluation is the layer above training. Prompts, in rollouts and evals alike, are cut by the
engine's one rule (engine.py: fit_prompt). Logged to metrics.jsonl and written, with the "before"
numbers and the sample sizes, to runs/<run>/rl/eval/rl.json.

Resume: the cursor is (rollout batch, update); batch b's prompts are task order positions
[b*P, (b+1)*P) and prompt i's sampling seed is derived from (seed, b, i), so a resumed run draws
the same rollouts. A checkpoint taken between the updates of one batch also holds its rollouts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from picochat.common.device import init_distributed
from picochat.common.errors import UserError
from picochat.common.io import atomic_write_json
from picochat.common.log import banner, print0
from picochat.common.paths import stage_dir
from picochat.config import GRPOConfig
from picochat.engine.engine import Completion, Engine, SamplingParams, derive_seed, fit_prompt
from picochat.model import artifact
from picochat.tasks.common import Task, describe
from picochat.tokenizer.chat import prompt_ids
from picochat.train.rollouts import (
    RolloutBatch,
    group_advantages,
    micro_batches,
    rollout_rows,
    token_logprobs,
)
from picochat.train.trainer import Evals, Trainer, write_config

EVAL_KEYS = ("pass@1", "pass@k", "mean_reward", "mean_length")


def reply_prompt(tokenizer: Any, example: dict, context: int, max_new_tokens: int) -> list[int]:
    """The example's conversation minus its final assistant turn, ready for the reply, cut by the
    engine's fit_prompt (the same rule as the generative evals)."""
    return fit_prompt(prompt_ids(tokenizer, example), context, max_new_tokens)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def paired_stderr(before: list[int], after: list[int], k: int) -> float | None:
    """Standard error of the pass@1 gain, paired by problem (both evals sample the same problems
    with the same seeds, so the per-problem differences are far less noisy than either number)."""
    if len(before) != len(after) or len(before) < 2:
        return None
    d = (np.asarray(after) - np.asarray(before)) / k
    return float(d.std(ddof=1) / math.sqrt(len(d)))


class EvalLog:
    """runs/<run>/rl/eval/rl.json: the eval settings, "before" (the SFT model), every eval during
    RL ("history", by step) and the latest ("after"), so the report can show the gain and its n."""

    def __init__(self, path: Path, settings: dict, is_main: bool = True):
        self.path, self.is_main = Path(path), is_main
        old = {}
        if self.path.exists():
            import json

            try:
                old = json.loads(self.path.read_text())
            except ValueError:
                old = {}
        # numbers measured under other settings are not comparable: start over
        self.data = old if old.get("settings") == settings else {"settings": settings, "history": []}

    @property
    def before(self) -> dict | None:
        return self.data.get("before")

    def set_before(self, result: dict) -> None:
        self.data["before"] = result
        self._write()

    def add(self, step: int, result: dict) -> None:
        history = [h for h in self.data["history"] if h["step"] < step]  # a resumed run redoes later ones
        self.data["history"] = history + [{"step": step, **result}]
        self.data["after"] = {"step": step, **result}
        if self.before:
            self.data["gain"] = {key: result[key] - self.before[key] for key in EVAL_KEYS}
            self.data["gain"]["pass@1_stderr"] = paired_stderr(self.before["correct"], result["correct"], result["k"])
        self._write()

    def _write(self) -> None:
        if self.is_main:
            atomic_write_json(self.path, self.data)


class RLStage:
    """The trainer's view of RL: rollout micro-batches with advantage weights, the policy loss,
    held-out evals and per-step rollout numbers."""

    name = "rl"

    def __init__(self, engine: Engine, task: Task, eval_task: Task, rl: GRPOConfig, *, rows_per_micro: int,
                 seed: int, evaluate_policy: Callable[..., dict[str, Any]], eval_log: EvalLog | None = None,
                 ref_model: torch.nn.Module | None = None, rank: int = 0, world_size: int = 1):
        if rl.prompts_per_step % world_size:
            raise UserError(f"--prompts-per-step {rl.prompts_per_step} must be a multiple of the "
                            f"number of processes ({world_size})")
        self.engine, self.task, self.eval_task, self.rl = engine, task, eval_task, rl
        self.rows_per_micro, self.seed, self.eval_log, self.ref_model = rows_per_micro, seed, eval_log, ref_model
        self.evaluate_policy = evaluate_policy  # Evals.policy: eval/chat.py's, from above
        self.rank, self.world_size = rank, world_size
        self.prompts_per_rank = rl.prompts_per_step // world_size
        self.step = 0                       # optimizer steps whose batches have all gone out
        self.last: dict[str, float] = {}    # numbers of the latest rollout batch
        self._stats: dict[str, list[float]] = {"kl": [], "clipped": []}
        self._orders: dict[int, np.ndarray] = {}

    @property
    def micro_per_step(self) -> int:
        return math.ceil(self.prompts_per_rank * self.rl.samples_per_prompt / self.rows_per_micro)

    # ---- rollouts ----

    def _indices(self, b: int) -> list[int]:
        """This rank's task indices for rollout batch b: the task's own order in the first epoch
        (a prefix of it is a fair sample), then a fresh seeded order every epoch."""
        n = len(self.task)
        start = b * self.rl.prompts_per_step + self.rank * self.prompts_per_rank
        out = []
        for pos in range(start, start + self.prompts_per_rank):
            epoch = pos // n
            if epoch not in self._orders:
                self._orders = {epoch: np.arange(n) if epoch == 0 else np.random.default_rng(epoch).permutation(n)}
            out.append(int(self._orders[epoch][pos % n]))
        return out

    def rollout(self, b: int) -> dict:
        """Sample and score rollout batch b; the result is plain lists (it may ride in the cursor)."""
        rl, model = self.rl, self.engine.model
        indices = self._indices(b)
        examples = [self.task[i] for i in indices]
        prompts = [reply_prompt(self.engine.tokenizer, ex, model.config.sequence_len, rl.max_new_tokens)
                   for ex in examples]
        params = SamplingParams(max_tokens=rl.max_new_tokens, temperature=rl.temperature, top_k=rl.top_k,
                                n=rl.samples_per_prompt)
        was_training = model.training
        model.eval()
        seeds = [derive_seed(self.seed, b, self.rank * self.prompts_per_rank + j) for j in range(len(prompts))]
        groups = self.engine.generate(prompts, params, seeds=seeds, max_rows=rl.max_rows)
        model.train(was_training)
        return {"batch": b, "indices": indices, "prompts": prompts,
                "ids": [[c.ids for c in g] for g in groups], "forced": [[c.forced for c in g] for g in groups],
                "logprobs": [[c.logprobs for c in g] for g in groups],
                "rewards": [[float(self.task.reward(ex, c.text)) for c in g] for ex, g in zip(examples, groups)]}

    def _micro_batches(self, ro: dict) -> list[RolloutBatch]:
        rewards = torch.tensor(ro["rewards"], dtype=torch.float32)
        adv = group_advantages(rewards, self.rl.std_advantages)
        groups = [[Completion(ids=i, forced=f, logprobs=lp) for i, f, lp in zip(*g)]
                  for g in zip(ro["ids"], ro["forced"], ro["logprobs"])]
        rows = rollout_rows(ro["prompts"], groups, adv, self.engine.model.config.sequence_len)
        batches = micro_batches(rows, self.rows_per_micro, self.engine.tokenizer.bos_id)
        if self.ref_model is not None:
            for mb in batches:
                dev = self.engine.model.device
                mb.ref_logprobs = token_logprobs(self.ref_model, mb.inputs.to(dev), mb.targets.to(dev)).cpu()
        lengths = [len(ids) for g in ro["ids"] for ids in g]
        self.last = {"rollout_reward": float(rewards.mean()), "rollout_length": float(np.mean(lengths)),
                     "rollout_solved": float((rewards > 0).any(dim=1).float().mean()),
                     "rollout_learnable": float((rewards.std(dim=1) > 0).float().mean())}
        return batches

    def batches(self, cursor: dict | None):
        """Micro-batches forever: each rollout batch serves updates_per_batch optimizer steps."""
        U = self.rl.updates_per_batch
        b, u, ro = (0, 0, None) if cursor is None else (cursor["batch"], cursor["update"], cursor["rollouts"])
        while True:
            ro = ro if ro is not None else self.rollout(b)
            micro = self._micro_batches(ro)
            for upd in range(u, U):
                for m, mb in enumerate(micro):
                    done = m == len(micro) - 1
                    nb, nu = (b, upd) if not done else ((b + 1, 0) if upd == U - 1 else (b, upd + 1))
                    cursor = {"batch": nb, "update": nu, "rollouts": ro if nb == b else None,
                              "prompts_seen": nb * self.rl.prompts_per_step}
                    if done:
                        self.step = b * U + upd + 1
                    yield replace(mb, cursor=cursor)  # a fresh object per update: batches may be kept
            b, u, ro = b + 1, 0, None

    # ---- objective ----

    def loss(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        """-(token-level policy-gradient objective) over the sampled tokens (see the module doc)."""
        rl = self.rl
        logp = -model(batch.inputs, batch.targets, reduction="none")     # (B, T); 0 where target -1
        valid = (batch.targets >= 0).float()                             # (B, T): 1 on sampled tokens
        adv = batch.weights                                               # (B, T): the row's advantage per token
        if rl.ppo_clip > 0:
            ratio = torch.exp(logp - batch.old_logprobs)                  # (B, T): pi / pi_old per token
            clipped = ratio.clamp(1 - rl.ppo_clip, 1 + rl.ppo_clip)
            objective = torch.minimum(ratio * adv, clipped * adv)         # (B, T)
            self._stats["clipped"].append(float(((ratio != clipped).float() * valid).sum() / valid.sum().clamp_min(1)))
        else:
            objective = logp * adv  # (B, T); REINFORCE: same gradient as the ratio form at pi = pi_old
        if rl.kl_coef > 0:
            d = batch.ref_logprobs - logp                                 # (B, T): log(pi_ref / pi)
            kl = torch.exp(d) - d - 1                                     # k3 estimator, >= 0
            objective = objective - rl.kl_coef * kl
            self._stats["kl"].append(float((kl.detach() * valid).sum() / valid.sum().clamp_min(1)))
        return -(objective * valid).sum() / batch.norm                   # scalar: summed, / tokens per step

    # ---- hooks the trainer calls ----

    def metrics(self) -> dict[str, float]:
        """The latest rollout batch's numbers (averaged over ranks), plus KL / clip fraction if on."""
        out = dict(self.last)
        for key, values in self._stats.items():
            if values:
                out[key] = float(np.mean(values))
                values.clear()
        keys = sorted(out)
        summed = _all_reduce_sum([out[k] for k in keys], self.engine.model.device)
        return {k: v / self.world_size for k, v in zip(keys, summed)}

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        result = self.evaluate_policy(self.engine, self.eval_task, self.rl, seed=self.seed, rank=self.rank,
                                      world_size=self.world_size)
        if self.eval_log is not None:
            self.eval_log.add(self.step, result)
        return {key: result[key] for key in EVAL_KEYS}


def check_config(rl: GRPOConfig) -> None:
    if rl.samples_per_prompt < 2:
        raise UserError("--samples-per-prompt must be at least 2: the advantage compares samples of one prompt")
    if rl.updates_per_batch < 1 or rl.prompts_per_step < 1 or rl.pass_k < 1 or rl.eval_problems < 1:
        raise UserError("--updates-per-batch, --prompts-per-step, --pass-k and --eval-problems must be >= 1")
    if rl.updates_per_batch > 1 and rl.ppo_clip <= 0:
        raise UserError("--updates-per-batch > 1 reuses samples off-policy; set --ppo-clip (e.g. 0.2) as well")
    if rl.kl_coef < 0 or rl.ppo_clip < 0:
        raise UserError("--kl-coef and --ppo-clip must be >= 0 (0 turns them off)")


def eval_settings(rl: GRPOConfig, seed: int) -> dict:
    return {"eval_task": rl.eval_task, "eval_problems": rl.eval_problems, "pass_k": rl.pass_k,
            "eval_temperature": rl.eval_temperature, "top_k": rl.top_k, "max_new_tokens": rl.max_new_tokens,
            "seed": seed}


def main(cfg: Any, evals: Evals) -> dict | None:
    """`picochat train rl`: runs/<run>/sft/ -> runs/<run>/rl/ (resumes; skips when complete). The
    held-out evals are `evals.policy` (picochat/cli/train.py: rl_main passes eval's)."""
    from picochat.run_layout import load_tokenizer
    from picochat.tasks.humaneval import check_sandbox, sandbox_record
    from picochat.tasks.registry import make_task

    run, home, mirror, rl = cfg.run.run, cfg.run.home, cfg.run.mirror, cfg.grpo
    out = stage_dir(run, "rl", home)
    if artifact.is_complete(out):
        print0(f"rl stage of run '{run}' is already complete ({out}); skipping")
        return None
    check_config(rl)
    if evals.policy is None:
        raise ValueError("the rl stage measures its policy with evals.policy; none was given")
    if cfg.train.parallel == "fsdp":
        # every forward of an FSDP model is a collective, and ranks sample replies of different
        # lengths (different numbers of forwards): the ranks would wait on each other forever
        raise UserError("the rl stage cannot run with --parallel fsdp (ranks sample different numbers of "
                        "tokens); use --parallel ddp")
    task = make_task(rl.task, home=home, mirror=mirror)
    eval_task = make_task(rl.eval_task, home=home, mirror=mirror)
    sandbox = check_sandbox([task, eval_task], rl.unsafe_sandbox)  # rewards that run model code
    dist_info, device = init_distributed(cfg.run.device)
    torch.manual_seed(cfg.run.seed)
    tokenizer = load_tokenizer(run, home)
    model, start_meta = artifact.load_model(stage_dir(run, "sft", home), device)
    ref = None
    if rl.kl_coef > 0:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    engine = Engine(model, tokenizer)
    log = EvalLog(out / "eval" / "rl.json", eval_settings(rl, cfg.run.seed), dist_info.is_main)
    if sandbox is not None:
        log.data["sandbox"] = sandbox  # written with every eval; the report card shows it
    stage = RLStage(engine, task, eval_task, rl, rows_per_micro=cfg.train.device_batch_size, seed=cfg.run.seed,
                    evaluate_policy=evals.policy, eval_log=log, ref_model=ref, rank=dist_info.rank,
                    world_size=dist_info.world_size)
    num_steps = cfg.train.num_steps or max(1, len(task) // rl.prompts_per_step) * rl.updates_per_batch
    banner(f"rl: run '{run}' from sft on {device}")
    print0(f"task {rl.task} ({len(task)} problems): {num_steps} steps x {rl.prompts_per_step} prompts x "
           f"{rl.samples_per_prompt} samples, {stage.micro_per_step} micro-batch(es) per step; "
           f"kl_coef {rl.kl_coef}, ppo_clip {rl.ppo_clip}, updates per batch {rl.updates_per_batch}")
    write_config(out, cfg.to_dict())
    if log.before is None:
        print0(f"evaluating the SFT model on {rl.eval_task} ({rl.eval_problems} problems x {rl.pass_k} samples)...")
        log.set_before(evals.policy(engine, eval_task, rl, seed=cfg.run.seed, rank=dist_info.rank,
                                    world_size=dist_info.world_size))
    b = log.before
    print0(f"before RL: pass@1 {b['pass@1']:.4f} ± {b['pass@1_stderr']:.4f} | pass@{b['k']} {b['pass@k']:.4f} | "
           f"mean reward {b['mean_reward']:.4f} | mean length {b['mean_length']:.1f} (n={b['problems']} problems)")
    trainer = Trainer(model, cfg.train, out, num_steps=num_steps, device=device, dist_info=dist_info,
                      meta={"stage": "rl", "run": run, "start": "sft", "task": describe(task),
                            "eval_task": describe(eval_task), "before": b, "start_final": start_meta.get("final")},
                      loss_fn=stage.loss, accum_steps=stage.micro_per_step, report_card=evals.report_card)
    final = trainer.fit(stage)
    if sandbox is not None:  # now the layers active in every reward and eval grading of the run
        log.data["sandbox"] = sandbox_record([task, eval_task], sandbox)
        log._write()
    a = log.data.get("after")
    if a:
        se = log.data["gain"]["pass@1_stderr"]
        print0(f"held-out {eval_task.name}: pass@1 {b['pass@1']:.4f} -> {a['pass@1']:.4f} "
               f"(gain {a['pass@1'] - b['pass@1']:+.4f} ± {se or 0:.4f} paired stderr; n={a['problems']} problems "
               f"x {a['k']} samples); pass@{a['k']} {b['pass@k']:.4f} -> {a['pass@k']:.4f}")
    return final
