"""AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101), written out.

Adam keeps running averages of the gradient (m) and of its square (v) and steps by
m / (sqrt(v) + eps): a per-coordinate step size that is large where gradients are small and
consistent and small where they are noisy. "W": weight decay is applied to the weights
directly (p ← p·(1 - lr·wd)), decoupled from the adaptive scaling. We use it for the
embedding, the output head and scalars — parameters that are not matrices acting on the
residual stream, where Muon's orthogonalisation makes no sense.

`fused=True` runs the same update through PyTorch's fused multi-tensor kernel
(`torch._fused_adamw_`, the kernel behind `torch.optim.AdamW(fused=True)`): one launch per
group on CUDA instead of one per _foreach_ op. The written-out path below stays the spec;
tests/test_distributed.py holds the two equal. Both keep the same state (an int step per
parameter), so a run may switch between them on resume.
"""

from __future__ import annotations

import torch


class AdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.8, 0.95),
                 eps: float = 1e-10, weight_decay: float = 0.0, fused: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.fused = fused

    @torch.no_grad()
    def step(self, closure=None) -> None:  # closure: torch.optim's signature (DCP calls step(closure=None))
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            ms, vs = [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
            step = self.state[params[0]]["step"]
            grads = [p.grad for p in params]
            if self.fused:
                self._fused_step(params, grads, ms, vs, step, group)
                continue
            # The _foreach_ ops apply one operation to a whole list of tensors in one call.
            torch._foreach_lerp_(ms, grads, 1 - beta1)                         # m ← β1·m + (1-β1)·g
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)         # v ← β2·v + (1-β2)·g²
            # Bias correction: m and v start at 0, so early averages are too small by (1 - β^t).
            bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_div_(denom, bias2 ** 0.5)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, ms, denom, value=-lr / bias1)

    def _fused_step(self, params, grads, ms, vs, step: int, group: dict) -> None:
        # The kernel reads the step count from a device tensor; fill_ from a Python int is an
        # ordinary kernel launch (host -> device), so there is still no host sync in the step.
        step_t = torch.empty((), dtype=torch.float32, device=ms[0].device).fill_(step)
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(params, grads, ms, vs, [], [step_t] * len(params), lr=group["lr"], beta1=beta1,
                            beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                            amsgrad=False, maximize=False)
