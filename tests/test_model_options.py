"""The opt-in architecture options: value embeddings, sliding-window attention, residual scalars,
smear and backout.

Window attention is checked against a written-out reference (softmax over an explicit band), the
cache path against the cache-free one (chunked prefill, decoding, ragged rows, the engine), and the
accounting (parameters, FLOPs, optimizer groups, checkpoints, export) against hand counts.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers.tiny import randomized, tiny_gpt

from picochat.common.errors import UserError
from picochat.config import TrainConfig
from picochat.engine.engine import Engine
from picochat.export.hf_model import ExportError, check_model_config
from picochat.model.gpt import GPT, VE_GATE_CHANNELS, GPTConfig, apply_rotary, rms_norm
from picochat.model.kv_cache import KVCache, RaggedKVCache
from picochat.optim.groups import build_optimizers, head_eps


def noisy(cfg: GPTConfig, seed: int = 0, std: float = 0.3) -> GPT:
    """Every weight random: the real init zeroes projections and gates, which would hide bugs."""
    torch.manual_seed(seed)
    return randomized(GPT(cfg), std)


def small(**kw) -> GPTConfig:
    base = dict(sequence_len=48, vocab_size=101, n_layer=4, n_head=4, n_kv_head=2, n_embd=64)
    return GPTConfig(**{**base, **kw})


def reference_attention(attn, x, cos, sin, ve=None) -> torch.Tensor:
    """One attention layer written out: scores, an explicit causal band, softmax, weighted values."""
    B, T, C = x.shape
    H, Hkv, D = attn.n_head, attn.n_kv_head, attn.head_dim
    q = rms_norm(apply_rotary(attn.c_q(x).view(B, T, H, D), cos, sin)).transpose(1, 2)
    k = rms_norm(apply_rotary(attn.c_k(x).view(B, T, Hkv, D), cos, sin)).transpose(1, 2)
    v = attn.c_v(x).view(B, T, Hkv, D)
    if ve is not None:
        v = v + 2 * torch.sigmoid(attn.ve_gate(x[..., :attn.ve_gate.in_features]))[..., None] * ve.view(B, T, Hkv, D)
    v = v.transpose(1, 2)
    k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)                      # (B, H, T, T)
    allowed = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        lo = max(0, i - attn.window + 1) if attn.window else 0
        allowed[i, lo:i + 1] = True
    y = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


def test_window_pattern_tiles_and_keeps_last_layer_full():
    cfg = small(n_layer=6, window_pattern="SSSL", window_len=8)
    assert cfg.layer_windows() == [8, 8, 8, 0, 8, 0]
    assert small(window_pattern="s").layer_windows() == [12, 12, 12, 0]  # default: a quarter of 48
    assert small().layer_windows() == [0, 0, 0, 0]
    for bad in ("", "SXL"):
        with pytest.raises(ValueError, match="window pattern"):
            small(window_pattern=bad)
    with pytest.raises(ValueError, match="window length"):
        small(window_len=-1)


@pytest.mark.parametrize("value_embeds", [False, True])
def test_window_attention_matches_reference(value_embeds):
    model = noisy(small(window_pattern="SL", window_len=5, value_embeds=value_embeds))
    idx = torch.randint(0, 101, (2, 20))
    x = torch.randn(2, 20, 64)
    cos, sin = model.cos[:, :20], model.sin[:, :20]
    for i, block in enumerate(model.blocks):
        ve = model.value_embeds[str(i)](idx) if str(i) in model.value_embeds else None
        assert (ve is not None) == (value_embeds and i % 2 == 1)
        got = block.attn(x, cos, sin, ve=ve)
        torch.testing.assert_close(got, reference_attention(block.attn, x, cos, sin, ve), atol=1e-4, rtol=1e-4)


def test_window_changes_only_what_falls_outside_it():
    """Tokens older than the window cannot move a windowed layer's output; a full model sees them."""
    cfg = small(n_layer=1, window_pattern="S", window_len=4)
    windowed, full = noisy(cfg), noisy(small(n_layer=1))
    windowed.blocks[0].attn.window = 4  # a one-layer model's last layer is forced full; force it back
    a = torch.randint(0, 101, (1, 16))
    b = a.clone()
    b[0, :8] = (b[0, :8] + 1) % 101          # change tokens 0..7; position 15 sees 12..15 only
    with torch.no_grad():
        torch.testing.assert_close(windowed(a)[0, 11:], windowed(b)[0, 11:])
        assert not torch.allclose(full(a)[0, -1], full(b)[0, -1])


NANOCHAT_PARTS = dict(value_embeds=True, residual_scalars=True, smear=True, backout=True)


@pytest.mark.parametrize("kw", [dict(window_pattern="SSL", window_len=6), dict(value_embeds=True),
                                dict(value_embeds=True, window_pattern="S", window_len=3),
                                dict(residual_scalars=True), dict(smear=True), dict(backout=True),
                                dict(NANOCHAT_PARTS, window_pattern="SSL", window_len=6)])
def test_cache_matches_full_forward(kw):
    model = noisy(small(**kw))
    x = torch.randint(0, 101, (2, 30))
    with torch.no_grad():
        full = model(x)
        cache = KVCache.for_model(model, 2, 48)
        steps = [model(x[:, :9], kv_cache=cache)] + [model(x[:, t:t + 1], kv_cache=cache) for t in range(9, 20)]
        steps.append(model(x[:, 20:], kv_cache=cache))  # a chunk after a prefix longer than the window
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(window_pattern="S", window_len=4), dict(smear=True)])
def test_ragged_rows_match_each_row_alone(kw):
    model = noisy(small(**kw))
    a, b = torch.randint(0, 101, (1, 11)), torch.randint(0, 101, (1, 6))
    ragged = RaggedKVCache.for_model(model, 2, 48)
    with torch.no_grad():
        for row, p in enumerate((a, b)):
            ragged.active = slice(row, row + 1)
            model(p, kv_cache=ragged)
        ragged.active = slice(0, 2)
        both = model(torch.tensor([[5], [6]]), kv_cache=ragged)[:, -1]
        for row, (p, t) in enumerate(((a, 5), (b, 6))):
            alone = model(torch.cat([p, torch.tensor([[t]])], 1))[0, -1]
            torch.testing.assert_close(both[row], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kw", [dict(value_embeds=True), dict(residual_scalars=True, smear=True, backout=True)])
def test_engine_greedy_with_cache_equals_recomputation(tok, kw):
    model = tiny_gpt(tok.vocab_size, seq_len=96, n_layer=3, n_head=4, n_embd=64, window_pattern="SSL",
                     window_len=5, std=0.4, **kw)
    engine = Engine(model, tok, tool=None)
    stops = {tok.bos_id, tok.special_id("<|assistant_end|>")}
    for text in ("The quick", "Hello, world! What is 6 times"):
        prompt = tok.encode(text, prepend=tok.bos_id)
        ids, want = list(prompt), []
        with torch.no_grad():
            for _ in range(30):  # no cache: the whole sequence every step
                nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
                want.append(nxt)
                ids.append(nxt)
                if nxt in stops:
                    break
        got = engine.generate([prompt], temperature=0.0, max_tokens=30)[0][0]
        assert got.ids == want
        assert len(want) > 5 + 8  # decoding went well past the window


def test_param_counts_and_flops():
    cfg = small(value_embeds=True)
    model = GPT(cfg)
    base = GPT(small())
    kv_dim, ve_layers = 2 * 16, [1, 3]                      # every other layer, the last one included
    assert sorted(model.value_embeds) == ["1", "3"]
    tables = len(ve_layers) * 101 * kv_dim
    gates = len(ve_layers) * VE_GATE_CHANNELS * 2
    assert model.num_params() == base.num_params() + tables + gates
    assert model.num_params(non_embedding=True) == base.num_params(non_embedding=True) + gates
    assert model.flops_per_token() == base.flops_per_token() + 6 * gates  # lookups are not FLOPs
    win = GPT(small(window_pattern="SSSL", window_len=12))
    assert win.num_params() == base.num_params()
    attn_full = 12 * 4 * 16 * 48 * 4
    attn_win = 12 * 4 * 16 * (12 * 3 + 48)
    assert base.flops_per_token() - win.flops_per_token() == attn_full - attn_win


def test_value_embeddings_go_to_adamw_at_the_embedding_rate():
    model = GPT(small(value_embeds=True))
    adamw, muon = build_optimizers(model, TrainConfig())
    emb_group = adamw.param_groups[0]
    assert any(p is model.wte.weight for p in emb_group["params"])
    for table in model.value_embeds.values():
        assert any(p is table.weight for p in emb_group["params"])
    muon_params = [p for g in muon.param_groups for p in g["params"]]
    assert any(p is model.blocks[1].attn.ve_gate.weight for p in muon_params)


def test_smear_adds_the_gated_previous_embedding():
    model = noisy(small(smear=True))
    idx = torch.randint(0, 101, (2, 10))
    x = rms_norm(model.wte(idx))
    gate = model.smear_scale * torch.sigmoid(x[..., :24] @ model.smear_gate.weight.T)   # (B, T, 1)
    want = x.clone()
    want[:, 1:] += gate[:, 1:] * x[:, :-1]           # the first token has no predecessor
    torch.testing.assert_close(model.smear_in(x, idx, None), want)


def test_scalars_start_at_their_documented_values_and_do_nothing_when_neutral():
    model = GPT(small(residual_scalars=True, smear=True, backout=True))
    torch.testing.assert_close(model.resid_scales, torch.tensor([1.15, 1.15 - 0.1 / 3, 1.15 - 0.2 / 3, 1.05]))
    torch.testing.assert_close(model.x0_scales, torch.tensor([0.20, 0.15, 0.10, 0.05]))
    assert model.smear_scale.item() == 0 and model.backout_scale.item() == pytest.approx(0.2)
    neutral = noisy(small(residual_scalars=True, smear=True, backout=True))
    plain = GPT(small())
    plain.load_state_dict({k: v for k, v in neutral.state_dict().items() if k in plain.state_dict()})
    with torch.no_grad():
        neutral.resid_scales.fill_(1.0)
        neutral.x0_scales.zero_()
        neutral.smear_scale.zero_()
        neutral.backout_scale.zero_()
        idx = torch.randint(0, 101, (2, 12))
        torch.testing.assert_close(neutral(idx), plain(idx))   # the options are exactly additive


def test_cache_keeps_tokens_through_expand_and_copy_row():
    model = noisy(small(smear=True))
    prompt, nxt = torch.randint(0, 101, (1, 7)), torch.tensor([[3], [4]])
    with torch.no_grad():
        cache = KVCache.for_model(model, 1, 48)
        model(prompt, kv_cache=cache)
        two = cache.expand(2)
        assert two.token_before().tolist() == [[prompt[0, -1].item()]] * 2
        got = model(nxt, kv_cache=two)[:, -1]
        ragged = RaggedKVCache.for_model(model, 3, 48)
        ragged.copy_row(0, 2, source=cache, n=5)           # the first 5 tokens of the prompt
        ragged.active = slice(2, 3)
        assert ragged.token_before().tolist() == [[prompt[0, 4].item()]]
        part = model(nxt[:1], kv_cache=ragged)[0, -1]
        assert RaggedKVCache.for_model(model, 1, 48).token_before().tolist() == [[-1]]
        for row in range(2):
            alone = model(torch.cat([prompt, nxt[row:row + 1]], 1))[0, -1]
            torch.testing.assert_close(got[row], alone, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(part, model(torch.cat([prompt[:, :5], nxt[:1]], 1))[0, -1], atol=1e-4, rtol=1e-4)


def test_scalars_get_their_own_adamw_rates():
    model = GPT(small(residual_scalars=True, smear=True, backout=True))
    adamw, muon = build_optimizers(model, TrainConfig(scalar_lr=0.5))
    rate = {id(p): (g["lr"], g["betas"], g["weight_decay"]) for g in adamw.param_groups for p in g["params"]}
    assert rate[id(model.resid_scales)] == (0.005, (0.8, 0.95), 0.0)
    assert rate[id(model.x0_scales)] == (0.5, (0.96, 0.95), 0.0)
    for p in (model.smear_gate.weight, model.smear_scale, model.backout_scale):
        assert rate[id(p)] == (0.2, (0.8, 0.95), 0.0)
    assert not any(p is model.smear_gate.weight for g in muon.param_groups for p in g["params"])
    adamw, _ = build_optimizers(model, TrainConfig(embedding_beta2=0.995, unembedding_beta2=0.96))
    betas = {id(p): g["betas"] for g in adamw.param_groups for p in g["params"]}
    assert betas[id(model.wte.weight)] == (0.8, 0.995) and betas[id(model.lm_head.weight)] == (0.8, 0.96)
    adamw, _ = build_optimizers(model, TrainConfig(unembedding_eps=1e-6))
    eps = {id(p): g["eps"] for g in adamw.param_groups for p in g["params"]}
    assert eps[id(model.lm_head.weight)] == 1e-6 and eps[id(model.wte.weight)] == 1e-10  # the head's alone
    # 0 follows the batch: 64 times below the ~1/N gradient of a token seen once in N
    assert head_eps(TrainConfig(unembedding_eps=0, total_batch_tokens=16384)) == 2 ** -20
    assert head_eps(TrainConfig(unembedding_eps=0, total_batch_tokens=524288)) == 2 ** -25
    for bad in (-1e-6, float("nan"), float("inf")):
        with pytest.raises(UserError, match="--unembedding-eps must be 0"):
            head_eps(TrainConfig(unembedding_eps=bad))


def test_state_dict_roundtrip_and_training_step():
    cfg = small(value_embeds=True, window_pattern="SL", window_len=6, residual_scalars=True, smear=True,
                backout=True)
    model = GPT(cfg)
    x = torch.randint(0, 101, (2, 48))
    loss = model(x, x)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # the gates and tables are trained
    clone = GPT(GPTConfig(**cfg.to_dict()))
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


def test_export_refuses_the_options_and_accepts_them_off():
    check_model_config(small().to_dict())
    old = {k: v for k, v in small().to_dict().items()
           if k not in ("value_embeds", "window_pattern", "window_len", "residual_scalars", "smear", "backout")}
    check_model_config(old)  # a checkpoint from before the options existed
    with pytest.raises(ExportError, match="value embeddings"):
        check_model_config(small(value_embeds=True).to_dict())
    with pytest.raises(ExportError, match="sliding-window"):
        check_model_config(small(window_pattern="SSSL").to_dict())
    for key in ("residual_scalars", "smear", "backout"):
        with pytest.raises(ExportError, match=key):
            check_model_config(small(**{key: True}).to_dict())


def test_gpu_presets_have_value_embeddings_and_the_demo_exports():
    """The GPU presets' model carries value embeddings (issue #26's measurement); the demo's does not,
    because its walk-through ends in `picochat export hf`, which cannot map them and says how to avoid them."""
    from picochat.config import PRESETS

    assert all(p.model.value_embeds for name, p in PRESETS.items() if name != "demo")
    assert not PRESETS["demo"].model.value_embeds
    with pytest.raises(ExportError, match="--no-value-embeds"):
        check_model_config(small(value_embeds=True).to_dict())


def test_init_scales_draw_the_recipes_numbers_scaled_and_stay_out_of_the_saved_config():
    """nanochat's init as an ablation (issue #26): same random draws, only the embedding and the
    MLP's input matrix scaled; every other weight identical; nothing new in the model config."""
    from dataclasses import replace

    from picochat.common.errors import UserError
    from picochat.config import ModelConfig
    from picochat.run_layout import build_model

    cfg = ModelConfig(depth=2, aspect_ratio=32, head_dim=32, seq_len=32)
    torch.manual_seed(3)
    recipe = build_model(cfg, 97)
    torch.manual_seed(3)
    scaled = build_model(replace(cfg, init_embedding_std=0.8, init_mlp_scale=0.4), 97)
    assert recipe.wte.weight.std().item() == pytest.approx(1.0, rel=0.05)
    scaled_params = dict(scaled.named_parameters())
    for name, p in recipe.named_parameters():
        q = scaled_params[name]
        factor = 0.8 if name == "wte.weight" else 0.4 if name.endswith("mlp.c_fc.weight") else 1.0
        torch.testing.assert_close(q, factor * p, rtol=0, atol=1e-7, msg=name)
    assert scaled.config == recipe.config
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(UserError, match="--init-mlp-scale must be a positive number"):
            build_model(replace(cfg, init_mlp_scale=bad), 97)
