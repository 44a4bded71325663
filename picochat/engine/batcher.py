"""Continuous batching for the server: many requests share one running batch.

The batcher owns the model on a thread of its own and loops (vLLM's contract):

    schedule()  drop cancelled requests, admit waiting ones into free rows (prefill), and
                hand each new request its first token at once
    step()      one token for every live row: one forward pass for the whole batch
    update()    hand each request its tokens

Prefill has priority, in bounded slices (after Agrawal et al. 2024, "Sarathi-Serve", OSDI: a
running decode should stall for at most a fixed amount of prefill work). Waiting requests are
admitted first-come first-served in passes of at most `prefill_chunk` prompt tokens,
PASSES_PER_STEP passes between two decode steps; each pass's requests get their first token
straight from the prefill logits, before the batch's next forward pass. So new prompts are not
starved by running decodes (they join at the next step, and their first token does not wait for
the batch), and running streams wait for at most one slice of prefill per token. A prompt longer than a pass gets a
pass of its own (prompts are not split).

Requests join and leave between steps, so a short reply does not wait for a long one and a new
request does not wait for the batch to drain (Yu et al. 2022, "Orca", OSDI). The asyncio event
loop never runs a forward pass: tokens cross over through `loop.call_soon_threadsafe` into an
`asyncio.Queue` per request. The waiting queue is bounded: when it is full, `submit` raises
`Overloaded` at once (back-pressure: the server answers 503 instead of queueing without end).

`Router` spreads requests over several batchers (one per GPU), each to the least-loaded.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from picochat.engine.engine import Engine, SamplingParams, TokenEvent

PASSES_PER_STEP = 1  # prefill passes between two decode steps (1, 2 and 4 measured: 1 gave the lowest TTFT)


class Overloaded(Exception):
    """The waiting queue is full; try again later."""


@dataclass
class Ticket:
    """A submitted request, as its caller sees it: `async for events in ticket` yields the events
    of each decode step (a list, one per sample that advanced), then ends."""

    id: int
    prompt: list[int]
    params: SamplingParams
    batcher: Batcher
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    unfinished: int = 0

    def cancel(self) -> None:
        """Stop generating and free the request's rows before the next step."""
        self.batcher.cancel(self)

    async def __aiter__(self) -> AsyncIterator[list[TokenEvent]]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class Batcher:
    def __init__(self, engine: Engine, max_rows: int = 32, max_queue: int = 64, max_len: int | None = None,
                 name: str = "worker0", prefill_chunk: int = 0):
        self.engine, self.name, self.max_queue, self.prefill_chunk = engine, name, max_queue, prefill_chunk
        self.decoder = engine.decoder(max_rows, max_len)
        self._waiting: deque[Ticket] = deque()
        self._running: dict[int, Ticket] = {}
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self.steps = 0

    @property
    def max_rows(self) -> int:
        return len(self.decoder.rows)

    @property
    def max_len(self) -> int:
        return self.decoder.max_len

    @property
    def load(self) -> int:
        """Rows in use plus rows asked for by waiting requests: what the router balances."""
        with self._lock:
            return sum(t.params.n for t in self._waiting) + sum(t.params.n for t in self._running.values())

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def submit(self, prompt: Sequence[int], params: SamplingParams) -> Ticket:
        """Queue a request (call from the event loop). Raises Overloaded when the queue is full."""
        if params.n > self.max_rows:
            raise ValueError(f"n={params.n} exceeds the {self.max_rows} rows of a batch")
        ticket = Ticket(next(self._ids), list(prompt), params, self, unfinished=params.n)
        with self._lock:
            if len(self._waiting) >= self.max_queue:
                raise Overloaded(f"{len(self._waiting)} requests are already waiting")
            self._waiting.append(ticket)
        self._wake.set()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        with self._lock:
            self._cancelled.add(ticket.id)
        self._wake.set()

    # ---- the model thread ----

    def _loop(self) -> None:
        while not self._stop:
            admitted = self._schedule()
            if not self.decoder.busy:
                if not admitted:
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                continue
            try:
                events = self.decoder.step()
            except Exception as e:  # a failing forward pass fails the requests, not the thread
                self._fail_all(e)
                continue
            self.steps += 1
            self._update(events)

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            for tid, t in self._running.items():
                self.decoder.cancel(tid)
                _deliver(t, RuntimeError(f"generation failed: {error}"))
            self._running.clear()

    def _passes(self) -> list[list[Ticket]]:
        """Drop cancelled requests; take waiting ones (first come, first served) that fit in the free
        rows, as prefill passes of at most `prefill_chunk` prompt tokens, PASSES_PER_STEP at most."""
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            self._waiting = deque(t for t in self._waiting if t.id not in cancelled)
            for tid in cancelled & self._running.keys():
                self.decoder.cancel(tid)
                self._finish(self._running.pop(tid))
            chunk = self.prefill_chunk or float("inf")
            passes: list[list[Ticket]] = []
            free, tokens = self.decoder.free_rows, 0
            while self._waiting and free >= self._waiting[0].params.n:
                t = self._waiting[0]
                if not passes or (passes[-1] and tokens + len(t.prompt) > chunk):
                    if len(passes) == PASSES_PER_STEP:
                        break
                    passes.append([])
                    tokens = 0
                free -= t.params.n
                tokens += len(t.prompt)
                passes[-1].append(self._waiting.popleft())
        return passes

    def _schedule(self) -> int:
        """Admit and prefill waiting requests; each gets its first token at once. Returns how many."""
        passes = self._passes()
        for admitted in passes:
            # Prefill outside the lock: submit() must not wait on a forward pass.
            try:
                errors = self.decoder.add_many([(t.prompt, t.params, t.id) for t in admitted])
            except Exception as e:  # e.g. out of memory in the prefill: fail these requests, keep serving
                for t in admitted:
                    self.decoder.cancel(t.id)
                errors = [RuntimeError(f"prefill failed: {e}")] * len(admitted)
            started = set()
            for t, error in zip(admitted, errors):
                if error is not None:
                    _deliver(t, error)
                    continue
                started.add(t.id)
                with self._lock:
                    self._running[t.id] = t
            rows = [i for i, r in enumerate(self.decoder.rows) if r is not None and r.key in started]
            self._update(self.decoder.sample(rows))
        return sum(map(len, passes))

    def _update(self, events: list[TokenEvent]) -> None:
        per_ticket: dict[int, list[TokenEvent]] = {}
        for ev in events:
            per_ticket.setdefault(ev.key, []).append(ev)
        items: list[tuple[Ticket, object]] = []
        with self._lock:
            for tid, evs in per_ticket.items():
                t = self._running.get(tid)
                if t is None:
                    continue
                items.append((t, evs))
                t.unfinished -= sum(ev.finish is not None for ev in evs)
                if t.unfinished == 0:
                    items.append((self._running.pop(tid), None))
        _deliver_many(items)

    @staticmethod
    def _finish(t: Ticket) -> None:
        _deliver(t, None)


def _deliver(t: Ticket, item: object) -> None:
    _deliver_many([(t, item)])


def _deliver_many(items: list[tuple[Ticket, object]]) -> None:
    """Hand each item to its ticket's event loop: one wake-up per loop per step, not one per
    request (each call_soon_threadsafe writes to the loop's self-pipe and takes the GIL to the
    loop thread). A loop that has closed has no one left to tell."""
    per_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, object]]] = {}
    for t, item in items:
        per_loop.setdefault(t.loop, []).append((t.queue, item))
    for loop, puts in per_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, puts)
        except RuntimeError:
            pass


def _put_all(puts: list[tuple[asyncio.Queue, object]]) -> None:
    for queue, item in puts:
        queue.put_nowait(item)


class Router:
    """One batcher per GPU; each request goes to the least-loaded (ties: the first)."""

    def __init__(self, batchers: Sequence[Batcher]):
        if not batchers:
            raise ValueError("a router needs at least one batcher")
        self.batchers = list(batchers)

    def pick(self) -> Batcher:
        return min(self.batchers, key=lambda b: b.load)

    def submit(self, prompt: Sequence[int], params: SamplingParams) -> Ticket:
        return self.pick().submit(prompt, params)

    @property
    def max_rows(self) -> int:
        return min(b.max_rows for b in self.batchers)

    @property
    def max_len(self) -> int:
        return min(b.max_len for b in self.batchers)

    def start(self) -> Router:
        for b in self.batchers:
            b.start()
        return self

    def close(self) -> None:
        for b in self.batchers:
            b.close()
