"""The base stage's horizon rules (train/horizon.py): steps and batch, checked against numbers worked
out here by hand from the model's shape, never by calling the rule under test."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from picochat.cli import build_parser, resolve
from picochat.common.errors import UserError
from picochat.config import ConfigError, TrainConfig, get_preset
from picochat.train.base import horizon_for
from picochat.train.horizon import apply_horizon

V, T = 32768, 2048  # the GPU presets' vocabulary and context


def scaling_params(depth: int) -> int:
    """Block matrices + lm_head of a width-64·depth model with as many KV heads as query heads:
    per block q, k, v, o (4·C²) and the 4x MLP (8·C²); the head is V·C. Embedding not counted.
    The GPU presets' value embeddings add a gate of 32 x heads weights on every other layer (half of
    an even depth); their tables are embeddings and do not count."""
    c = 64 * depth
    gates = depth // 2 * 32 * (c // 128)
    return depth * 12 * c * c + V * c + gates


def flops_per_token(depth: int) -> int:
    """6 per matmul weight (blocks + head) plus 12·L·C·T for attention (PaLM appendix B)."""
    c = 64 * depth
    return 6 * scaling_params(depth) + 12 * depth * c * T


def base_row(preset: str) -> TrainConfig:
    return get_preset(preset).stages["base"]


def horizon(preset: str, train: TrainConfig | None = None, world_size: int = 8):
    p = get_preset(preset)
    return horizon_for(p.model, p.model.vocab_size, train or p.stages["base"], world_size)


@pytest.mark.parametrize("preset, depth, ratio, batch, steps", [
    ("d12", 12, 20.0, 2**19, 4200),    # 20 x 110,101,632 = 2,202,032,640 tokens
    ("d20", 20, 20.0, 2**19, 16600),   # 20 x 435,162,240 = 8,703,244,800 tokens
    ("d24", 24, 8.0, 2**20, 5568),     # 8 x 729,813,504 = 5,838,508,032 tokens; auto batch
])
def test_ratio_rule_matches_hand_computed_steps(preset, depth, ratio, batch, steps):
    n = scaling_params(depth)
    assert n == {12: 110_101_632, 20: 435_162_240, 24: 729_813_504}[depth]
    assert int(ratio * n) // batch == steps  # the hand computation, pinned to the literal above
    h = horizon(preset)
    assert base_row(preset).target_param_data_ratio == ratio
    assert (h.rule, h.scaling_params, h.batch_tokens, h.steps) == ("target_param_data_ratio", n, batch, steps)
    assert h.flops_per_token == flops_per_token(depth)
    assert h.tokens == steps * batch and h.ratio == pytest.approx(steps * batch / n)


def test_auto_batch_follows_power_lines_from_the_d12_reference():
    # B = 2^19 (N/N12)^0.383: d24 -> 2^19 x 6.6286^0.383 = 1.0819M -> nearest power of two 2^20
    assert 2**19 * (scaling_params(24) / scaling_params(12)) ** 0.383 == pytest.approx(1_081_867, rel=1e-5)
    auto = replace(base_row("d20"), total_batch_tokens=0, target_param_data_ratio=12.0)
    h20 = horizon("d20", auto)  # d20: 2^19 x 3.9524^0.383 = 887k, log2 19.76 -> 2^20
    assert h20.batch_tokens == 2**20 and h20.batch_auto
    assert h20.steps == int(12.0 * scaling_params(20)) // 2**20
    h12 = horizon("d12", replace(base_row("d12"), total_batch_tokens=-1))  # the reference itself: 2^19
    assert h12.batch_tokens == 2**19 and h12.lr_scale == 1.0
    # a derived batch is at least one micro-step of every device: 1024 rows of 2048 on 512 devices
    tiny = horizon("d12", replace(base_row("d12"), total_batch_tokens=0, device_batch_size=2), world_size=512)
    assert tiny.batch_tokens == 2 * T * 512


def test_derived_batch_scales_the_learning_rates_by_sqrt():
    train = base_row("d24")
    h = horizon("d24")
    run = apply_horizon(train, h)
    assert h.lr_scale == pytest.approx(math.sqrt(2))
    assert (run.num_steps, run.total_batch_tokens) == (5568, 2**20)
    assert run.matrix_lr == pytest.approx(train.matrix_lr * math.sqrt(2))
    assert run.embedding_lr == pytest.approx(train.embedding_lr * math.sqrt(2))
    assert run.unembedding_lr == pytest.approx(train.unembedding_lr * math.sqrt(2))
    assert run.scalar_lr == pytest.approx(train.scalar_lr * math.sqrt(2))
    given = apply_horizon(base_row("d20"), horizon("d20"))  # a batch that was given: rates untouched
    assert given.matrix_lr == base_row("d20").matrix_lr


def test_target_flops_rule_and_precedence():
    f = 1e19
    by_flops = replace(base_row("d20"), target_flops=f)
    h = horizon("d20", by_flops)
    assert h.rule == "target_flops" and h.steps == round(f / (flops_per_token(20) * 2**19)) == 5887
    # with a derived batch, the horizon is F / FLOPs-per-token tokens: D / D_ref = 1.40 -> 2^19 x 1.14 -> 2^19
    auto = horizon("d20", replace(by_flops, total_batch_tokens=0))
    d = f / flops_per_token(20)
    assert 2**19 * (d / (20 * scaling_params(12))) ** 0.383 == pytest.approx(596_600, rel=1e-3)
    assert auto.batch_tokens == 2**19
    # num_steps wins over both; target_flops wins over the ratio
    assert horizon("d20", replace(by_flops, num_steps=7)).steps == 7
    assert horizon("d20", replace(by_flops, num_steps=7)).rule == "num_steps"


def test_leaderboard_presets_mirror_nanochat():
    for name, depth, ratio in (("d24", 24, 8.0), ("d26", 26, 8.25)):
        p = get_preset(name)
        base = p.stages["base"]
        assert p.model.depth == depth and base.target_param_data_ratio == ratio
        assert base.device_batch_size == 16 and base.total_batch_tokens == 0 and base.fp8
        assert not p.stages["sft"].fp8  # nanochat trains in FP8 in pretraining only
    # d26 run 3 of nanochat's leaderboard: 7226 steps of 2^20, to the step now that value-embedding
    # gates are in picochat's N too (13 layers x 32 x 13 heads = 5,408 weights; nanochat's: 2,028)
    assert horizon("d26").steps == int(8.25 * scaling_params(26)) // 2**20 == 7226
    for name in ("d12", "d20", "d32"):
        assert not get_preset(name).stages["base"].fp8


def test_missing_horizon_and_bad_auto_batch_are_user_errors():
    with pytest.raises(UserError, match="needs a horizon"):
        horizon("d20", replace(base_row("d20"), target_param_data_ratio=0))
    with pytest.raises(UserError, match="needs --target-param-data-ratio"):
        horizon("d20", replace(base_row("d20"), target_param_data_ratio=0, target_flops=1e18, total_batch_tokens=0))


def test_cli_flags_and_auto_batch_only_for_base():
    ns = build_parser().parse_args(["train", "base", "--preset", "d20", "--target-param-data-ratio", "8",
                                    "--target-flops", "2e18", "--total-batch-tokens", "0"])
    cfg = resolve(ns._command, ns)
    assert (cfg.train.target_param_data_ratio, cfg.train.target_flops, cfg.train.total_batch_tokens) == (8, 2e18, 0)
    ns = build_parser().parse_args(["train", "sft", "--preset", "d20", "--total-batch-tokens", "0"])
    with pytest.raises(ConfigError, match="only the base stage derives"):
        resolve(ns._command, ns)


@pytest.mark.timeout(600)
def test_train_base_trains_the_steps_the_ratio_sets(tmp_path):
    """The rule wired into `picochat train base`: depth 1, width 64, vocab 512 has N = 12·64² + 512·64
    = 81,920 scaling params; ratio 0.05 -> 4,096 tokens = 8 steps of 512."""
    import json
    import os
    import subprocess
    import sys

    home = ["--home", str(tmp_path), "--run", "h", "--device", "cpu"]
    env = {**os.environ, "PICOCHAT_MIRROR": "", "OMP_NUM_THREADS": "1"}

    def picochat(*argv: str) -> None:
        r = subprocess.run([sys.executable, "-m", "picochat", *argv, *home], env=env, capture_output=True,
                           text=True, timeout=500)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    picochat("tokenizer", "train", "--vocab-size", "512", "--max-chars", "200000")
    picochat("train", "base", "--depth", "1", "--seq-len", "64", "--device-batch-size", "8", "--total-batch-tokens",
             "512", "--num-steps", "0", "--target-param-data-ratio", "0.05", "--eval-every", "0", "--eval-tokens",
             "512", "--save-every", "0")
    meta = json.loads((tmp_path / "runs" / "h" / "base" / "meta.json").read_text())
    assert int(0.05 * (12 * 64 * 64 + 512 * 64)) // 512 == 8
    assert meta["final"]["step"] == 8 and meta["train_config"]["num_steps"] == 8
