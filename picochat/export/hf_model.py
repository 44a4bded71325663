"""picochat's GPT as transformers' NanoChat architecture: the config and the weights, mapped
only where the math is the same, and refused where it is not.

Checked against transformers' `modeling_nanochat.py` (5.24.0; the class is absent in 4.57), term by term:
- RMSNorm without a gain, on the embedding, before each sublayer and before the head: the same
  places. The epsilon: picochat calls F.rms_norm with eps=None, which is float32's machine epsilon
  (2^-23, also under bf16 autocast: the norm runs in the op-math type), so `rms_norm_eps` is that.
- QK-norm after the rotary embedding, per head, no gain: the same order ("RoPE -> Norm").
- RoPE: both rotate the pairs (x_i, x_{i+D/2}) ("rotate-half" layout, not interleaved) with
  θ_i = 10000^(-2i/D), but in opposite directions: picochat turns each pair by +t·θ_i, NanoChat's
  `rotate_half` (cat(x2, -x1)) by -t·θ_i. Swapping the two halves of each head's query and key
  rows turns one into the other exactly (S·R(θ)·S = R(-θ) for the swap S), and neither the
  per-head RMS norm nor the dot product q·k sees a permutation applied to both q and k.
- Attention: scale 1/sqrt(D), causal, GQA with query head h reading key/value head h // (H/Hkv)
  (repeat_kv and SDPA's enable_gqa agree); no biases.
- MLP: relu(x)² ("relu2"), width 4C, no biases. Residual adds: the same.
- Untied head (tie_word_embeddings false); soft-cap c·tanh(z/c) on the logits (none when c = 0).
There are no value embeddings, per-layer scalars or other learned pieces in picochat's GPT; a
state dict or model config with anything beyond the list below is refused, never guessed at.
"""

from __future__ import annotations

import torch

from picochat.common.errors import UserError

RMS_NORM_EPS = float(torch.finfo(torch.float32).eps)  # what F.rms_norm(x, shape) uses with eps=None
ROPE_THETA = 10000.0                                  # model/gpt.py rotary_tables' default base
MODEL_CONFIG_KEYS = {"sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "softcap"}
# Opt-in architecture options NanoChatForCausalLM does not have, with their "off" values: a config
# may carry them (every newer checkpoint does), but only switched off can it be exported.
OPTIONAL_OFF_KEYS = {"value_embeds": False, "window_pattern": "L", "window_len": 0,
                     "residual_scalars": False, "smear": False, "backout": False}
# picochat name (per block where {i} appears) -> NanoChat name
_BLOCK_NAMES = {
    "attn.c_q.weight": "self_attn.q_proj.weight",
    "attn.c_k.weight": "self_attn.k_proj.weight",
    "attn.c_v.weight": "self_attn.v_proj.weight",
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_proj.weight": "mlp.fc2.weight",
}


class ExportError(UserError):
    """A model or tokenizer that cannot be written in the target format without changing its output."""


# The switch-type options, as named in an error (the flag that turns each off is --no-<key>).
_OPTION_NAMES = {"value_embeds": "value embeddings", "residual_scalars": "per-layer residual scalars",
                 "smear": "the previous-token smear", "backout": "the middle-layer backout"}


def check_model_config(model_config: dict) -> None:
    for key, what in _OPTION_NAMES.items():
        if model_config.get(key):
            raise ExportError(f"the model uses {what} ({key}), which transformers' NanoChat model does not "
                              "have; it cannot be exported without changing its output (train with "
                              f"--no-{key.replace('_', '-')} for a model that exports)")
    if "S" in str(model_config.get("window_pattern", "L")).upper():
        raise ExportError(f"the model uses sliding-window attention (window_pattern "
                          f"{model_config['window_pattern']}), which transformers' NanoChat model does not have; "
                          "it cannot be exported without changing its output")
    unknown = sorted(set(model_config) - MODEL_CONFIG_KEYS - set(OPTIONAL_OFF_KEYS))
    missing = sorted(MODEL_CONFIG_KEYS - set(model_config))
    if unknown or missing:
        raise ExportError(f"the model config has fields this exporter does not map ({', '.join(unknown) or '-'}) "
                          f"or lacks ones it needs ({', '.join(missing) or '-'}); the NanoChat mapping in "
                          "picochat/export/hf_model.py must be extended (and its math checked) before this "
                          "model can be exported")
    if model_config["n_embd"] % model_config["n_head"] or model_config["n_head"] % model_config["n_kv_head"]:
        raise ExportError("the model's heads do not divide its width (or its key/value heads its query heads); "
                          "it is not a model picochat can have trained")


def hf_config(model_config: dict, bos_id: int, eos_id: int, dtype: torch.dtype) -> dict:
    """config.json for transformers' NanoChatForCausalLM."""
    check_model_config(model_config)
    c = model_config
    return {
        "architectures": ["NanoChatForCausalLM"],
        "model_type": "nanochat",
        "vocab_size": c["vocab_size"],
        "hidden_size": c["n_embd"],
        "intermediate_size": 4 * c["n_embd"],
        "num_hidden_layers": c["n_layer"],
        "num_attention_heads": c["n_head"],
        "num_key_value_heads": c["n_kv_head"],
        "max_position_embeddings": c["sequence_len"],
        "hidden_act": "relu2",
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "final_logit_softcapping": float(c["softcap"]) if c["softcap"] > 0 else None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,  # picochat has no pad token; a padding_idx would only change training
        "use_cache": True,
        "dtype": str(dtype).removeprefix("torch."),
    }


def _swap_rotary_halves(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rows of a (heads·D, C) query/key matrix with each head's two halves exchanged (see module doc)."""
    heads = w.view(-1, 2, head_dim // 2, w.size(-1))
    return heads.flip(1).reshape(w.shape)


def hf_state_dict(state: dict[str, torch.Tensor], model_config: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """picochat's state dict renamed (and its query/key rows permuted) for NanoChatForCausalLM."""
    check_model_config(model_config)
    head_dim = model_config["n_embd"] // model_config["n_head"]
    out = {"model.embed_tokens.weight": state.get("wte.weight"), "lm_head.weight": state.get("lm_head.weight")}
    for i in range(model_config["n_layer"]):
        for ours, theirs in _BLOCK_NAMES.items():
            w = state.get(f"blocks.{i}.{ours}")
            if w is not None and ours in ("attn.c_q.weight", "attn.c_k.weight"):
                w = _swap_rotary_halves(w, head_dim)
            out[f"model.layers.{i}.{theirs}"] = w
    used = {"wte.weight", "lm_head.weight"} | {f"blocks.{i}.{k}" for i in range(model_config["n_layer"])
                                               for k in _BLOCK_NAMES}
    missing, extra = sorted(used - set(state)), sorted(set(state) - used)
    if missing or extra:
        raise ExportError(f"the weights do not match picochat's GPT as this exporter knows it (unmapped: "
                          f"{', '.join(extra[:5]) or '-'}; missing: {', '.join(missing[:5]) or '-'}); "
                          "refusing to write a model that would compute something else")
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in out.items()}
