"""Muon: momentum SGD whose update is orthogonalised (Jordan et al. 2024, "Muon: An optimizer for
hidden layers", kellerjordan.github.io/posts/muon).

For a weight matrix W, plain momentum gives an update M whose singular values are very uneven:
a few directions dominate. Muon replaces M by the nearest semi-orthogonal matrix UVᵀ (where
M = USVᵀ), so every direction in the update moves by the same amount. Computing UVᵀ by SVD is
slow on GPUs; instead we run a few steps of an odd matrix polynomial p(X) = aX + bXXᵀX +
c(XXᵀ)²X, which pushes every singular value towards 1 while keeping U and V. Only 2-D hidden
matrices use Muon; embeddings, the output head and scalars use AdamW (optim/adamw.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Per-iteration (a, b, c) from "The Polar Express" (Amsel, Persson, Musco, Gower 2025,
# arXiv:2505.16932): each step's polynomial is chosen to be optimal for the interval the
# singular values are known to lie in after the previous steps, so 5 steps land much closer
# to 1 than repeating Jordan's single fixed quintic (3.4445, -4.7750, 2.0315).
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def orthogonalize(G: Tensor, steps: int = 5) -> Tensor:
    """Approximately U Vᵀ for G = U S Vᵀ; G may be batched (..., m, n).

    Runs in bf16 on CUDA (the iteration is self-correcting, so low precision is fine and
    doubles the speed) and in fp32 elsewhere.
    """
    X = G.bfloat16() if G.is_cuda else G.float()
    tall = X.size(-2) > X.size(-1)
    if tall:  # iterate on the smaller Gram matrix X Xᵀ
        X = X.mT
    # Scale so that every singular value is <= 1 (Frobenius norm >= spectral norm); the 1.01
    # margin keeps the largest one inside the polynomials' design interval.
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-7)
    for a, b, c in POLAR_EXPRESS[:steps]:
        A = X @ X.mT
        X = a * X + (b * A + c * (A @ A)) @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters. Parameters of the same shape are stacked and orthogonalised in
    one batched call (far fewer kernel launches than one matrix at a time).

    Args: lr, momentum (Nesterov), weight_decay (decoupled, as AdamW), ns_steps, and compile:
    torch.compile the orthogonalisation (fuses the small elementwise ops between the matmuls; worth
    it on CUDA, a long first-step compile on CPU). optim/dist_muon.py shares the work across ranks.
    Three refinements nanochat's Muon has, each off by default (issue #26 measures them):
    equilibrate_rows, variance_reduction and cautious_wd (see the methods of the same names).
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0,
                 ns_steps: int = 5, compile: bool = False, equilibrate_rows: bool = False,
                 variance_reduction: bool = False, cautious_wd: bool = False, beta2: float = 0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))
        for group in self.param_groups:
            assert all(p.ndim == 2 for p in group["params"]), "Muon is for 2-D matrices only"
        # Attributes, not group options: a checkpoint's param_groups replace the groups on load.
        self.equilibrate_rows, self.variance_reduction, self.cautious_wd = (
            equilibrate_rows, variance_reduction, cautious_wd)
        self.beta2 = beta2
        # dynamic=False: one graph per stack shape (a handful per model), no shape guards to miss.
        self._orthogonalize = torch.compile(orthogonalize, dynamic=False) if compile else orthogonalize

    @torch.no_grad()
    def step(self, closure=None) -> None:  # closure: torch.optim's signature (DCP calls step(closure=None))
        for group in self.param_groups:
            by_shape: dict[torch.Size, list[Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(p.shape, []).append(p)
            for params in by_shape.values():
                self._step_stack(params, group)

    def _step_stack(self, params: list[Tensor], group: dict) -> None:
        update = self._nesterov_update([p.grad for p in params], self._buffers(params), group["momentum"])
        update = self._orthogonalize(self._equilibrate(update), group["ns_steps"])
        self._apply(params, self._reduce_variance(params, update), group, self._shape_scale(params[0].shape))

    def _equilibrate(self, update: Tensor) -> Tensor:
        """MuonEq (equilibrate_rows): scale every row of the momentum update to the same norm (their
        RMS) before orthogonalising. A few large rows otherwise dominate the spectrum the polynomial
        sees; equal rows are better conditioned, so 5 iterations get closer to U Vᵀ."""
        if not self.equilibrate_rows:
            return update
        target = update.norm(dim=(-2, -1), keepdim=True) / update.size(-2) ** 0.5
        return update * (target / update.norm(dim=-1, keepdim=True).clamp_min(1e-6))

    def _reduce_variance(self, params: list[Tensor], update: Tensor) -> Tensor:
        """NorMuon (variance_reduction; Li et al. 2025, arXiv:2510.05491): an orthogonal update moves
        every direction equally, but not every neuron: some rows get far larger steps than others.
        Keep an Adam-style running mean of each row's squared update (each column's for wide
        matrices) and divide by its square root, so every neuron steps alike; then set the total
        size to an exact orthogonal matrix's, ||U Vᵀ||_F = sqrt(min(m, n)), which also corrects
        the polynomial's under-convergence (nanochat's "Muon+" renormalisation)."""
        if not self.variance_reduction:
            return update
        m, n = update.shape[-2:]
        target = min(m, n) ** 0.5
        update = update * (target / update.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-6))
        dim = -1 if m >= n else -2
        for p in params:
            if "second_moment" not in self.state[p]:
                self.state[p]["second_moment"] = update.new_zeros((m, 1) if dim == -1 else (1, n))
        moments = [self.state[p]["second_moment"] for p in params]
        torch._foreach_lerp_(moments, list(update.square().mean(dim=dim, keepdim=True).unbind(0)), 1 - self.beta2)
        update = update * torch.stack(moments).clamp_min(1e-10).rsqrt()
        return update * (target / update.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-10))

    def _buffers(self, params: list[Tensor]) -> list[Tensor]:
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return [self.state[p]["momentum_buffer"] for p in params]

    @staticmethod
    def _nesterov_update(grads: list[Tensor], bufs: list[Tensor], momentum: float) -> Tensor:
        """Update the momentum buffers in place; return the stacked Nesterov update (N, m, n).

        The foreach ops run one kernel per op over the whole list instead of one per matrix, and
        the buffers are updated where they live (no stack-and-copy-back)."""
        torch._foreach_lerp_(bufs, grads, 1 - momentum)                     # buf = μ·buf + (1-μ)·g
        return torch.stack(torch._foreach_lerp(grads, bufs, momentum))    # Nesterov: g + μ·(buf - g)

    @staticmethod
    def _shape_scale(shape: torch.Size) -> float:
        # An orthogonal m x n update has RMS 1/sqrt(max(m, n)); rescaling by sqrt(max(1, m/n))
        # keeps the per-element step comparable for tall and wide matrices (Jordan et al.).
        m, n = shape
        return max(1.0, m / n) ** 0.5

    def _apply(self, params: list[Tensor], update: Tensor, group: dict, scale: float) -> None:
        """p <- p·(1 - lr·wd) - lr·scale·update, for the whole stack in two foreach kernels."""
        lr, wd = group["lr"], group["weight_decay"]
        updates = [u.to(p.dtype) for u, p in zip(update.unbind(0), params, strict=True)]
        if wd and self.cautious_wd:
            # Cautious weight decay (Chen et al. 2025, arXiv:2510.12402): decay only the entries the
            # update moves toward zero anyway (same sign as the weight), never against the update.
            for p, u in zip(params, updates):
                p.sub_(p * (u * p >= 0), alpha=lr * wd)
        elif wd:
            torch._foreach_mul_(params, 1 - lr * wd)
        torch._foreach_add_(params, updates, alpha=-lr * scale)
