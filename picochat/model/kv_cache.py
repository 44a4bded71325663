"""A preallocated key/value cache for incremental decoding.

During generation, token t's keys and values never change once computed, so we keep them:
each new token then costs one row of attention instead of re-running the whole prefix. The
cache stores only the `n_kv_head` heads (GQA/MQA), which is where GQA saves its memory.

Layout per layer: (B, Hkv, T_max, D). `pos` is how many positions are filled; the model calls
`update` once per layer and `advance` once per forward pass, and asks `rotary` for the angles
of the new positions. A model with the smear option (model/gpt.py) also records the token ids
(`record_tokens`): it mixes in the embedding of the token before each chunk (`token_before`).

`RaggedKVCache` (below) lets each row hold a sequence of its own length, which batched
generation of different prompts and continuous batching need: row b's next token sits at
position `lens[b]`, gets exactly the rotary angle it would get alone, and attends to its own
`lens[b]` cached keys only. That keeps batched output equal to one-by-one output.
"""

from __future__ import annotations

import torch


def causal_window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """True where a query at q_pos may attend to a key at k_pos: causal, and, for window > 0,
    only the last `window` positions (the query's own included). Broadcasts like q_pos - k_pos."""
    allowed = k_pos <= q_pos
    return allowed & (k_pos > q_pos - window) if window > 0 else allowed


class KVCache:
    def __init__(self, batch_size: int, n_layer: int, n_kv_head: int, head_dim: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)   # (L, B, Hkv, T_max, D)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.tokens = torch.full((batch_size, max_len), -1, dtype=torch.long, device=device)  # (B, T_max)
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

    def rotary(self, cos: torch.Tensor, sin: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's (1, T_table, 1, D/2) cos/sin tables cut to the next T positions."""
        if self.pos + T > cos.size(1):
            raise ValueError(f"sequence of {self.pos + T} tokens exceeds the rotary table ({cos.size(1)})")
        return cos[:, self.pos:self.pos + T], sin[:, self.pos:self.pos + T]

    def attention_mask(self, T: int, device: torch.device, window: int = 0) -> torch.Tensor | None:
        """Which cached positions each of the T new queries may see (True = attend).

        A single new token (decode) sees everything, so no mask. A chunk of T tokens after a
        prefix of `pos` sees the whole prefix plus a causal triangle over itself. A sliding-window
        layer (window > 0) sees only its last `window` positions, so it needs a mask as soon as
        the cache holds more than that, for decoding too."""
        if T == 1 and not 0 < window <= self.pos:
            return None
        q_pos = torch.arange(self.pos, self.pos + T, device=device)[:, None]   # (T, 1): the new queries
        k_pos = torch.arange(self.pos + T, device=device)[None, :]             # (1, pos + T): every key
        return causal_window_mask(q_pos, k_pos, window)                        # (T, pos + T), broadcast over B, H

    def record_tokens(self, idx: torch.Tensor) -> None:
        """Keep this chunk's token ids (B, T) at [pos, pos+T); call before advance."""
        self.tokens[:, self.pos:self.pos + idx.size(1)] = idx

    def token_before(self) -> torch.Tensor:
        """(B, 1) id of the last token already in the cache; -1 for an empty cache."""
        if self.pos == 0:
            return self.tokens[:, :1].new_full((self.batch_size, 1), -1)
        return self.tokens[:, self.pos - 1:self.pos]

    def advance(self, T: int) -> None:
        self.pos += T

    def expand(self, n: int) -> KVCache:
        """A new cache with this (batch-1) prefix copied n times: prefill a prompt once, sample n
        continuations."""
        assert self.batch_size == 1, "expand() copies a single-row cache"
        new = KVCache.__new__(KVCache)
        new.k = self.k.expand(-1, n, -1, -1, -1).contiguous()    # (L, 1, ...) -> (L, n, Hkv, T_max, D)
        new.v = self.v.expand(-1, n, -1, -1, -1).contiguous()
        new.tokens = self.tokens.expand(n, -1).contiguous()
        new.pos, new.max_len = self.pos, self.max_len
        return new


class RaggedKVCache(KVCache):
    """A cache whose rows have their own lengths (`lens[b]`), for batches of unequal sequences.

    A forward pass touches the rows in `active` (a slice, set by the caller: one row to prefill a
    prompt, the first k rows to decode). Rows outside it are left alone. Writes go to each row's
    own next positions, and the attention mask hides every key past a row's own length, so a
    row never sees another row's padding. When all active rows have equal lengths this is exactly
    the KVCache path (same slices, same masks).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Zeros, not garbage: masked keys get weight 0, but 0 * NaN (uninitialised memory) = NaN.
        self.k.zero_()
        self.v.zero_()
        self.lens = [0] * self.batch_size
        self.active = slice(0, self.batch_size)
        self._memo: tuple = (None, None)  # (key, positions): one host->device copy per forward, not per layer

    @property
    def pos(self) -> int:  # the uniform view, valid only when the active rows agree
        lens = self.lens[self.active]
        assert min(lens) == max(lens), "rows of a ragged cache have different positions"
        return lens[0]

    @pos.setter
    def pos(self, value: int) -> None:  # KVCache.__init__ sets pos = 0; lens carries the state
        pass

    def _uniform(self) -> bool:
        lens = self.lens[self.active]
        return min(lens) == max(lens)

    def _positions(self, T: int, device: torch.device) -> torch.Tensor:
        """(B, T) absolute position of each new token of each active row."""
        key = (tuple(self.lens[self.active]), T, device)
        if self._memo[0] != key:
            start = torch.tensor(key[0], device=device)
            self._memo = (key, start[:, None] + torch.arange(T, device=device)[None, :])
        return self._memo[1]

    def rotary(self, cos: torch.Tensor, sin: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._uniform():
            return super().rotary(cos, sin, T)
        if max(self.lens[self.active]) + T > cos.size(1):
            raise ValueError(f"sequence of {max(self.lens[self.active]) + T} tokens exceeds the rotary table")
        pos = self._positions(T, cos.device)
        return cos[0, pos], sin[0, pos]                              # (B, T, 1, D/2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k.size(2)
        end = max(self.lens[self.active]) + T
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_len} allocated")
        kc, vc = self.k[layer, self.active], self.v[layer, self.active]  # views (B, Hkv, T_max, D)
        if self._uniform():
            p = self.lens[self.active.start]
            kc[:, :, p:end] = k.to(kc.dtype)
            vc[:, :, p:end] = v.to(vc.dtype)
        else:
            pos = self._positions(T, k.device)                           # (B, T)
            rows = torch.arange(k.size(0), device=k.device)[:, None]     # (B, 1)
            kc[rows, :, pos] = k.transpose(1, 2).to(kc.dtype)            # (B, T, Hkv, D) each
            vc[rows, :, pos] = v.transpose(1, 2).to(vc.dtype)
        return kc[:, :, :end].to(k.dtype), vc[:, :, :end].to(v.dtype)

    def attention_mask(self, T: int, device: torch.device, window: int = 0) -> torch.Tensor | None:
        if self._uniform():
            return super().attention_mask(T, device, window)
        q_pos = self._positions(T, device)[:, None, :, None]            # (B, 1, T, 1)
        k_pos = torch.arange(max(self.lens[self.active]) + T, device=device)
        return causal_window_mask(q_pos, k_pos[None, None, None, :], window)  # (B, 1, T, T_keys)

    def record_tokens(self, idx: torch.Tensor) -> None:
        rows = self.tokens[self.active]                                  # view (B, T_max)
        if self._uniform():
            p = self.lens[self.active.start]
            rows[:, p:p + idx.size(1)] = idx
        else:
            pos = self._positions(idx.size(1), idx.device)               # (B, T)
            rows.scatter_(1, pos, idx)

    def token_before(self) -> torch.Tensor:
        lens = torch.tensor(self.lens[self.active], device=self.tokens.device)[:, None]  # (B, 1)
        before = self.tokens[self.active].gather(1, (lens - 1).clamp(min=0))
        return torch.where(lens > 0, before, -1)

    def advance(self, T: int) -> None:
        for b in range(*self.active.indices(self.batch_size)):
            self.lens[b] += T

    def copy_row(self, src: int, dst: int, source: KVCache | None = None, n: int | None = None) -> None:
        """Make row dst a copy of the first n positions (default: all) of row src of `source`
        (default: this cache): prefill once, sample several continuations."""
        source = source or self
        if n is None:
            n = source.lens[src] if isinstance(source, RaggedKVCache) else source.pos
        self.k[:, dst, :, :n] = source.k[:, src, :, :n]
        self.v[:, dst, :, :n] = source.v[:, src, :, :n]
        self.tokens[dst, :n] = source.tokens[src, :n]
        self.lens[dst] = n
