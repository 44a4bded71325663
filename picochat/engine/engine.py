"""The one sampling routine: prefill, then decode token by token over a KV cache.

Everything that generates text uses this file: `picochat chat`, the server's batcher, RL
rollouts and generative evals. It works on token ids only; conversations become ids in
`tokenizer/chat.py`.

How a batch runs (`BatchDecoder`):
- `add(prompt, params, key)` prefills the prompt once into a free row of a `RaggedKVCache`
  (each row has its own length) and copies that row for the n samples of the request.
- `step()` picks one token for every live row (sampled, or forced by the tool state machine),
  then runs one forward pass over the rows that go on. Rows finish on a sampled
  `<|assistant_end|>` or `<|bos|>`, a stop string, `max_tokens`, or a full cache, and free
  their row for the next request: requests join and leave between steps (continuous batching).

Each step emits one `TokenEvent` per live row: the id, whether it was forced, its logprob, the
text it completes, and why the row finished (if it did). The logprob is under the model's own
distribution (temperature 1, no top-k/top-p), which is what policy-gradient RL needs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from picochat.engine.text import Piece, TextStream, merge_pieces
from picochat.engine.tools import Tool, ToolState, sandbox_calculator
from picochat.model.kv_cache import RaggedKVCache
from picochat.tokenizer.chat import chat_tokens


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256        # generated tokens per sample, forced tool tokens included
    temperature: float = 1.0     # 0 = greedy
    top_k: int = 0               # keep the k most likely tokens (0 = all)
    top_p: float = 1.0           # nucleus sampling (Holtzman et al. 2019, arXiv:1904.09751)
    n: int = 1                   # samples per prompt (the prompt is prefilled once)
    seed: int | None = None      # same seed, same prompt -> same samples; None = fresh randomness
    stop: tuple[str, ...] = ()   # stop strings (not included in the text)


@dataclass
class TokenEvent:
    key: Any                     # the key given to `add` (Engine: the prompt's index)
    sample: int                  # which of the request's n samples
    id: int
    forced: bool                 # True for tool output tokens forced by the tool state machine
    logprob: float               # log p(id) under the model (temperature 1)
    text: list[Piece]            # (segment, text) pieces this token completes (may be empty)
    finish: str | None = None    # None while going on, then "stop" or "length"


@dataclass
class Completion:
    """One finished sample. `ids` includes the final <|assistant_end|> when finish == "stop"."""

    ids: list[int] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    finish: str | None = None

    @property
    def parts(self) -> list[dict[str, str]]:
        """The reply as message parts: [{"type": "text" | "python" | "python_output", "text"}]."""
        return merge_pieces(self.pieces)

    @property
    def text(self) -> str:
        """The reply's plain text (tool calls and outputs left out)."""
        return "".join(t for seg, t in self.pieces if seg == "text")


def _mixed_seed(seed: int, sample: int) -> int:
    return hash((seed, sample)) & (2**63 - 1)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. (run seed, rollout batch, prompt): the same parts give
    the same seed in every process (unlike hash() of strings)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def fit_prompt(prompt: Sequence[int], context: int, max_new_tokens: int) -> list[int]:
    """The prompt cut to its last tokens so that a reply fits in the model's context: the reply
    gets room for max_new_tokens, but at most a quarter of the context, so a long prompt keeps at
    least 3/4 of it (its end: the question). The one rule of every sampled eval and RL rollout;
    a reply that runs out of room stops at the context's end (finish "length")."""
    room = max(1, min(max_new_tokens, context // 4))
    return list(prompt[-(context - room):])


def truncate_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Per-row top-k then top-p (B, V) -> (B, V) with dropped tokens at -inf. top_k (B,) with 0 = off;
    top_p (B,) with 1 = off. Nucleus keeps the smallest set whose mass reaches p (the first
    token always stays)."""
    V = logits.size(-1)
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V) each; order[b, r] = id of rank r
    rank = torch.arange(V, device=logits.device)[None, :]        # (1, V)
    k = torch.where(top_k > 0, top_k, V)[:, None]                # (B, 1)
    sorted_logits = sorted_logits.masked_fill(rank >= k, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)                        # (B, V), by rank
    mass_before = probs.cumsum(dim=-1) - probs                   # (B, V): mass of the better-ranked tokens
    p = torch.where(top_p < 1, top_p, float("inf"))[:, None]     # (B, 1)
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)  # back to id order


def choose_tokens(logits: torch.Tensor, params: Sequence[SamplingParams],
                  generators: Sequence[torch.Generator]) -> list[int]:
    """One token per row of logits (B, V): argmax where temperature is 0, else a draw from the
    row's own generator (per-request seeds stay reproducible whatever else is in the batch)."""
    out = logits.argmax(dim=-1).tolist()                          # (B,) greedy picks
    hot = [i for i, p in enumerate(params) if p.temperature > 0]  # the rows that sample
    if not hot:
        return out
    dev = logits.device
    sub = logits[hot] / torch.tensor([params[i].temperature for i in hot], device=dev)[:, None]  # (n_hot, V)
    top_k = torch.tensor([params[i].top_k for i in hot], device=dev)   # (n_hot,)
    top_p = torch.tensor([params[i].top_p for i in hot], device=dev)   # (n_hot,)
    if bool((top_k > 0).any()) or bool((top_p < 1).any()):
        sub = truncate_logits(sub, top_k, top_p)
    probs = sub.softmax(dim=-1)                                   # (n_hot, V)
    draws = torch.cat([torch.multinomial(probs[j], 1, generator=generators[i]) for j, i in enumerate(hot)])  # (n_hot,)
    for i, tok in zip(hot, draws.tolist()):
        out[i] = tok
    return out


@dataclass
class _Row:
    key: Any
    sample: int
    params: SamplingParams
    generator: torch.Generator
    tool: ToolState
    text: TextStream
    generated: int = 0


class BatchDecoder:
    """A fixed set of rows over one KV cache; requests are added and finish between steps."""

    def __init__(self, engine: Engine, max_rows: int, max_len: int):
        self.engine, self.model = engine, engine.model
        limit = engine.model.cos.size(1)  # the rotary table bounds every position
        self.cache = RaggedKVCache.for_model(engine.model, max_rows, min(max_len, limit))
        self.rows: list[_Row | None] = [None] * max_rows
        self._unfed: dict[int, int] = {}  # row -> its sampled token, not yet fed to the model
        # (max_rows, V): each row's logits for its next token, from its last prefill or decode pass
        self.next_logits = torch.zeros(max_rows, engine.model.config.vocab_size, device=engine.model.device)

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    @property
    def free_rows(self) -> int:
        return sum(r is None for r in self.rows)

    @property
    def busy(self) -> bool:
        return any(r is not None for r in self.rows)

    def add(self, prompt: Sequence[int], params: SamplingParams, key: Any) -> None:
        """Prefill `prompt` once and start `params.n` samples of it."""
        error = self.add_many([(prompt, params, key)])[0]
        if error is not None:
            raise error

    @torch.inference_mode()
    def add_many(self, requests: Sequence[tuple[Sequence[int], SamplingParams, Any]]) -> list[Exception | None]:
        """Start several requests (prompt, params, key), prefilling their prompts together in as
        few forward passes as fit the memory budget. Returns, per request, None or why it was
        not started (empty prompt, prompt too long, not enough free rows)."""
        errors: list[Exception | None] = [None] * len(requests)
        free = [i for i, r in enumerate(self.rows) if r is None]
        todo = []
        for i, (prompt, params, key) in enumerate(requests):
            if not prompt:
                errors[i] = ValueError("empty prompt")
            elif len(prompt) >= self.max_len:
                errors[i] = ValueError(f"prompt of {len(prompt)} tokens leaves no room in a "
                                       f"{self.max_len}-token cache")
            elif len(free) < params.n:
                errors[i] = RuntimeError(f"{params.n} rows needed, {len(free)} free")
            else:
                todo.append((list(prompt), params, key, free[:params.n]))
                free = free[params.n:]
        # Group prompts so that one pass's logits (padded tokens x vocab) stay under ~256 MB.
        budget = max(1, 2**26 // self.model.config.vocab_size)
        group: list = []
        for item in todo:
            if group and (len(group) + 1) * max(len(item[0]), *(len(g[0]) for g in group)) > budget:
                self._prefill(group)
                group = []
            group.append(item)
        if group:
            self._prefill(group)
        return errors

    def _prefill(self, group: list) -> None:
        """One forward pass over the group's prompts, right-padded to the longest: causal attention
        means a prompt's tokens never see the padding after them. The keys and values are then
        copied into each request's rows (n rows for n samples)."""
        lengths = [len(p) for p, *_ in group]
        ids = torch.zeros(len(group), max(lengths), dtype=torch.long)  # (B, T_max), right-padded prompts
        for b, (prompt, *_) in enumerate(group):
            ids[b, :len(prompt)] = torch.tensor(prompt)
        tmp = RaggedKVCache.for_model(self.model, len(group), max(lengths), dtype=self.cache.k.dtype)
        logits = self.model(ids.to(self.model.device), kv_cache=tmp)  # (B, T, V)
        last = logits[torch.arange(len(group)), torch.tensor(lengths) - 1]  # (B, V): each prompt's last token
        for b, (_, params, key, rows) in enumerate(group):
            for j, row in enumerate(rows):
                self.cache.copy_row(b, row, source=tmp, n=lengths[b])
                self.next_logits[row] = last[b]
                self.rows[row] = self.engine._new_row(key, j, params)

    def cancel(self, key: Any) -> None:
        """Drop every row of request `key` now (a client went away)."""
        for i, r in enumerate(self.rows):
            if r is not None and r.key == key:
                self._free(i)

    def _free(self, i: int) -> None:
        self.rows[i], self.cache.lens[i] = None, 0
        self._unfed.pop(i, None)

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """One token for every live row, then one forward pass for the rows that go on."""
        events = self.sample()
        self.feed()
        return events

    @torch.inference_mode()
    def sample(self, rows: Sequence[int] | None = None) -> list[TokenEvent]:
        """Pick and emit the next token of `rows` (default: every live row) whose token is not yet
        chosen; the rows that go on wait for `feed`. A server calls this right after a prefill, so a
        new request's first token goes out without waiting for the whole batch's forward pass."""
        candidates = range(len(self.rows)) if rows is None else rows
        live = [i for i in candidates if self.rows[i] is not None and i not in self._unfed]
        if not live:
            return []
        rows_ = [self.rows[i] for i in live]
        logits = self.next_logits[live]                               # (n, V)
        sampled = choose_tokens(logits, [r.params for r in rows_], [r.generator for r in rows_])
        forced = [r.tool.next_forced() for r in rows_]
        tokens = [s if f is None else f for s, f in zip(sampled, forced)]
        logprobs = F.log_softmax(logits, dim=-1)[torch.arange(len(live)), torch.tensor(tokens)].tolist()
        events = []
        for i, r, tok, f, lp in zip(live, rows_, tokens, forced, logprobs):
            ev = self._emit(i, r, tok, f is not None, lp)
            events.append(ev)
            if ev.finish is None:
                self._unfed[i] = tok
            else:
                self._free(i)
        return events

    def feed(self) -> None:
        """One forward pass over the rows whose next token `sample` chose."""
        if self._unfed:
            unfed, self._unfed = self._unfed, {}
            self._forward(unfed)

    def _emit(self, i: int, r: _Row, tok: int, forced: bool, logprob: float) -> TokenEvent:
        segment = r.tool.observe(tok)
        r.generated += 1
        pieces = r.text.push(self.engine.tokenizer.id_to_bytes(tok), segment)
        finish = None
        if (not forced and self.engine.specials.stops(tok)) or r.text.stopped:
            finish = "stop"
        elif r.generated >= r.params.max_tokens or self.cache.lens[i] >= self.max_len:
            finish = "length"
        if finish is not None:
            pieces += r.text.finish()
        return TokenEvent(r.key, r.sample, tok, forced, logprob, pieces, finish)

    def _forward(self, going_on: dict[int, int]) -> None:
        """Feed each continuing row its new token. Rows are not compacted: the pass covers rows
        [0, hi) and idle rows in that range get a dummy token that is forgotten right after (every
        live row is in going_on: `sample` leaves none out of a full step)."""
        hi = max(going_on) + 1
        ids = torch.zeros(hi, 1, dtype=torch.long)                    # (hi, 1): one new token per row
        for i, tok in going_on.items():
            ids[i, 0] = tok
        self.cache.active = slice(0, hi)
        self.next_logits[:hi] = self.model(ids.to(self.model.device), kv_cache=self.cache)[:, -1]  # (hi, V)
        for i in range(hi):
            if i not in going_on:
                self.cache.lens[i] = 0


class Engine:
    """Generation for every consumer. `tool` runs python tool calls (None = no tools)."""

    def __init__(self, model: torch.nn.Module, tokenizer, tool: Tool | None = sandbox_calculator):
        self.model, self.tokenizer, self.tool = model, tokenizer, tool
        self.specials = chat_tokens(tokenizer)

    def _new_row(self, key: Any, sample: int, params: SamplingParams) -> _Row:
        g = torch.Generator(device=self.model.device)
        if params.seed is None:
            g.seed()
        else:
            g.manual_seed(_mixed_seed(params.seed, sample))
        tool = ToolState(self.specials, self.tokenizer.encode, self.tokenizer.decode, self.tool)
        return _Row(key, sample, params, g, tool, TextStream(params.stop))

    def decoder(self, max_rows: int, max_len: int | None = None) -> BatchDecoder:
        """An empty batch of `max_rows` rows of up to `max_len` tokens (default: the model's context)."""
        return BatchDecoder(self, max_rows, max_len or self.model.config.sequence_len)

    def stream(self, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None,
               max_rows: int = 64, seeds: Sequence[int] | None = None, **overrides: Any) -> Iterator[TokenEvent]:
        """Generate for every prompt (params.n samples each), yielding tokens as they come.
        At most `max_rows` rows decode at once; further prompts join as rows free up. `seeds`, one
        per prompt, overrides params.seed so that different prompts draw independent streams (RL
        groups); without it sample j of every prompt shares params.seed's stream."""
        params = replace(params or SamplingParams(), **overrides)
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if params.n > max_rows:
            max_rows = params.n
        max_len = min(self.model.config.sequence_len, max(map(len, prompts)) + params.max_tokens)
        dec = self.decoder(min(max_rows, len(prompts) * params.n), max_len)
        waiting = deque(enumerate(prompts))
        while waiting or dec.busy:
            batch = []
            while waiting and dec.free_rows >= params.n * (len(batch) + 1):
                i, prompt = waiting.popleft()
                batch.append((prompt, params if seeds is None else replace(params, seed=seeds[i]), i))
            for error in dec.add_many(batch):
                if error is not None:
                    raise error
            yield from dec.step()

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None,
                 max_rows: int = 64, seeds: Sequence[int] | None = None, **overrides: Any) -> list[list[Completion]]:
        """Like `stream`, but returns the finished samples: result[prompt_index][sample]."""
        n = replace(params or SamplingParams(), **overrides).n
        out = [[Completion() for _ in range(n)] for _ in prompts]
        if not prompts:
            return out
        for ev in self.stream(prompts, params, max_rows=max_rows, seeds=seeds, **overrides):
            c = out[ev.key][ev.sample]
            c.ids.append(ev.id)
            c.forced.append(ev.forced)
            c.logprobs.append(ev.logprob)
            c.pieces += ev.text
            c.finish = ev.finish
        return out
