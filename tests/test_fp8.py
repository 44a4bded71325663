"""FP8 training (model/fp8.py): scale math, the three fp8 matmuls against references, the layer
swap, and the bf16 fallback where the device has no FP8.

This torch's CPU build implements torch._scaled_mm for float8 (probed below; exact fp32 math on
the dequantised operands), so the autograd function's real code path runs here, on the same
kernel entry point the GPU uses. If a CPU build lacks it, those tests skip and the quantisation
and scale tests still run; the CUDA tests at the end (run by benchmarks/gpu_check.sh) hold the
real GPU kernels to the same references.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from picochat.common.errors import UserError
from picochat.config import TrainConfig
from picochat.model import fp8
from picochat.model.gpt import GPT, GPTConfig
from picochat.optim.groups import build_optimizers
from picochat.train.trainer import Batch, Trainer

E4M3_MAX, E5M2_MAX = 448.0, 57344.0


def _cpu_scaled_mm() -> bool:
    try:
        one = torch.tensor(1.0)
        a = torch.ones(16, 16).to(fp8.E4M3)
        return bool(torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)[0, 0] == 16)
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


CPU_KERNEL = _cpu_scaled_mm()
needs_cpu_kernel = pytest.mark.skipif(not CPU_KERNEL, reason="this torch CPU build has no float8 _scaled_mm; "
                                                                "the CUDA tests cover the kernel")
CUDA_FP8 = torch.cuda.is_available() and torch.cuda.get_device_capability() >= fp8.MIN_CAPABILITY
needs_cuda_fp8 = pytest.mark.skipif(not CUDA_FP8, reason="needs a CUDA GPU with FP8 (compute capability 8.9+)")


# ----------------------------------------------------------------------------- an independent reference


def ref_dequant(x: torch.Tensor, fp8_dtype: torch.dtype, rowwise: bool) -> torch.Tensor:
    """What the fp8 operand stands for, in fp32, written out plainly: scale so that the amax (of
    the tensor, or of each row) lands on the format's max (a power of two below it for rowwise),
    saturate, round to the format, scale back."""
    top = torch.finfo(fp8_dtype).max
    amax = x.float().abs().amax(dim=-1, keepdim=True) if rowwise else x.float().abs().amax()
    scale = top / amax.double().clamp(min=1e-12)
    if rowwise:
        scale = 2.0 ** torch.floor(torch.log2(scale))
    scale = scale.float()
    return (x.float() * scale).clamp(-top, top).to(fp8_dtype).float() / scale


def ref_forward_backward(x, w, g, rowwise: bool):
    """y, dx, dW of y = x wᵀ with each operand replaced by its fp8 value, matmuls in fp32. Each
    product quantises its operands along the contraction dimension (rowwise) or as a whole."""
    q = ref_dequant
    y = q(x, fp8.E4M3, rowwise) @ q(w, fp8.E4M3, rowwise).t()
    dx = q(g, fp8.E5M2, rowwise) @ q(w.t(), fp8.E4M3, rowwise).t()
    dw = q(g.t(), fp8.E5M2, rowwise) @ q(x.t(), fp8.E4M3, rowwise).t()
    return y, dx, dw


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def operands(seed: int = 0, m: int = 64, k: int = 96, n: int = 48, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) * k ** -0.5).to(dtype)
    dy = (torch.randn(m, n, generator=g) * 1e-4).to(dtype)  # gradients are small: scaling must cope
    return x, w, dy


def run_fp8(x, w, dy, recipe):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = fp8.Fp8Matmul.apply(x, w, recipe)
    y.backward(dy)
    return y, x.grad, w.grad


# ----------------------------------------------------------------------------- scales and quantisation


def test_scale_maps_amax_to_the_format_max_and_is_safe_at_the_extremes():
    for dtype, top in ((fp8.E4M3, E4M3_MAX), (fp8.E5M2, E5M2_MAX)):
        x = torch.tensor([[0.5, -2.0, 1e-3]])
        q = fp8.quantize(x, dtype, rowwise=False)
        assert q.data.float().abs().max().item() == top               # the amax lands on the max
        assert torch.equal(q.data.float() * q.inv_scale, ref_dequant(x, dtype, False))
        zeros = fp8.quantize(torch.zeros(4, 4), dtype, rowwise=False)  # amax 0: finite scale, zeros out
        assert torch.isfinite(zeros.inv_scale).all() and not zeros.data.float().any()
    # a tiny amax would overflow max/amax in fp32; a huge one would underflow the scale to 0
    for amax in (1e-30, 1e-45, 3e38):
        s = fp8.scale_for(torch.tensor(amax), fp8.E4M3)
        assert math.isfinite(s.item()) and s.item() > 0
    # saturation: a value a rounding step past max·(1/scale) must not become NaN in the cast
    x = torch.tensor([448.0 * (1 + 2 ** -10), 448.0])
    assert not torch.isnan(fp8.quantize(x, fp8.E4M3, rowwise=False).data.float()).any()
    # an inf already in the tensor (a diverged step) never comes out finite
    bad = fp8.quantize(torch.tensor([[1.0, float("inf")]]), fp8.E4M3, rowwise=False)
    assert not torch.isfinite(bad.data.float() * bad.inv_scale).all()


def test_rowwise_scales_are_powers_of_two_per_row():
    x = torch.randn(8, 32) * torch.logspace(-4, 4, 8)[:, None]   # rows spanning 8 decades
    q = fp8.quantize(x, fp8.E4M3, rowwise=True)
    assert q.inv_scale.shape == (8, 1)
    log2 = torch.log2(q.inv_scale)
    assert torch.equal(log2, torch.round(log2))                     # exact to apply and to undo
    row_max = q.data.float().abs().amax(dim=1)
    assert ((row_max >= E4M3_MAX / 2) & (row_max <= E4M3_MAX)).all()  # each row uses the top binade
    assert torch.equal(q.data.float() * q.inv_scale, ref_dequant(x, fp8.E4M3, True))


def test_rounding_error_is_within_the_formats_unit_roundoff():
    """Round-to-nearest with m mantissa bits errs by at most 2^-(m+1) relative, for values in the
    normal range: 2^-4 for e4m3, 2^-3 for e5m2 (Micikevicius et al. 2022, Table 1)."""
    x = torch.randn(64, 64)
    for dtype, bound, smallest_normal in ((fp8.E4M3, 2 ** -4, 2 ** -6), (fp8.E5M2, 2 ** -3, 2 ** -14)):
        q = fp8.quantize(x, dtype, rowwise=False)
        normal = q.data.float().abs() >= smallest_normal
        err = ((q.data.float() * q.inv_scale - x).abs() / x.abs())[normal]
        assert err.max().item() <= bound + 1e-7


# ----------------------------------------------------------------------------- the three matmuls


@needs_cpu_kernel
@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_forward_and_backward_equal_fp32_matmuls_of_the_quantised_operands(recipe):
    """Tight: the kernel result equals an fp32 matmul of the same fp8 values (only the summation
    order may differ)."""
    x, w, dy = operands()
    y, dx, dw = run_fp8(x, w, dy, recipe)
    ry, rdx, rdw = ref_forward_backward(x, w, dy, rowwise=recipe == "rowwise")
    for got, want in ((y, ry), (dx, rdx), (dw, rdw)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * want.abs().max().item())


@needs_cpu_kernel
@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_fp8_matmuls_are_close_to_the_unquantised_ones(recipe):
    """Loose, by design. Each operand's rounding error is at most 2^-4 (e4m3) or 2^-3 (e5m2)
    relative, roughly uniform, so its RMS is about that over sqrt(3): 0.036 and 0.072. A product's
    relative error adds its two operands' in quadrature: sqrt(2)·0.036 = 0.051 forward (e4m3 x
    e4m3) and sqrt(0.036² + 0.072²) = 0.081 for the gradients (e5m2 x e4m3). Those are the bounds;
    random data lands below them (about 0.037 and 0.059)."""
    x, w, dy = operands(seed=1)
    y, dx, dw = run_fp8(x, w, dy, recipe)
    assert rel_err(y, x @ w.t()) < 0.051
    assert rel_err(dx, dy @ w) < 0.081
    assert rel_err(dw, dy.t() @ x) < 0.081


@needs_cpu_kernel
def test_rowwise_confines_an_outlier_to_its_row():
    """One activation row 10^5 times larger sets the single tensorwise scale: the other rows land
    among e4m3's subnormals (spacing 2^-9) or below them, losing most of their digits. Rowwise
    scales each row on its own."""
    x, w, dy = operands(seed=2)
    x[0] *= 1e5
    exact = x @ w.t()
    errs = {r: rel_err(run_fp8(x, w, dy, r)[0][1:], exact[1:]) for r in fp8.RECIPES}
    assert errs["rowwise"] < 0.051 and errs["tensorwise"] > 0.3


@needs_cpu_kernel
def test_tensorwise_saves_8_bit_activations_and_returns_grads_in_the_weights_dtype():
    x, w, dy = operands()
    x = x.requires_grad_()
    w64 = w.double().requires_grad_()  # a master weight in another dtype than the activations
    y = fp8.Fp8Matmul.apply(x, w64, "tensorwise")
    saved = [t.dtype for t in y.grad_fn.saved_tensors]
    assert saved.count(fp8.E4M3) == 2 and torch.float32 not in saved[::2]
    y.backward(dy)
    assert w64.grad.dtype == torch.float64 and x.grad.dtype == torch.float32


def _torchao_float8():
    try:
        from torchao import float8
    except Exception as e:  # absent, or built for another torch
        pytest.skip(f"torchao.float8 is not importable ({e.__class__.__name__}); pip install picochat[bench]")
    return float8


@needs_cpu_kernel
def test_tensorwise_is_bit_identical_to_torchao():
    """torchao's Float8Linear (tensorwise), a maintained implementation written independently of
    ours, gives the same loss and gradients bit for bit on the same weights and tokens.
    (Its rowwise recipe differs by design: it casts the gradient to e4m3, where ours keeps e5m2.)"""
    float8 = _torchao_float8()
    torch.manual_seed(0)
    x = torch.randint(0, 64, (4, 16))
    ours, theirs = tiny_gpt(), tiny_gpt()
    with torch.no_grad():  # non-zero residual projections, so every layer gets a gradient
        for a, b in zip(ours.parameters(), theirs.parameters()):
            a.add_(0.02 * torch.randn_like(a))
            b.copy_(a)
    fp8.convert_blocks_to_fp8(ours, "tensorwise")
    float8.convert_to_float8_training(theirs.blocks, config=float8.Float8LinearConfig.from_recipe_name("tensorwise"))
    assert type(theirs.blocks[0].mlp.c_fc).__name__ == "Float8Linear"
    la, lb = ours(x, x.roll(-1, 1)), theirs(x, x.roll(-1, 1))
    la.backward()
    lb.backward()
    assert la.item() == lb.item()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(a.grad, b.grad), name


# ----------------------------------------------------------------------------- the layer swap


def tiny_gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_depth(2, head_dim=32, vocab_size=64, seq_len=16))


def test_conversion_swaps_the_blocks_linears_only_and_shares_the_weights():
    model = tiny_gpt()
    before = {n: p for n, p in model.named_parameters()}
    converted, total = fp8.convert_blocks_to_fp8(model, "rowwise")
    assert (converted, total) == (12, 12)                        # q, k, v, proj, fc, proj x 2 blocks
    assert type(model.lm_head) is torch.nn.Linear                # head and embedding untouched
    assert isinstance(model.blocks[1].mlp.c_fc, fp8.Fp8Linear) and model.blocks[1].mlp.c_fc.recipe == "rowwise"
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert fp8.convert_blocks_to_fp8(model, "rowwise") == (0, 0)  # idempotent
    build_optimizers(model, TrainConfig())                          # every parameter still has its group


@needs_cpu_kernel
def test_layer_uses_fp8_in_training_and_the_plain_matmul_in_eval_and_odd_shapes():
    model = tiny_gpt()
    fp8.convert_blocks_to_fp8(model, "tensorwise")
    layer = model.blocks[0].mlp.c_fc
    x = torch.randn(2, 16, layer.in_features)
    plain = F.linear(x, layer.weight)
    trained = layer(x)
    assert not torch.equal(trained, plain) and rel_err(trained, plain) < 0.051
    layer.eval()
    assert torch.equal(layer(x), plain)                              # eval: bf16/fp32 as without fp8
    layer.train()
    odd = torch.randn(3, 5, layer.in_features)                       # 15 rows: not a multiple of 16
    assert torch.equal(layer(odd), F.linear(odd, layer.weight))


def learning_curve(recipe: str | None, device: str = "cpu", compile_: bool = False, steps: int = 8) -> list[float]:
    """Losses of a few optimizer steps of the tiny GPT on a learnable pattern; recipe None = no fp8.
    On CUDA the step runs under bf16 autocast, as in training."""
    g = torch.Generator().manual_seed(3)
    rows = ((torch.randint(0, 64, (16, 1), generator=g) + torch.arange(17)) % 64).to(device)
    model = tiny_gpt().to(device)
    if recipe:
        fp8.convert_blocks_to_fp8(model, recipe)
    fwd = torch.compile(model) if compile_ else model
    opts = build_optimizers(model, TrainConfig(matrix_lr=0.05, embedding_lr=0.3, unembedding_lr=0.01))
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    losses = []
    for _ in range(steps):
        with autocast:
            loss = fwd(rows[:, :-1], rows[:, 1:])
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@needs_cpu_kernel
@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_a_converted_gpt_learns_like_the_plain_one(recipe):
    """A few optimizer steps of the real model with fp8 matmuls track the fp32 run's losses."""
    plain, low = learning_curve(None), learning_curve(recipe)
    assert low[-1] < low[0] - 1.0                                     # it learns
    assert all(abs(a - b) < 0.05 * a for a, b in zip(plain, low))


# ----------------------------------------------------------------------------- the fallback


class CountingStage:
    name = "toy"

    def batches(self, cursor):
        i = cursor or 0
        while True:
            g = torch.Generator().manual_seed(i)
            rows = (torch.randint(0, 64, (4, 1), generator=g) + torch.arange(17)) % 64
            yield Batch(rows[:, :-1], rows[:, 1:], None, i + 1)
            i += 1


def train_losses(tmp_path, name: str, **cfg) -> list[float]:
    import json

    model = tiny_gpt()
    train = TrainConfig(device_batch_size=4, total_batch_tokens=64, num_steps=4, eval_every=0, save_every=0,
                        log_every=1, **cfg)
    Trainer(model, train, tmp_path / name, num_steps=4, device=torch.device("cpu")).fit(CountingStage())
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_fp8_on_cpu_falls_back_with_one_line_and_trains_identically(tmp_path, capsys):
    plain = train_losses(tmp_path, "plain")
    capsys.readouterr()
    for recipe in fp8.RECIPES:
        assert train_losses(tmp_path, f"low-{recipe}", fp8=True, fp8_recipe=recipe) == plain  # bit-identical
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("fp8")]
        assert lines == ["fp8: off, training without it (the cpu device has no FP8 matmul)"]


def test_unavailable_reasons_and_a_bad_recipe(monkeypatch):
    assert fp8.fp8_unavailable_reason(torch.device("cpu"), bf16=False) == "the cpu device has no FP8 matmul"
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    reason = fp8.fp8_unavailable_reason(torch.device("cuda"), bf16=True)
    assert "A100 (compute capability 8.0) has no FP8 tensor cores" in reason
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fp8.fp8_unavailable_reason(torch.device("cuda"), bf16=True) is None
    assert "needs bf16" in fp8.fp8_unavailable_reason(torch.device("cuda"), bf16=False)
    with pytest.raises(UserError, match="--fp8-recipe 'blockwise' is not one of tensorwise, rowwise"):
        fp8.enable_fp8_training(tiny_gpt(), "blockwise", torch.device("cpu"), bf16=False)
    with pytest.raises(UserError, match="--fp8-recipe 'row' is not one of"):  # a typo fails even without --fp8
        Trainer(tiny_gpt(), TrainConfig(fp8_recipe="row", total_batch_tokens=64, device_batch_size=4),
                Path("unused"), num_steps=1, device=torch.device("cpu"))


@pytest.mark.slow
@needs_cpu_kernel
def test_compiled_fp8_model_matches_eager():
    """torch.compile traces the autograd function (forward and backward) into its graph."""
    x = torch.randint(0, 64, (4, 16))
    results = []
    for compiled in (False, True):
        model = tiny_gpt()
        fp8.convert_blocks_to_fp8(model, "tensorwise")
        fwd = torch.compile(model) if compiled else model
        loss = fwd(x, x.roll(-1, 1))
        loss.backward()
        results.append((loss.item(), model.blocks[0].mlp.c_proj.weight.grad.clone()))
    (l0, g0), (l1, g1) = results
    assert l0 == pytest.approx(l1, rel=1e-5)
    torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-6)


def toy_losses(out: Path, *args: str, port: int = 0) -> dict[int, float]:
    """tests/helpers/toy_train.py in one process, or on 2 ranks under torchrun (gloo) given a port."""
    import json
    import os
    import subprocess
    import sys

    cmd = [sys.executable, str(Path(__file__).parent / "helpers" / "toy_train.py"), str(out), "--steps", "4", *args]
    if port:
        cmd[1:1] = ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
@needs_cpu_kernel
@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_fp8_layers_compose_with_ddp_and_fsdp(tmp_path, recipe):
    """Converted before the trainer wraps the model, the fp8 layers train the same on 2 ranks (DDP
    and FSDP2, gloo) as in one process: each micro-batch holds the same rows either way, so it is
    quantised alike. fp8 is really on: the losses differ from the plain run's."""
    plain = toy_losses(tmp_path / "plain")
    one = toy_losses(tmp_path / "one", "--fp8-cpu", recipe)
    assert one != plain
    for mode, port in (("ddp", 29631), ("fsdp", 29632)):
        port += 2 * (recipe == "rowwise")  # ports of their own: the parametrized cases may overlap
        two = toy_losses(tmp_path / mode, "--fp8-cpu", recipe, "--parallel", mode, port=port)
        assert two.keys() == one.keys()
        for step in one:
            assert two[step] == pytest.approx(one[step], rel=1e-3), (mode, step)


# ----------------------------------------------------------------------------- on an FP8 GPU


@needs_cuda_fp8
@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_cuda_fp8_kernels_match_the_reference(recipe):
    """The GPU kernels (cuBLAS tensorwise, CUTLASS/cuBLAS rowwise) on bf16 operands, against the
    fp32 reference of the same fp8 values. bf16 outputs: tolerance of bf16 rounding (2^-8)."""
    x, w, dy = (t.cuda() for t in operands(m=256, k=512, n=384, dtype=torch.bfloat16))
    y, dx, dw = run_fp8(x, w, dy, recipe)
    assert y.dtype == dx.dtype == torch.bfloat16
    for got, want in zip((y, dx, dw), ref_forward_backward(x, w, dy, rowwise=recipe == "rowwise")):
        assert rel_err(got, want) < 2 ** -7
    assert rel_err(y, (x.float() @ w.float().t())) < 0.051


@needs_cuda_fp8
@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_cuda_compiled_fp8_gpt_learns_like_bf16(recipe):
    """Compiled, on the GPU kernels, under bf16 autocast: the fp8 run tracks the bf16 run."""
    plain = learning_curve(None, "cuda", compile_=True)
    low = learning_curve(recipe, "cuda", compile_=True)
    assert all(math.isfinite(v) for v in low) and low[-1] < low[0] - 1.0
    assert all(abs(a - b) < 0.05 * a for a, b in zip(plain, low))
