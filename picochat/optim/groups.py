"""Which parameter goes to which optimizer, with which learning rate.

nanochat's recipe (from modded-nanogpt): 2-D matrices inside the transformer blocks use Muon;
the embedding, the output head and any scalars use AdamW with their own learning rates. The
AdamW rates are tuned at width 768 and scaled by (width/768)^-0.5 for other widths, because
the typical update to a unit of the residual stream should shrink as more units share it
(muP-style scaling, Yang et al. 2022, arXiv:2203.03466). Muon's update is already normalised
per matrix, so its rate is not scaled.

Value embeddings (model/gpt.py, opt-in) are embeddings: tables of rows looked up by token id, of
which a step touches only the rows of the tokens it saw. Muon's orthogonalised update would spread
each step over every row, so they go with the token embedding to AdamW, at the embedding rate.
Their per-head gates are small 2-D matrices inside the blocks and go to Muon like the others.

An embedding row's gradient is zero in every step whose batch lacks its token, while AdamW's
second moment v keeps decaying by beta2: with 0.95 a row forgets its past gradients within ~20
steps, with 0.995 within ~200. So beta2 sets how big a rare token's steps are next to a frequent
one's. `embedding_beta2` and `unembedding_beta2` default to 0.95 (nanochat uses 0.995 for its
embedding and 0.96 for its head); benchmarks/quality_ablations.py measures the difference.

The output head has a row per token, and a token that never occurs as a target (a newline, when
the training text has none) still gets a gradient on every step: the softmax pushes its logit
down by its probability p, so the row's gradient is about p times the mean hidden state. Adam
divides by the root of that gradient's own running square, so however small p gets, the row
keeps moving at the full rate, and by the end of a run such a token costs ~17 nats where it
appears (benchmarks/ood_tokens.py). Adam's epsilon is the floor under that division: a gradient
much smaller than epsilon gets a step that much smaller than the rate. A token seen once in a
batch of N tokens has a gradient of about 1/N per coordinate (the final RMS norm makes the hidden
state's coordinates ~1), so `head_eps` puts epsilon 64 times below that, 1/(64 N): every token
the batch contains still gets a full step, and a token the data never contains is pushed down
more and more slowly once its gradient falls below that (in quality.py's run a newline ends at
~16.3 nats instead of ~17; issue #26: this alone took dialogue and verse from behind nanochat to
ahead of it as three-seed means; benchmarks/RESULTS.md). The embedding keeps 1e-10: a row of
a token the batch lacks gets no gradient there at all.

The optional model scalars (model/gpt.py) get AdamW rates of their own, nanochat's: the
per-layer stream weights a_i move at 1/100 of the scalar rate (each multiplies the whole stream,
and their effects compound over the layers), the embedding weights b_i at the scalar rate with a
slower-forgetting momentum (beta1 0.96), and the smear gate, its scale and the backout scale at
0.2. None of them is decayed or scaled with width.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from picochat.common.errors import UserError
from picochat.config import TrainConfig
from picochat.optim.adamw import AdamW
from picochat.optim.dist_muon import DistMuon
from picochat.optim.muon import Muon


def head_eps(cfg: TrainConfig) -> float:
    """The output head's AdamW epsilon: --unembedding-eps, or 1/(64 x tokens per step) (see above)."""
    eps = cfg.unembedding_eps
    if not math.isfinite(eps) or eps < 0:
        raise UserError(f"--unembedding-eps must be 0 (follow the batch size) or a positive number, got {eps}")
    if eps > 0:
        return eps
    if cfg.total_batch_tokens <= 0:
        raise ValueError("head_eps needs the batch size: derive total_batch_tokens first (train/horizon.py)")
    return 1 / (64 * cfg.total_batch_tokens)


def build_optimizers(model: torch.nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    width = model.config.n_embd
    scale = (width / 768) ** -0.5
    embedding = [model.wte.weight, *model.value_embeds.parameters()]
    head = [model.lm_head.weight]
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    named = dict(model.named_parameters())

    def present(*names: str) -> list[torch.nn.Parameter]:  # the optional ones this model has
        return [named[n] for n in names if n in named]

    stream, x0 = present("resid_scales"), present("x0_scales")
    smear = present("smear_gate.weight", "smear_scale", "backout_scale")
    special = embedding + head + matrices + stream + x0 + smear
    scalars = [p for p in named.values() if p.ndim < 2 and not any(p is q for q in special)]
    assigned = len(special) + len(scalars)
    assert assigned == len(list(model.parameters())), "every parameter needs an optimizer"
    adam_groups = [
        dict(params=embedding, lr=cfg.embedding_lr * scale, betas=(0.8, cfg.embedding_beta2),
             weight_decay=cfg.adamw_weight_decay),
        dict(params=head, lr=cfg.unembedding_lr * scale, betas=(0.8, cfg.unembedding_beta2),
             eps=head_eps(cfg), weight_decay=cfg.adamw_weight_decay),
    ]
    if scalars:
        adam_groups.append(dict(params=scalars, lr=cfg.scalar_lr, weight_decay=0.0))
    if stream:
        adam_groups.append(dict(params=stream, lr=cfg.scalar_lr * 0.01, weight_decay=0.0))
    if x0:
        adam_groups.append(dict(params=x0, lr=cfg.scalar_lr, betas=(0.96, 0.95), weight_decay=0.0))
    if smear:
        adam_groups.append(dict(params=smear, lr=0.2, weight_decay=0.0))
    # Under torchrun the ranks share Muon's orthogonalisation (optim/dist_muon.py); same result.
    muon = DistMuon if dist.is_initialized() and dist.get_world_size() > 1 else Muon
    optimizers: list[torch.optim.Optimizer] = [
        AdamW(adam_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0, fused=cfg.fused_adamw),
        muon(matrices, lr=cfg.matrix_lr, momentum=0.95, weight_decay=cfg.weight_decay, compile=cfg.compile_optim,
             equilibrate_rows=cfg.muon_equilibrate, variance_reduction=cfg.muon_variance_reduction,
             cautious_wd=cfg.cautious_weight_decay),
    ]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers
