"""FP8 training of the transformer's Linear layers: the three matmuls of each layer in float8.

A Linear layer costs three matmuls per step: the forward  y = x Wᵀ,  and in backward
dx = dy W  and  dW = dyᵀ x.  On GPUs with FP8 tensor cores (compute capability 8.9+: Ada,
Hopper H100/H200, Blackwell) `torch._scaled_mm` runs each of them with 8-bit operands at about
twice the bf16 rate. Everything else stays as it was: the weight (the master copy the optimizer
updates) keeps its dtype, the optimizer state is untouched, and the layer's output and gradients
are bf16 tensors. Only the operands of the matmul are rounded to 8 bits, for the duration of it.

The two formats (Micikevicius et al. 2022, "FP8 Formats for Deep Learning", arXiv:2209.05433):
  e4m3 (torch.float8_e4m3fn): 4 exponent bits, 3 mantissa bits, largest value 448, relative
        rounding error up to 2^-4. More precision: activations and weights.
  e5m2 (torch.float8_e5m2):   5 exponent bits, 2 mantissa bits, largest value 57344, error up to
        2^-3. More range: the gradient dy, whose magnitudes spread over more binades.

Why scaling is needed. Eight bits cover a tiny range: e4m3's smallest subnormal is 2^-9 and its
largest value 448. A bf16 activation may sit anywhere from 1e-3 to 1e3 and a gradient around 1e-6;
cast as is, small values flush to zero and large ones overflow (the "fn" formats have no inf, an
overflowing cast gives NaN). So each operand is multiplied by a scale s first, chosen from its
largest magnitude (amax) so that amax lands on the format's largest value: s = max_fp8 / amax.
The matmul then runs on x·s and w·t, and `_scaled_mm` multiplies the fp32 accumulator by the
inverse scales 1/s and 1/t before writing the bf16 result. The scales are computed afresh from
each tensor ("dynamic" scaling; the paper's delayed scaling reuses past amaxes instead, cheaper
but fragile when a value jumps).

Two recipes choose the granularity of the scale:
  tensorwise (the default): one scale per tensor. cuBLAS applies it to the whole product for
        free, and the fp8 copies made in forward serve backward as they are (a transpose does not
        change a tensor's amax), so the activations are saved in 8 bits. This is the fastest
        recipe and the one nanochat's speedrun uses; its weakness is one outlier: a single large
        value sets the scale of the whole tensor and pushes the small ones toward underflow.
  rowwise: one scale per row of each operand along the contraction dimension (a (M, 1) column
        of scales for the left operand, a (1, N) row for the right one). An outlier then only
        coarsens its own row. The price: backward contracts over the other dimension, so the
        operands are quantised again from the saved bf16 tensors (more memory traffic, bf16
        activations saved), and the kernel is CUTLASS's rather than cuBLAS's. Its scales are
        rounded down to powers of two (as torchao's rowwise recipe does): multiplying by 2^k
        is exact, so the only rounding left is the 8-bit cast itself.

Accumulation: the forward product uses `use_fast_accum=True` (Hopper's faster FP8 accumulation,
which keeps fewer bits in the running sum; DeepSeek-V3, arXiv:2412.19437, §3.3.2 measures the
loss of precision); the two gradient products accumulate at full precision, as torchao and
nanochat also do.

Where it applies: only the Linear layers inside the blocks (attention q/k/v/proj, MLP fc/proj).
The embedding is a lookup, not a matmul. The output head is left in bf16 on purpose: its logits
go straight into the softcap and the softmax, where an 8-bit rounding of the 32768-way
distribution is a direct error in the loss, and it is ~5-7% of the matmul FLOPs at d20-d26, so
converting it would buy little (nanochat converts it; the GPU check measures both sides).
Evaluation is bf16 too: a layer in eval mode (model.eval(), as every eval and the inference
engine run it) does the plain matmul, and so does any call whose row count is not a multiple of
16 (a `_scaled_mm` requirement).

Order: convert the model before torch.compile and before DDP/FSDP wrap it (train/parallel.py);
the converted layers are nn.Linear subclasses that share the original weights, so parameter names,
checkpoints and the optimizer's parameter groups are exactly those of the plain model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from picochat.common.errors import UserError

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
RECIPES = ("tensorwise", "rowwise")
# amax floor: an all-zero tensor would make the scale max/0 = inf and 0·inf = NaN. With the floor
# the scale stays finite (448 / 1e-12 < fp32's max) and an all-zero tensor quantises to zeros.
AMAX_FLOOR = 1e-12
MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0), Blackwell (10.x, 12.x)


class Fp8(NamedTuple):
    """A tensor in float8 and the factor that undoes its scaling: original ≈ data · inv_scale.
    inv_scale is a scalar (tensorwise) or one value per row, shaped (rows, 1) (rowwise)."""

    data: torch.Tensor
    inv_scale: torch.Tensor


def scale_for(amax: torch.Tensor, fp8_dtype: torch.dtype, pow2: bool = False) -> torch.Tensor:
    """The fp32 scale that maps amax to the format's largest value. Computed in float64 so that a
    tiny amax cannot overflow the division; a non-finite amax (an inf or NaN already in the tensor,
    i.e. a diverged step) gives a scale of 0 or NaN, so the product comes out NaN, never silently
    finite. pow2 rounds the scale down to a power of two (exact to apply and to undo)."""
    scale = torch.finfo(fp8_dtype).max / amax.double().clamp(min=AMAX_FLOOR)
    if pow2:
        scale = torch.exp2(torch.floor(torch.log2(scale)))
    return scale.float()


def quantize(x: torch.Tensor, fp8_dtype: torch.dtype, rowwise: bool) -> Fp8:
    """x (rows, cols) in fp8 with a dynamic scale: one for the tensor, or one per row."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True) if rowwise else xf.abs().amax()  # (rows, 1) or ()
    scale = scale_for(amax, fp8_dtype, pow2=rowwise)
    fp8_max = torch.finfo(fp8_dtype).max
    # Saturate before the cast: x·s can round a hair past the maximum, and a cast past it gives NaN.
    data = (xf * scale).clamp(-fp8_max, fp8_max).to(fp8_dtype)
    return Fp8(data, scale.reciprocal())


def transposed(q: Fp8) -> Fp8:
    """qᵀ of a tensorwise operand: the same bytes and scale, viewed transposed (no requantising)."""
    assert q.inv_scale.dim() == 0, "only a tensorwise operand transposes without requantising"
    return Fp8(q.data.t(), q.inv_scale)


def scaled_matmul(a: Fp8, b_t: Fp8, out_dtype: torch.dtype, fast_accum: bool) -> torch.Tensor:
    """a @ b_tᵀ, dequantised: a (M, K), b_t (N, K), both scaled along K (or as a whole).

    The FP8 kernels take the left operand row-major and the right one column-major: b_t made
    contiguous and viewed transposed is exactly that. A rowwise right operand's scales are one
    per output column, shaped (1, N)."""
    b_scale = b_t.inv_scale if b_t.inv_scale.dim() == 0 else b_t.inv_scale.reshape(1, -1)
    return torch._scaled_mm(a.data.contiguous(), b_t.data.contiguous().t(), scale_a=a.inv_scale,
                            scale_b=b_scale, out_dtype=out_dtype, use_fast_accum=fast_accum)


class Fp8Matmul(torch.autograd.Function):
    """y = x Wᵀ with all three matmuls (forward, dx, dW) in fp8; x is (M, K), W is (N, K)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, recipe: str) -> torch.Tensor:
        rowwise = recipe == "rowwise"
        xq, wq = quantize(x, E4M3, rowwise), quantize(weight, E4M3, rowwise)
        ctx.rowwise, ctx.weight_dtype = rowwise, weight.dtype
        if rowwise:
            ctx.save_for_backward(x, weight)  # backward requantises them along the other axis
        else:
            ctx.save_for_backward(xq.data, xq.inv_scale, wq.data, wq.inv_scale)  # 8-bit activations
        return scaled_matmul(xq, wq, x.dtype, fast_accum=True)           # (M, N)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        grad_y = grad_y.contiguous()                                  # (M, N)
        if ctx.rowwise:
            x, weight = ctx.saved_tensors
            # dx = dy W contracts over N: rows of dy and columns of W (rows of Wᵀ) get the scales
            grad_x = scaled_matmul(quantize(grad_y, E5M2, True), quantize(weight.t(), E4M3, True),
                                   grad_y.dtype, fast_accum=False)
            # dW = dyᵀ x contracts over M: columns of dy and of x
            grad_w = scaled_matmul(quantize(grad_y.t(), E5M2, True), quantize(x.t(), E4M3, True),
                                   grad_y.dtype, fast_accum=False)
        else:
            x_data, x_inv, w_data, w_inv = ctx.saved_tensors
            xq, wq, gq = Fp8(x_data, x_inv), Fp8(w_data, w_inv), quantize(grad_y, E5M2, False)
            grad_x = scaled_matmul(gq, transposed(wq), grad_y.dtype, fast_accum=False)              # (M, K)
            grad_w = scaled_matmul(transposed(gq), transposed(xq), grad_y.dtype, fast_accum=False)  # (N, K)
        return grad_x, grad_w.to(ctx.weight_dtype), None


class Fp8Linear(nn.Linear):
    """An nn.Linear (no bias) whose training matmuls run in fp8; see the module docstring."""

    recipe: str = "tensorwise"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, x.size(-1))                                   # (B·T, C_in): M rows
        if not self.training or x2d.size(0) % 16:
            return F.linear(x, self.weight)  # eval, inference and odd shapes: the plain bf16 path
        if torch.is_autocast_enabled(x.device.type):  # we leave autocast: fix the compute dtype here
            x2d = x2d.to(torch.get_autocast_dtype(x.device.type))
        y = Fp8Matmul.apply(x2d, self.weight, self.recipe)
        return y.view(*x.shape[:-1], y.size(-1))                          # (B, T, C_out)

    @classmethod
    def from_linear(cls, linear: nn.Linear, recipe: str) -> Fp8Linear:
        """The same layer, sharing its weight tensor (no copy, same parameter object)."""
        with torch.device("meta"):
            layer = cls(linear.in_features, linear.out_features, bias=False)
        layer.weight = linear.weight
        layer.recipe = recipe
        layer.train(linear.training)
        return layer


def convert_blocks_to_fp8(model: nn.Module, recipe: str) -> tuple[int, int]:
    """Swap every bias-free Linear inside model.blocks whose sides are multiples of 16 (an FP8
    kernel requirement) for an Fp8Linear; returns (converted, Linear layers in the blocks)."""
    converted = total = 0
    for parent in list(model.blocks.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or isinstance(child, Fp8Linear):
                continue
            total += 1
            if child.bias is None and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                setattr(parent, name, Fp8Linear.from_linear(child, recipe))
                converted += 1
    return converted, total


def fp8_unavailable_reason(device: torch.device, bf16: bool) -> str | None:
    """Why this run cannot train in fp8 (None when it can)."""
    if device.type != "cuda":
        return f"the {device.type} device has no FP8 matmul"
    if torch.version.hip:
        return "ROCm GPUs use the fnuz FP8 formats, which this code does not handle"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]}) "
                f"has no FP8 tensor cores (they start at 8.9: Ada, Hopper, Blackwell)")
    if not bf16:
        return "FP8 training needs bf16 compute (--dtype auto or bf16), not fp32"
    return None


def check_recipe(recipe: str) -> None:
    if recipe not in RECIPES:
        raise UserError(f"--fp8-recipe {recipe!r} is not one of {', '.join(RECIPES)}; pick one")


def enable_fp8_training(model: nn.Module, recipe: str, device: torch.device, bf16: bool,
                        log: Callable[[str], None] = print) -> bool:
    """Convert the blocks' Linear layers to fp8 where the device supports it; one line either way.
    Call before compiling or wrapping the model. Returns whether fp8 is on."""
    check_recipe(recipe)
    reason = fp8_unavailable_reason(device, bf16)
    if reason:
        log(f"fp8: off, training without it ({reason})")
        return False
    converted, total = convert_blocks_to_fp8(model, recipe)
    log(f"fp8: on ({recipe} scaling), {converted}/{total} Linear layers of the blocks converted; "
        "embedding and output head stay bf16")
    return True
