"""The GPT: a decoder-only transformer, written to be read top to bottom.

What differs from GPT-2 (Radford et al. 2019), and why:
- Rotary position embeddings (RoPE, Su et al. 2021, arXiv:2104.09864) instead of learned
  absolute positions: attention then depends on relative offsets only.
- RMSNorm without learnable parameters (Zhang & Sennrich 2019, arXiv:1910.07467), applied
  before each sublayer ("pre-norm") and to the token embedding.
- QK-norm: queries and keys are RMS-normalised per head before the dot product
  (Henry et al. 2020, arXiv:2010.04245), which keeps attention logits bounded and training stable
  at high learning rates.
- Grouped-query attention (Ainslie et al. 2023, arXiv:2305.13245): `n_kv_head` key/value heads
  shared by `n_head` query heads; n_kv_head=1 is multi-query attention. Shrinks the KV cache.
- ReLU² MLP (So et al. 2021, "Primer", arXiv:2109.08668): relu(x)² is cheap and beats GELU here.
- Untied input embedding and output head, no biases anywhere.
- Logit soft-capping c·tanh(z/c) (Gemma 2, arXiv:2408.00118): bounds the logits smoothly.

Options, all off in GPTConfig (the GPU presets turn on value embeddings; picochat/config.py):
- Value embeddings (`value_embeds`): every other layer adds a token embedding of its own to the
  attention values, through a learned per-head gate (ResFormer's value residual, Zhou et al. 2024,
  "Value Residual Learning", arXiv:2410.17897; the token-embedding form is modded-nanogpt's).
- Sliding-window attention (`window_pattern`, `window_len`): "S" layers see only the last
  `window_len` tokens (Longformer's local attention, Beltagy et al. 2020, arXiv:2004.05150).
- Residual scalars (`residual_scalars`): before block i the stream becomes a_i·x + b_i·x0, two
  learned numbers per layer, x0 the normed token embedding (a learned, per-layer form of
  DenseFormer's weighted skip to the input, Pagliardini et al. 2024, arXiv:2402.02622).
- Smear (`smear`): each position adds a gated share of the previous token's embedding to its own
  (RWKV's "token shift", Peng et al. 2023, arXiv:2305.13048): bigram information for free.
- Backout (`backout`): the output head reads the last layer minus a learned share of the middle
  layer's stream, taking out low-level features the head does not need.
These three are nanochat's (its gpt.py has them on always); here they are off unless asked for,
so that each can be measured alone (benchmarks/quality_ablations.py).

Shapes in comments: B batch, T time (tokens), C width (n_embd), H query heads, Hkv key/value
heads, D head dim, V vocab.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from picochat.model.kv_cache import KVCache, causal_window_mask


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 32768
    n_layer: int = 12
    n_head: int = 6
    n_kv_head: int = 6
    n_embd: int = 768
    softcap: float = 15.0
    value_embeds: bool = False  # per-token value embeddings on every other layer (see Block)
    window_pattern: str = "L"   # per-layer attention span, tiled over the layers: L = full, S = window_len
    window_len: int = 0         # keys an "S" layer's query sees, itself included (0 = sequence_len // 4)
    residual_scalars: bool = False  # learned per-layer weights on the stream and on the embedding (see GPT)
    smear: bool = False             # add a gated share of the previous token's embedding (see GPT.smear_in)
    backout: bool = False           # subtract a learned share of the middle layer's stream before the head

    def __post_init__(self) -> None:
        if not self.window_pattern or set(self.window_pattern.upper()) - {"S", "L"}:
            raise ValueError(f"window pattern {self.window_pattern!r} must be letters S (short window) and "
                             "L (full context), e.g. SSSL")
        if self.window_len < 0:
            raise ValueError(f"window length {self.window_len} must be >= 0 (0 = a quarter of the context)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def layer_windows(self) -> list[int]:
        """Keys each layer's queries may see, themselves included; 0 = the whole context.

        The pattern is tiled over the layers ("SSSL" on 6 layers: S S S L S S), and the last
        layer is always full: the head reads only the last layer, so every prediction then rests
        on at least one layer that saw the whole context."""
        pattern = self.window_pattern.upper()
        short = self.window_len or max(1, self.sequence_len // 4)
        windows = [short if pattern[i % len(pattern)] == "S" else 0 for i in range(self.n_layer)]
        windows[-1] = 0
        return windows

    def has_value_embed(self, layer: int) -> bool:
        """Value embeddings on every other layer, counted from the last one (which always has one)."""
        return self.value_embeds and layer % 2 == (self.n_layer - 1) % 2

    @classmethod
    def from_depth(cls, depth: int, *, aspect_ratio: int = 64, head_dim: int = 128, n_kv_head: int = 0,
                   vocab_size: int = 32768, seq_len: int = 2048, softcap: float = 15.0,
                   value_embeds: bool = False, window_pattern: str = "L", window_len: int = 0,
                   residual_scalars: bool = False, smear: bool = False, backout: bool = False) -> GPTConfig:
        """The one-knob rule: width = aspect_ratio x depth, rounded up to whole heads."""
        n_embd = -(-depth * aspect_ratio // head_dim) * head_dim
        n_head = n_embd // head_dim
        return cls(sequence_len=seq_len, vocab_size=vocab_size, n_layer=depth, n_head=n_head,
                   n_kv_head=n_kv_head or n_head, n_embd=n_embd, softcap=softcap, value_embeds=value_embeds,
                   window_pattern=window_pattern, window_len=window_len, residual_scalars=residual_scalars,
                   smear=smear, backout=backout)

    def to_dict(self) -> dict:
        return asdict(self)


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) over the last dim; no learnable gain (the next matmul can learn it)."""
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0,
                  device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the angle t·θ_i, θ_i = base^(-2i/D), shaped (1, T, 1, D/2) to broadcast over (B, T, H, D/2)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)  # (T, D/2)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+D/2}) by its angle: the 2-D rotation of RoPE's eq. (34)."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]                                # (B, T, H, D/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)                    # (1, T, 1, D/2) or (B, T, 1, D/2)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (B, T, H, D)


VE_GATE_CHANNELS = 32     # input channels the value-embedding gate reads (see CausalSelfAttention)
SMEAR_GATE_CHANNELS = 24  # input channels the smear gate reads (see GPT.smear_in)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        assert config.n_embd % config.n_head == 0 and config.n_head % config.n_kv_head == 0
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.window = config.layer_windows()[layer_idx]            # 0 = full context
        # Value-embedding gate: one scalar per key/value head and token, read off the first few
        # channels of the (normed) input. Why a gate: the token's own embedding helps some heads
        # (those that copy or look up token identity) and is noise to others; a gate lets each
        # head, at each position, take as much of it as it needs, down to none.
        self.ve_gate = (nn.Linear(min(VE_GATE_CHANNELS, config.n_embd), config.n_kv_head, bias=False)
                        if config.has_value_embed(layer_idx) else None)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None, ve: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)      # (B, T, H, D)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)   # (B, T, Hkv, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)   # (B, T, Hkv, D)
        if ve is not None:
            # Value residual (arXiv:2410.17897): deep layers' values drift away from the tokens
            # they sit on, and attention then mixes representations that have lost token identity.
            # Adding a per-token embedding straight into V gives every such layer the raw token
            # back, at the cost of a lookup (no matmul); the gate's 2·sigmoid starts at 1.
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :self.ve_gate.in_features]))  # (B, T, Hkv)
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim).to(v.dtype)  # (B, T, Hkv, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = rms_norm(q), rms_norm(k)                              # QK-norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        if kv_cache is None and not 0 < self.window < T:
            # Training (and cache-free inference): plain causal attention over the T tokens.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv_head != self.n_head)
            # y: (B, H, T, D); with GQA each group of H/Hkv query heads reads the same key/value head
        elif kv_cache is None:
            # A sliding-window layer: the causal triangle cut to a band of `window` diagonals. SDPA
            # with an explicit mask still computes all T x T scores (the CPU and math kernels do
            # not skip masked blocks), so on CPU the window changes what is learned, not the time.
            pos = torch.arange(T, device=q.device)
            mask = causal_window_mask(pos[:, None], pos[None, :], self.window)  # (T, T) bool
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.n_kv_head != self.n_head)
        else:
            # Inference: append this chunk's keys/values, attend over the whole cache so far
            # (a window layer masks off keys older than its window; the cache keeps them all).
            k, v = kv_cache.update(self.layer_idx, k, v)                 # (B, Hkv, T_past + T, D)
            mask = kv_cache.attention_mask(T, device=q.device, window=self.window)  # None or bool
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False,
                                               enable_gqa=self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).contiguous().view(B, T, C)             # (B, T, H·D = C): heads side by side
        return self.c_proj(y)                                        # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())  # (B, T, C) -> (B, T, 4C) -> ReLU² -> (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: KVCache | None = None, ve: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(rms_norm(x), cos, sin, kv_cache, ve)   # (B, T, C): pre-norm, residual add
        x = x + self.mlp(rms_norm(x))                            # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, *, embedding_std: float = 1.0, mlp_in_scale: float = 1.0):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        # Value embeddings: a (V, Hkv·D) table per layer that has them, keyed by the layer's index.
        self.value_embeds = nn.ModuleDict({
            str(i): nn.Embedding(config.vocab_size, config.n_kv_head * config.head_dim)
            for i in range(config.n_layer) if config.has_value_embed(i)})
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # The optional scalars (values set in init_weights); see forward for what each does.
        if config.residual_scalars:
            self.resid_scales = nn.Parameter(torch.ones(config.n_layer))   # a_i: weight on the stream
            self.x0_scales = nn.Parameter(torch.zeros(config.n_layer))     # b_i: weight on the embedding
        if config.smear:
            self.smear_gate = nn.Linear(min(SMEAR_GATE_CHANNELS, config.n_embd), 1, bias=False)
            self.smear_scale = nn.Parameter(torch.zeros(1))
        if config.backout:
            self.backout_scale = nn.Parameter(torch.zeros(1))
        # RoPE tables are computed, not learned: buffers, not saved in checkpoints. 4x headroom
        # lets the engine decode past the training length (quality there is not promised).
        cos, sin = rotary_tables(4 * config.sequence_len, config.head_dim)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights(embedding_std=embedding_std, mlp_in_scale=mlp_in_scale)

    @torch.no_grad()
    def init_weights(self, *, embedding_std: float = 1.0, mlp_in_scale: float = 1.0) -> None:
        """Initialisation, all in one place.

        Hidden matrices: uniform with std 1/sqrt(fan_in) (uniform has no outliers). The two
        matrices that write into the residual stream (attn.c_proj, mlp.c_proj) start at zero, so
        every block starts as the identity and depth does not blow up the residual at init.
        The output head starts tiny so the first logits are ~uniform (loss ≈ ln V), and the
        embedding has std 1 (it is RMS-normalised right away, so its scale only sets how fast
        AdamW moves it relative to its size).

        The two keywords are init ablations (issue #26; nanochat uses embedding_std 0.8 and
        mlp_in_scale 0.4, which shrinks mlp.c_fc): the defaults are the recipe, and a scaled init
        draws the same random numbers, only scaled, so a row differs from the recipe in scale alone.
        """
        nn.init.normal_(self.wte.weight, std=embedding_std)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        bound = math.sqrt(3) / math.sqrt(self.config.n_embd)  # uniform(-a, a) has std a/sqrt(3)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.uniform_(block.mlp.c_fc.weight, -bound * mlp_in_scale, bound * mlp_in_scale)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)   # gate 2·sigmoid(0) = 1: the plain sum at start
        # Value embeddings start at the size of c_v's weights, so the values begin as (almost) the
        # plain c_v(x) and the lookup grows in as AdamW finds a use for it.
        for table in self.value_embeds.values():
            nn.init.uniform_(table.weight, -bound, bound)
        # The optional scalars start where nanochat's tuning put them (its gpt.py, init_weights):
        # early layers take more of the embedding (b: 0.20 -> 0.05 with depth) and scale the stream
        # up a little (a: 1.15 -> 1.05); the smear starts off (scale 0) with its gate half open;
        # backout takes 0.2 of the middle layer. Tuned values, not derived ones: the quality
        # ablations (benchmarks/quality_ablations.py) are what says whether they help here.
        L = self.config.n_layer
        if self.config.residual_scalars:
            depth = torch.arange(L, dtype=torch.float32) / max(L - 1, 1)   # 0 at the first layer, 1 at the last
            self.resid_scales.copy_(1.15 - 0.10 * depth)
            self.x0_scales.copy_(0.20 - 0.15 * depth)
        if self.config.smear:
            nn.init.zeros_(self.smear_scale)
            nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
        if self.config.backout:
            nn.init.constant_(self.backout_scale, 0.2)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, reduction: str = "mean") -> torch.Tensor:
        """idx (B, T) token ids. Returns logits (B, T, V) in fp32, or, given targets (B, T) with -1
        for "no loss", the cross-entropy: a scalar for reduction="mean", (B, T) for "none"."""
        B, T = idx.size()
        if kv_cache is None:
            if T > self.cos.size(1):
                raise ValueError(f"sequence of {T} tokens exceeds the rotary table ({self.cos.size(1)})")
            cos, sin = self.cos[:, :T], self.sin[:, :T]                # (1, T, 1, D/2)
        else:
            cos, sin = kv_cache.rotary(self.cos, self.sin, T)          # the cache knows each row's position
        x = rms_norm(self.wte(idx))                                  # (B, T, C)
        if torch.is_autocast_enabled(idx.device.type):
            # Autocast runs the matmuls in bf16 but leaves the embedding lookup in fp32, and fp32 +
            # bf16 is fp32: the residual stream would stay fp32, doubling the bytes of every add and
            # norm (memory-bound work). Carry it in the compute dtype, as the blocks' outputs are.
            x = x.to(torch.get_autocast_dtype(idx.device.type))
        if self.config.smear:
            x = self.smear_in(x, idx, kv_cache)
        x0, middle = x, None                                         # (B, T, C) each
        for i, block in enumerate(self.blocks):
            if self.config.residual_scalars:
                # x <- a_i·x + b_i·x0: every layer may re-read the token embedding (which a deep
                # stream otherwise dilutes) and rescale what came before it.
                x = self.resid_scales[i].to(x.dtype) * x + self.x0_scales[i].to(x.dtype) * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None  # (B, T, Hkv·D)
            x = block(x, cos, sin, kv_cache, ve)
            if self.config.backout and i == len(self.blocks) // 2:
                middle = x
        if middle is not None:
            x = x - self.backout_scale.to(x.dtype) * middle          # backout: drop a share of the middle
        if kv_cache is not None:
            if self.config.smear:                                     # the only reader of the ids
                kv_cache.record_tokens(idx)
            kv_cache.advance(T)
        x = rms_norm(x)
        logits = self.lm_head(x).float()                             # (B, T, V), fp32 for the softmax
        if self.config.softcap > 0:
            c = self.config.softcap
            logits = c * torch.tanh(logits / c)
        if targets is None:
            return logits
        # (B·T, V) against (B·T,): one prediction per position; targets of -1 (padding, prompt
        # tokens) drop out of both the sum and the count of the mean
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               ignore_index=-1, reduction=reduction)
        return loss if reduction != "none" else loss.view(B, T)    # scalar, or (B, T) per token

    def smear_in(self, x: torch.Tensor, idx: torch.Tensor, kv_cache: KVCache | None) -> torch.Tensor:
        """x_t += λ·σ(w·x_t[:24])·x_{t-1}: each position takes a gated share of the previous token's
        (normed) embedding, so the first layer already sees the bigram it sits in. x (B, T, C)
        is the normed embedding; the first token of a sequence has no predecessor and is left as is.
        With a cache, the token before a chunk is the cache's last recorded token of that row."""
        if kv_cache is None:
            prev = F.pad(x[:, :-1], (0, 0, 1, 0))                    # (B, T, C): zeros before the first
        else:
            before = kv_cache.token_before()                          # (B, 1) ids, -1 where none
            first = rms_norm(self.wte(before.clamp(min=0))) * (before >= 0).unsqueeze(-1)  # (B, 1, C)
            prev = torch.cat([first.to(x.dtype), x[:, :-1]], dim=1)  # (B, T, C)
        gate = self.smear_scale.to(x.dtype) * torch.sigmoid(self.smear_gate(x[..., :self.smear_gate.in_features]))
        return x + gate * prev                                       # gate: (B, T, 1)

    # ---- accounting, used for MFU, cost estimates and the report ----

    def embedding_params(self) -> int:
        """Parameters that are looked up, not multiplied: the token embedding and value embeddings."""
        return self.wte.weight.numel() + sum(p.numel() for p in self.value_embeds.parameters())

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embedding_params() if non_embedding else n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward), the PaLM paper's estimate (arXiv:2204.02311, App. B):
        6 per matmul weight (2 forward, 4 backward) plus 12·H·D·T per layer for the attention scores
        and their product with V, where a sliding-window layer counts min(window, T) keys, not T.
        Embeddings (token and value) are lookups, not matmuls, so they are not counted."""
        cfg = self.config
        matmul_params = self.num_params() - self.embedding_params()
        keys = sum(min(w, cfg.sequence_len) if w else cfg.sequence_len for w in cfg.layer_windows())
        return 6 * matmul_params + 12 * cfg.n_head * cfg.head_dim * keys

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device
