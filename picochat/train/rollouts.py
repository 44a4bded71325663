"""RL rollouts: sample k replies per prompt with the engine, score them, and turn them into
training rows whose per-token weights are group-relative advantages.

The pieces, each a plain function so tests can hold it to its spec:
- sampling itself is the shared engine's (`Engine.generate(prompts, params, seeds=...)`: KV cache,
  tool calls run in the sandbox, forced tool-output tokens marked), every prompt with its own seed
  from the engine's `derive_seed`, so a batch of rollouts is reproducible from (seed, step) alone; this is what
  makes RL resume exactly.
- `group_advantages`: A_i = r_i - mean(r) over the k samples of one prompt (the group baseline of
  GRPO, Shao et al. 2024, arXiv:2402.03300), optionally divided by the group's std. GRPO divides;
  Dr. GRPO (Liu et al. 2025, arXiv:2503.20783) shows the division over-weights groups whose
  rewards barely differ (too easy or too hard), and nanochat leaves it out; so do we by default.
- `rollout_rows` / `micro_batches`: prompt + reply as one row; the target of a reply token the
  model *sampled* carries the advantage, prompt tokens and tool outputs the engine *forced* carry
  none (target -1). Rows also carry the engine's logprob of each sampled token (the "old" policy
  for the PPO ratio) and, with a KL penalty, the frozen reference model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from picochat.engine.engine import Completion
from picochat.train.trainer import Batch


@dataclass
class RolloutBatch(Batch):
    """A micro-batch of rollouts. `weights` = advantage on sampled reply tokens (0 elsewhere);
    targets are -1 on every token without a loss. `norm` is the loss's denominator for this
    micro-batch: (sampled tokens in the whole optimizer step) / (micro-batches in the step), so
    that the trainer's mean over micro-batches is a token-level mean over the step (DAPO's
    token-level normalisation, Yu et al. 2025, arXiv:2503.14476, as nanochat does)."""

    old_logprobs: torch.Tensor | None = None  # (B, T) engine logprob of each target (0 where none)
    ref_logprobs: torch.Tensor | None = None  # (B, T) reference model logprob (KL penalty only)
    norm: float = 1.0


def group_advantages(rewards: torch.Tensor, std_normalize: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """(G, k) rewards -> (G, k) advantages: minus the group mean, optionally over the group std.
    A group whose samples all scored the same gets zero advantage (nothing to learn from it)."""
    adv = rewards - rewards.mean(dim=1, keepdim=True)                        # (G, k) - (G, 1)
    if std_normalize:
        adv = adv / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)  # (G, k) / (G, 1)
    return adv


@dataclass
class Row:
    """One rollout as a training row: ids = prompt + reply, and per target position t (predicting
    ids[t+1]) whether it carries loss, its advantage and the engine's logprob."""

    ids: list[int]
    sampled: list[bool]     # len(ids) - 1
    advantage: float
    logprobs: list[float]   # len(ids) - 1, 0 where not sampled


def rollout_rows(prompts: Sequence[Sequence[int]], groups: Sequence[Sequence[Completion]],
                 advantages: torch.Tensor, max_len: int) -> list[Row]:
    """Rows for every (prompt, sample), cut to max_len + 1 tokens (the model's context)."""
    rows = []
    for g, (prompt, samples) in enumerate(zip(prompts, groups, strict=True)):
        for j, c in enumerate(samples):
            ids = (list(prompt) + c.ids)[:max_len + 1]
            sampled = ([False] * (len(prompt) - 1) + [not f for f in c.forced])[:len(ids) - 1]
            logprobs = ([0.0] * (len(prompt) - 1) + [lp if not f else 0.0 for lp, f in zip(c.logprobs, c.forced)])
            rows.append(Row(ids, sampled, float(advantages[g, j]), logprobs[:len(ids) - 1]))
    return rows


def micro_batches(rows: Sequence[Row], rows_per_micro: int, pad_id: int) -> list[RolloutBatch]:
    """Rows -> right-padded micro-batches of at most rows_per_micro rows, each padded to its own
    longest row; `norm` spreads the step's sampled-token count over the micro-batches."""
    chunks = [rows[i:i + rows_per_micro] for i in range(0, len(rows), rows_per_micro)]
    total = max(1, sum(sum(r.sampled) for r in rows))
    out = []
    for chunk in chunks:
        T = max(len(r.ids) for r in chunk) - 1
        ids = torch.full((len(chunk), T + 1), pad_id, dtype=torch.long)
        keep = torch.zeros((len(chunk), T), dtype=torch.bool)
        adv = torch.zeros((len(chunk), T))
        old = torch.zeros((len(chunk), T))
        for b, r in enumerate(chunk):
            n = len(r.ids) - 1
            ids[b, :n + 1] = torch.tensor(r.ids)
            keep[b, :n] = torch.tensor(r.sampled, dtype=torch.bool)
            adv[b, :n] = r.advantage
            old[b, :n] = torch.tensor(r.logprobs)
        targets = ids[:, 1:].clone()
        targets[~keep] = -1
        out.append(RolloutBatch(ids[:, :-1].contiguous(), targets, adv * keep, None,
                                old_logprobs=old * keep, norm=total / len(chunks)))
    return out


@torch.no_grad()
def token_logprobs(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under `model` at every position (0 where target is -1): the reference
    model's side of the KL penalty, computed once per rollout batch."""
    return -model(inputs, targets, reduction="none")
