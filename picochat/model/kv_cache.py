"""A preallocated key/value cache for incremental decoding.

During generation, token t's keys and values never change once computed, so we keep them:
each new token then costs one row of attention instead of re-running the whole prefix. The
cache stores only the `n_kv_head` heads (GQA/MQA), which is where GQA saves its memory.

Layout per layer: (B, Hkv, T_max, D). `pos` is how many positions are filled; the model calls
`update` once per layer and `advance` once per forward pass.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, batch_size: int, n_layer: int, n_kv_head: int, head_dim: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0
        self.max_len = max_len

    @classmethod
    def for_model(cls, model, batch_size: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        cfg = model.config
        return cls(batch_size, cfg.n_layer, cfg.n_kv_head, cfg.head_dim, max_len,
                   device=model.device, dtype=dtype or model.wte.weight.dtype)

    @property
    def batch_size(self) -> int:
        return self.k.size(1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this chunk's k, v (B, Hkv, T, D) at [pos, pos+T); return all keys/values so far."""
        T = k.size(2)
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_len} allocated")
        self.k[layer, :, :, self.pos:end] = k.to(self.k.dtype)
        self.v[layer, :, :, self.pos:end] = v.to(self.v.dtype)
        return self.k[layer, :, :, :end].to(k.dtype), self.v[layer, :, :, :end].to(v.dtype)

    def attention_mask(self, T: int, device: torch.device) -> torch.Tensor | None:
        """Which cached positions each of the T new queries may see (True = attend).

        A single new token (decode) sees everything, so no mask. A chunk of T tokens after a
        prefix of `pos` sees the whole prefix plus a causal triangle over itself."""
        if T == 1:
            return None
        q_pos = torch.arange(self.pos, self.pos + T, device=device)[:, None]
        k_pos = torch.arange(self.pos + T, device=device)[None, :]
        return k_pos <= q_pos

    def advance(self, T: int) -> None:
        self.pos += T

    def reset(self) -> None:
        self.pos = 0

    def expand(self, n: int) -> KVCache:
        """A new cache with this (batch-1) prefix copied n times: prefill a prompt once, sample n
        continuations."""
        assert self.batch_size == 1, "expand() copies a single-row cache"
        new = KVCache.__new__(KVCache)
        new.k = self.k.expand(-1, n, -1, -1, -1).contiguous()
        new.v = self.v.expand(-1, n, -1, -1, -1).contiguous()
        new.pos, new.max_len = self.pos, self.max_len
        return new
