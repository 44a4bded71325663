"""How long base pretraining runs, and with what batch: nanochat's horizon rules on picochat's model.

The horizon, first rule that is set wins (the order of nanochat's scripts/base_train.py):
  1. `num_steps` > 0: that many optimizer steps.
  2. `target_flops` F > 0: steps = round(F / (FLOPs per token x batch tokens)), FLOPs per token
     as in `GPT.flops_per_token` (6 per matmul weight plus attention, PaLM's estimate).
  3. `target_param_data_ratio` R > 0: tokens D = R x N, steps = D // batch tokens.

N, the parameters the ratio counts, are nanochat's "scaling parameters": the transformer blocks'
matrices plus the output head (lm_head). The token embedding is left out, and so would be value
embeddings and per-layer scalars: nanochat reports these give the cleanest scaling laws (its
dev/LOG.md, 2026-01-27). Mapped onto picochat: every parameter of `model.blocks` that is not an
embedding table, plus `lm_head`. Both sides' blocks also hold the value-embedding gates (on every
other layer; on in the GPU presets): nanochat's read 12 channels, picochat's 32, so picochat's N
is larger by 20 x n_kv_head weights per gated layer (d24: 4,608 gate weights against 1,728, a
difference of 4e-6 of N; at d26 it gives nanochat's leaderboard step count to the step).
nanochat pads lm_head's rows to a multiple of 64; picochat's vocabularies (32768, 2048) already are.

Batch size: `total_batch_tokens` <= 0 means "derive it" (nanochat's `--total-batch-size -1`):
    B = 2^19 x (D / D_ref)^0.383, rounded to the nearest power of two,
where D_ref = R x N(d12) is the token horizon of the same recipe at depth 12 (same vocabulary,
width rule and context), at which 2^19 = 524,288 tokens per step was measured best, and the
exponent is the "Power Lines" fit B_opt ∝ D^0.383 (Filatov et al. 2025, arXiv:2505.13738). Under
the ratio rule D / D_ref = N / N(d12), so B depends on the model size only. Under target_flops,
D = F / FLOPs per token, the horizon actually trained (nanochat sizes the batch from the ratio's
horizon even then; with num_steps we do as it does). A derived batch is at least one micro-step of
every device.
With a derived batch the learning rates are scaled by sqrt(B / 2^19), as nanochat does (the usual
square-root rule for Adam-type optimizers; nanochat applies it to Muon too). nanochat also rescales
weight decay with B and D; picochat's decay was tuned on its own runs, so it is left as set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from picochat.common.errors import UserError
from picochat.config import TrainConfig

REF_DEPTH = 12            # the depth at which the reference batch was measured
REF_BATCH_TOKENS = 2**19  # 524,288 tokens per step at d12 (nanochat's measurement)
BATCH_EXPONENT = 0.383    # Power Lines: B_opt ∝ D^0.383


@dataclass(frozen=True)
class Horizon:
    """The base stage's length and batch, and how they were chosen."""

    rule: str               # "num_steps", "target_flops" or "target_param_data_ratio"
    steps: int
    batch_tokens: int
    batch_auto: bool        # derived by the Power Lines rule rather than given
    lr_scale: float         # multiplier applied to every learning rate (1 unless batch_auto)
    scaling_params: int     # N: block matrices + lm_head
    flops_per_token: float

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_tokens

    @property
    def ratio(self) -> float:
        """Tokens per scaling parameter actually trained (nanochat's "Tokens : Scaling params")."""
        return self.tokens / self.scaling_params

    @property
    def flops(self) -> float:
        return self.tokens * self.flops_per_token

    def describe(self) -> str:
        batch = f"{self.batch_tokens:,} tokens/step" + (" (auto)" if self.batch_auto else "")
        return (f"{self.steps:,} steps x {batch} = {self.tokens:,} tokens ({self.rule}); "
                f"{self.ratio:.2f} tokens per scaling param ({self.scaling_params:,}); {self.flops:.3e} FLOPs")


def scaling_params(model: torch.nn.Module) -> int:
    """N for the ratio: every non-embedding parameter of the blocks, plus the output head."""
    embedded = {id(p) for m in model.blocks.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    blocks = sum(p.numel() for p in model.blocks.parameters() if id(p) not in embedded)
    return blocks + model.lm_head.weight.numel()


def auto_batch_tokens(horizon_tokens: float, ref_tokens: float, min_tokens: int = 1) -> int:
    """The Power Lines batch for a horizon of D tokens, given the d12 reference horizon D_ref."""
    predicted = REF_BATCH_TOKENS * (horizon_tokens / ref_tokens) ** BATCH_EXPONENT
    return max(2 ** round(math.log2(predicted)), min_tokens)


def plan_horizon(model: torch.nn.Module, ref_model: torch.nn.Module, train: TrainConfig,
                 tokens_per_micro: int = 1) -> Horizon:
    """The horizon of `model` under `train`'s rules; `ref_model` is the same recipe at depth 12
    (both may live on the meta device). tokens_per_micro = device batch x seq len x devices."""
    n, fpt = scaling_params(model), float(model.flops_per_token())
    ratio, flops = train.target_param_data_ratio, train.target_flops
    rule = ("num_steps" if train.num_steps > 0 else "target_flops" if flops > 0
            else "target_param_data_ratio" if ratio > 0 else "")
    if not rule:
        raise UserError("the base stage needs a horizon: set --num-steps, --target-flops or "
                        "--target-param-data-ratio to a positive number")
    batch, auto = train.total_batch_tokens, train.total_batch_tokens <= 0
    if auto:
        if ratio <= 0:
            raise UserError("an automatic batch size (--total-batch-tokens 0) needs --target-param-data-ratio > 0: "
                            "it sets the depth-12 reference horizon the batch is scaled from")
        ref = ratio * scaling_params(ref_model)
        horizon_tokens = flops / fpt if rule == "target_flops" else ratio * n
        batch = auto_batch_tokens(horizon_tokens, ref, tokens_per_micro)
    if rule == "num_steps":
        steps = train.num_steps
    elif rule == "target_flops":
        steps = round(flops / (fpt * batch))
    else:
        steps = int(ratio * n) // batch
    lr_scale = math.sqrt(batch / REF_BATCH_TOKENS) if auto else 1.0
    return Horizon(rule, max(1, steps), batch, auto, lr_scale, n, fpt)


def apply_horizon(train: TrainConfig, horizon: Horizon) -> TrainConfig:
    """`train` with the derived batch and the learning rates it implies, as the trainer will run it."""
    s = horizon.lr_scale
    return replace(train, num_steps=horizon.steps, total_batch_tokens=horizon.batch_tokens,
                   matrix_lr=train.matrix_lr * s, embedding_lr=train.embedding_lr * s,
                   unembedding_lr=train.unembedding_lr * s, scalar_lr=train.scalar_lr * s)
