"""What the API routes do apart from HTTP: check the request against the model, submit it to the
batchers, and relay the tokens back as chat or text completion objects (streamed or whole).

Both endpoints share one path: `prepare` (token ids + SamplingParams, or a 4xx), `start` (submit
every prompt; 429/503 when full), then `events` (the tokens as they come, from every prompt of
the request), which the four formatters (chat / text x stream / whole) turn into the wire format.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from picochat.engine.batcher import Overloaded, Router, Ticket
from picochat.engine.engine import SamplingParams, TokenEvent
from picochat.engine.text import merge_pieces
from picochat.serve import protocol as P
from picochat.serve.access_log import CLIENT_CLOSED, RequestStats, stats_of
from picochat.serve.errors import ApiError, ClientGone
from picochat.tokenizer.chat import ConversationError, render_for_completion


@dataclass
class ServeLimits:
    max_prompt_tokens: int = 0          # 0 = the engine's context minus one
    max_concurrent: int = 128           # requests in flight (streaming or not) before 429
    max_body_bytes: int = 1_000_000     # larger request bodies get 413
    default_max_tokens: int = 512       # chat: when the request gives no max_tokens (OpenAI's
    default_completion_tokens: int = 16  # completions default is 16)


@dataclass
class Job:
    """One accepted request: its tickets (one per prompt) and its stats. `release` is idempotent
    and runs however the request ends: cancel whatever still generates, free the in-flight slot."""

    service: Service
    tickets: list[Ticket]
    params: SamplingParams
    stats: RequestStats
    released: bool = False
    done: bool = False     # a stream sets it when it reaches [DONE]; unset at release = the client left

    def release(self) -> None:
        if not self.released:
            self.released = True
            for t in self.tickets:
                t.cancel()  # a no-op for a finished ticket
            self.service.in_flight -= 1

    async def batches(self) -> AsyncIterator[list[tuple[int, TokenEvent]]]:
        """(choice index, event) for every generated token of every prompt, as they arrive, in
        batches of whatever has arrived: under load a stream then writes several tokens at once
        instead of one socket write per token."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, ticket: Ticket) -> None:
            try:
                async for events in ticket:
                    queue.put_nowait((i, events))
                queue.put_nowait((i, None))
            except Exception as e:  # noqa: BLE001 (handed to the consumer below)
                queue.put_nowait((i, e))

        pumps = [asyncio.ensure_future(pump(i, t)) for i, t in enumerate(self.tickets)]
        try:
            left = len(pumps)
            while left:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                batch = []
                for i, item in items:
                    if item is None:
                        left -= 1
                    elif isinstance(item, Exception):
                        raise item
                    else:
                        self.stats.token(len(item))
                        batch += [(i * self.params.n + ev.sample, ev) for ev in item]
                if batch:
                    yield batch
        finally:
            for p in pumps:
                p.cancel()


class JobStream(StreamingResponse):
    """An SSE response that releases its job however it ends: finished, failed, or the client
    hung up (then quietly: a closed connection is not a server error)."""

    def __init__(self, content: AsyncIterator[str], job: Job):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (ClientDisconnect, OSError):
            pass
        finally:
            if not self.job.done:
                self.job.stats.status = CLIENT_CLOSED
            self.job.release()


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


async def _sse_stream(job: Job, chunks: AsyncIterator[str], usage: Callable[[dict], dict] | None
                      ) -> AsyncIterator[str]:
    """What every streamed reply shares around its chunks: the usage chunk when the client asked
    for it, an error chunk if the engine failed mid-stream (the status line is long gone), then
    OpenAI's end marker `[DONE]`."""
    try:
        async for text in chunks:
            yield text
        if usage is not None:
            yield sse(usage(P.usage(job.stats.prompt_tokens, job.stats.completion_tokens)))
    except (RuntimeError, ValueError) as e:
        yield sse(P.error_body(str(e), "server_error"))
    job.done = True
    yield sse("[DONE]")


class Service:
    def __init__(self, router: Router, tokenizer: Any, names: Sequence[str], limits: ServeLimits):
        self.router, self.tokenizer, self.names, self.limits = router, tokenizer, tuple(names), limits
        self.max_prompt = min(limits.max_prompt_tokens or router.max_len - 1, router.max_len - 1)
        self.in_flight = 0

    # ---- checks ----

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.names:
            raise ApiError(404, f"the model {name!r} does not exist; this server runs "
                                f"{' or '.join(map(repr, self.names))}", param="model", code="model_not_found")

    def check_prompt(self, prompt: list[int], param: str) -> None:
        if len(prompt) > self.max_prompt:
            raise ApiError(400, f"the prompt is {len(prompt)} tokens; the limit is {self.max_prompt}. Shorten it.",
                           param=param, code="context_length_exceeded")
        bad = next((t for t in prompt if t >= self.tokenizer.vocab_size), None)
        if bad is not None:
            raise ApiError(400, f"token id {bad} is outside the vocabulary (size {self.tokenizer.vocab_size})",
                           param=param)

    def sampling(self, req: P.SamplingFields, longest_prompt: int, requested: int | None,
                 default: int) -> SamplingParams:
        """SamplingParams for the request; max_tokens must fit the context beside the prompt (400, as
        OpenAI answers, not a silent cut). Without max_tokens the reply gets `default`, cut to fit."""
        room = self.router.max_len - longest_prompt
        if requested is not None and requested > room:
            raise ApiError(400, f"max_tokens {requested} does not fit: the context is {self.router.max_len} "
                                f"tokens and the prompt takes {longest_prompt}, so at most {room} can be "
                                "generated", param="max_tokens", code="context_length_exceeded")
        n = req.n or 1
        if n > self.router.max_rows:
            raise ApiError(400, f"n={n} is more than this server's {self.router.max_rows} rows", param="n")
        return SamplingParams(max_tokens=requested or min(default, room),
                              temperature=1.0 if req.temperature is None else req.temperature,
                              top_k=req.top_k or 0, top_p=1.0 if req.top_p is None else req.top_p,
                              n=n, seed=req.seed, stop=tuple(req.stop or ()))

    # ---- submit ----

    def start(self, prompts: list[list[int]], params: SamplingParams, request: Request) -> Job:
        if self.in_flight >= self.limits.max_concurrent:
            raise ApiError(429, f"{self.in_flight} requests are in flight; the limit is "
                                f"{self.limits.max_concurrent}. Retry shortly.", type_="rate_limit_error",
                           code="rate_limit_exceeded")
        tickets: list[Ticket] = []
        try:
            for p in prompts:
                tickets.append(self.router.submit(p, params))
        except Overloaded as e:
            for t in tickets:
                t.cancel()
            raise ApiError(503, f"the server is overloaded ({e}); retry shortly.", code="overloaded") from None
        self.in_flight += 1
        stats = stats_of(request.scope)
        stats.prompt_tokens = sum(map(len, prompts))
        return Job(self, tickets, params, stats)

    async def whole(self, job: Job, consume: Callable[[int, TokenEvent], None], request: Request) -> None:
        """Run the job to the end, feeding every event to `consume`; a client that hangs up
        meanwhile cancels it (ClientGone)."""
        async def run() -> None:
            async for batch in job.batches():
                for index, ev in batch:
                    consume(index, ev)

        task = asyncio.ensure_future(run())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.25)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
                    raise ClientGone() from None
            task.result()
        except (RuntimeError, ValueError) as e:
            raise ApiError(500, str(e), type_="server_error") from None
        finally:
            job.release()

    # ---- chat ----

    async def chat(self, req: P.ChatCompletionRequest, request: Request) -> Response:
        self.check_model(req.model)
        try:
            prompt = render_for_completion(self.tokenizer, req.conversation())
        except ConversationError as e:
            raise ApiError(400, str(e), param="messages") from None
        self.check_prompt(prompt, "messages")
        params = self.sampling(req, len(prompt), req.requested_tokens, self.limits.default_max_tokens)
        job = self.start([prompt], params, request)
        if req.stream:
            return JobStream(self._chat_stream(job, req), job)
        return await self._chat_whole(job, req, request)

    async def _chat_stream(self, job: Job, req: P.ChatCompletionRequest) -> AsyncIterator[str]:
        cid, created, name = P.new_id(), int(time.time()), self.names[0]

        def one(index: int, delta: dict, finish: str | None = None, logprobs: list | None = None) -> str:
            return sse(P.chunk(cid, name, created, [P.delta_choice(index, delta, finish, logprobs)]))

        async def chunks() -> AsyncIterator[str]:
            for i in range(job.params.n):
                yield one(i, {"role": "assistant", "content": ""})
            async for batch in job.batches():
                out = []
                for index, ev in batch:
                    # With logprobs, every token gets a chunk (maybe with empty text) carrying its entry.
                    lp = [P.token_logprob(self.tokenizer, ev.id, ev.logprob)] if req.logprobs else None
                    for segment, text in ev.text or ([("text", "")] if lp else []):
                        out.append(one(index, {"content": text, "segment": segment}, logprobs=lp))
                        lp = None
                    if ev.finish:
                        out.append(one(index, {}, ev.finish))
                if out:
                    yield "".join(out)

        usage = (lambda u: P.chunk(cid, name, created, [], u)) if req.include_usage else None
        async for text in _sse_stream(job, chunks(), usage):
            yield text

    async def _chat_whole(self, job: Job, req: P.ChatCompletionRequest, request: Request) -> Response:
        n = job.params.n
        pieces: list[list] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        logprobs: list[list | None] = [[] if req.logprobs else None for _ in range(n)]

        def consume(i: int, ev: TokenEvent) -> None:
            pieces[i] += ev.text
            if req.logprobs:
                logprobs[i].append(P.token_logprob(self.tokenizer, ev.id, ev.logprob))
            finish[i] = ev.finish or finish[i]

        await self.whole(job, consume, request)
        body = P.completion(P.new_id(), self.names[0], int(time.time()),
                            [(merge_pieces(p), f, lp) for p, f, lp in zip(pieces, finish, logprobs)],
                            P.usage(job.stats.prompt_tokens, job.stats.completion_tokens))
        return JSONResponse(body)

    # ---- text completions ----

    def _encode_prompts(self, req: P.CompletionRequest) -> tuple[list[list[int]], list[str]]:
        """Token ids and echo text per prompt. Text is encoded after <|bos|>, as documents were in
        pretraining; token id prompts are taken as they are."""
        ids, texts = [], []
        for i, p in enumerate(req.prompts()):
            param = "prompt" if isinstance(req.prompt, str) or isinstance(req.prompt[0], int) else f"prompt.{i}"
            ids.append(self.tokenizer.encode(p, prepend=self.tokenizer.bos_id) if isinstance(p, str) else list(p))
            self.check_prompt(ids[-1], param)
            texts.append(p if isinstance(p, str) else self.tokenizer.decode(p) if req.echo else "")
        return ids, texts

    async def complete(self, req: P.CompletionRequest, request: Request) -> Response:
        self.check_model(req.model)
        prompts, texts = self._encode_prompts(req)
        params = self.sampling(req, max(map(len, prompts)), req.max_tokens, self.limits.default_completion_tokens)
        job = self.start(prompts, params, request)
        echo = [t if req.echo else "" for t in texts for _ in range(params.n)]
        if req.stream:
            return JobStream(self._text_stream(job, req, echo), job)
        return await self._text_whole(job, req, echo, request)

    def _token_text(self, token_id: int) -> str:
        data = self.tokenizer.id_to_bytes(token_id) or self.tokenizer.decode([token_id]).encode()
        return data.decode("utf-8", errors="replace")

    async def _text_stream(self, job: Job, req: P.CompletionRequest, echo: list[str]) -> AsyncIterator[str]:
        cid, created, name = P.new_id("cmpl-"), int(time.time()), self.names[0]
        offsets = [len(e) for e in echo]

        def one(index: int, text: str, finish: str | None = None, lp: dict | None = None) -> str:
            return sse(P.text_completion(cid, name, created, [P.text_choice(index, text, finish, lp)], None))

        async def chunks() -> AsyncIterator[str]:
            for i, e in enumerate(echo):
                if e:
                    yield one(i, e)
            async for batch in job.batches():
                out = []
                for index, ev in batch:
                    text = "".join(t for _, t in ev.text)
                    lp = None
                    if req.logprobs is not None:
                        lp = P.text_logprobs([self._token_text(ev.id)], [ev.logprob], offsets[index])
                    offsets[index] += len(text)
                    if text or lp:
                        out.append(one(index, text, None, lp))
                    if ev.finish:
                        out.append(one(index, "", ev.finish))
                if out:
                    yield "".join(out)

        usage = (lambda u: P.text_completion(cid, name, created, [], u)) if req.include_usage else None
        async for text in _sse_stream(job, chunks(), usage):
            yield text

    async def _text_whole(self, job: Job, req: P.CompletionRequest, echo: list[str], request: Request) -> Response:
        texts = list(echo)
        finish: list[str | None] = [None] * len(echo)
        tokens: list[list[str]] = [[] for _ in echo]
        logprobs: list[list[float]] = [[] for _ in echo]

        def consume(i: int, ev: TokenEvent) -> None:
            texts[i] += "".join(t for _, t in ev.text)
            finish[i] = ev.finish or finish[i]
            if req.logprobs is not None:
                tokens[i].append(self._token_text(ev.id))
                logprobs[i].append(ev.logprob)

        await self.whole(job, consume, request)
        choices = [P.text_choice(i, texts[i], finish[i], None if req.logprobs is None else
                                 P.text_logprobs(tokens[i], logprobs[i], len(echo[i])))
                   for i in range(len(echo))]
        body = P.text_completion(P.new_id("cmpl-"), self.names[0], int(time.time()), choices,
                                 P.usage(job.stats.prompt_tokens, job.stats.completion_tokens))
        return JSONResponse(body)
