"""`picochat serve`: the OpenAI-compatible API and the chat page, on FastAPI + uvicorn.

    POST /v1/chat/completions   chat completions, streaming (SSE) or not
    GET  /v1/models             the one model this server runs
    GET  /health                liveness and per-worker load
    GET  /                      the chat page (static/: plain HTML, CSS and JS, no build step)

The event loop only parses, validates and relays: conversations become token ids in
`tokenizer/chat.py`, and the forward passes run on the batchers' threads (engine/batcher.py).
A client that disconnects has its request cancelled, which frees its rows before the next step.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from picochat.engine.batcher import Batcher, Overloaded, Router, Ticket
from picochat.engine.engine import SamplingParams
from picochat.engine.text import merge_pieces
from picochat.serve import protocol as P
from picochat.tokenizer.chat import ConversationError, render_for_completion

STATIC = Path(__file__).parent / "static"


@dataclass
class ServeLimits:
    max_prompt_tokens: int = 0          # 0 = the engine's context minus one
    max_concurrent: int = 128           # requests in flight (streaming or not) before 429
    max_body_bytes: int = 1_000_000     # larger request bodies get 413
    default_max_tokens: int = 512       # when the request gives no max_tokens


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.type = status, message, param, type_


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"request body is over the {limit}-byte limit")
    return bytes(body)


def _parse(body: bytes) -> P.ChatCompletionRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"request body is not valid JSON ({e})") from None
    try:
        return P.ChatCompletionRequest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ApiError(400, f"invalid request: {where}: {err['msg']}", param=where) from None


class ChatService:
    """What the routes do, apart from HTTP: render, check limits, submit, relay."""

    def __init__(self, router: Router, tokenizer: Any, model_name: str, limits: ServeLimits):
        self.router, self.tokenizer, self.model_name, self.limits = router, tokenizer, model_name, limits
        self.max_prompt = min(limits.max_prompt_tokens or router.max_len - 1, router.max_len - 1)
        self.in_flight = 0

    def prepare(self, req: P.ChatCompletionRequest) -> tuple[list[int], SamplingParams]:
        try:
            prompt = render_for_completion(self.tokenizer, req.conversation())
        except ConversationError as e:
            raise ApiError(400, str(e), param="messages") from None
        if len(prompt) > self.max_prompt:
            raise ApiError(400, f"the conversation is {len(prompt)} tokens; the limit is {self.max_prompt}. "
                                "Shorten it or start a new chat.", param="messages", type_="context_length_exceeded")
        if req.n > self.router.max_rows:
            raise ApiError(400, f"n={req.n} is more than this server's {self.router.max_rows} rows", param="n")
        room = self.router.max_len - len(prompt)
        max_tokens = min(req.max_completion_tokens or req.max_tokens or self.limits.default_max_tokens, room)
        return prompt, SamplingParams(max_tokens=max_tokens, temperature=req.temperature, top_k=req.top_k,
                                      top_p=req.top_p, n=req.n, seed=req.seed, stop=tuple(req.stop or ()))

    def submit(self, prompt: list[int], params: SamplingParams) -> Ticket:
        if self.in_flight >= self.limits.max_concurrent:
            raise ApiError(429, f"{self.in_flight} requests are in flight; the limit is "
                                f"{self.limits.max_concurrent}. Retry shortly.", type_="rate_limit_error")
        try:
            ticket = self.router.submit(prompt, params)
        except Overloaded as e:
            raise ApiError(503, f"the server is overloaded ({e}); retry shortly.", type_="overloaded") from None
        self.in_flight += 1
        return ticket

    async def stream(self, ticket: Ticket, req: P.ChatCompletionRequest) -> AsyncIterator[str]:
        cid, created, produced = P.new_id(), int(time.time()), 0

        def sse(obj: dict) -> str:
            return f"data: {json.dumps(obj)}\n\n"

        def one(index: int, delta: dict, finish: str | None = None, logprobs: list | None = None) -> str:
            return sse(P.chunk(cid, self.model_name, created, [P.delta_choice(index, delta, finish, logprobs)]))

        try:
            for i in range(req.n):
                yield one(i, {"role": "assistant", "content": ""})
            async for events in ticket:
                for ev in events:
                    produced += 1
                    # With logprobs, every token gets a chunk (maybe with empty text) carrying its entry.
                    lp = [P.token_logprob(self.tokenizer, ev.id, ev.logprob)] if req.logprobs else None
                    for segment, text in ev.text or ([("text", "")] if lp else []):
                        yield one(ev.sample, {"content": text, "segment": segment}, logprobs=lp)
                        lp = None
                    if ev.finish:
                        yield one(ev.sample, {}, ev.finish)
            if req.stream_options and req.stream_options.include_usage:
                yield sse(P.chunk(cid, self.model_name, created, [], P.usage(len(ticket.prompt), produced)))
        except (RuntimeError, ValueError) as e:
            yield sse(P.error_body(str(e), "server_error"))
        finally:
            ticket.cancel()  # no-op when finished; frees the rows when the client went away
            self.in_flight -= 1
        yield "data: [DONE]\n\n"

    async def collect(self, ticket: Ticket, req: P.ChatCompletionRequest, request: Request) -> Response:
        pieces: list[list] = [[] for _ in range(req.n)]
        finish: list[str | None] = [None] * req.n
        logprobs: list[list | None] = [[] if req.logprobs else None for _ in range(req.n)]
        produced = 0

        async def run() -> None:
            nonlocal produced
            async for events in ticket:
                for ev in events:
                    produced += 1
                    pieces[ev.sample] += ev.text
                    if req.logprobs:
                        logprobs[ev.sample].append(P.token_logprob(self.tokenizer, ev.id, ev.logprob))
                    finish[ev.sample] = ev.finish or finish[ev.sample]

        task = asyncio.ensure_future(run())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.25)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
                    return Response(status_code=499)
            task.result()
        except (RuntimeError, ValueError) as e:
            raise ApiError(500, str(e), type_="server_error") from None
        finally:
            ticket.cancel()
            self.in_flight -= 1
        body = P.completion(P.new_id(), self.model_name, int(time.time()),
                            [(merge_pieces(p), f, lp) for p, f, lp in zip(pieces, finish, logprobs)],
                            P.usage(len(ticket.prompt), produced))
        return JSONResponse(body)


def create_app(router: Router | Batcher, tokenizer: Any, model_name: str,
               limits: ServeLimits | None = None) -> FastAPI:
    """The FastAPI app. The router's batcher threads start with the app and stop with it."""
    router = router if isinstance(router, Router) else Router([router])
    service = ChatService(router, tokenizer, model_name, limits or ServeLimits())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        router.start()
        yield
        router.close()

    app = FastAPI(title="picochat", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(P.error_body(e.message, e.type, e.param), status_code=e.status)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = _parse(await _read_body(request, service.limits.max_body_bytes))
        prompt, params = service.prepare(req)
        ticket = service.submit(prompt, params)
        if req.stream:
            # Start the generator now: once inside its try, a disconnect at any point runs its
            # finally (cancel + release); a generator never started would leak the request.
            gen = service.stream(ticket, req)
            first = await gen.__anext__()

            async def body() -> AsyncIterator[str]:
                yield first
                async for item in gen:
                    yield item

            return StreamingResponse(body(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await service.collect(ticket, req, request)

    @app.get("/v1/models")
    async def models() -> dict:
        return P.models_list([model_name])

    @app.get("/health")
    async def health() -> dict:
        workers = [{"name": b.name, "load": b.load, "rows": b.max_rows} for b in router.batchers]
        return {"status": "ok", "model": model_name, "in_flight": service.in_flight, "workers": workers}

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _worker_devices(device_name: str, gpus: int) -> list:
    """One worker per GPU (all visible ones unless --gpus says how many); else one CPU worker."""
    import torch

    from picochat.common.device import pick_device

    device = pick_device(device_name)
    if device.type != "cuda" or device.index is not None:
        return [device]
    count = torch.cuda.device_count()
    return [torch.device("cuda", i) for i in range(min(gpus or count, count))]


def main(cfg: Any) -> None:
    """`picochat serve`: load the run's model on every worker device and serve until Ctrl-C."""
    import torch
    import uvicorn

    from picochat.engine.engine import Engine
    from picochat.engine.load import load_model_and_tokenizer

    s = cfg.serve
    batchers = []
    for dev in _worker_devices(cfg.run.device, s.gpus):
        model, tokenizer, stage = load_model_and_tokenizer(cfg.run.run, cfg.run.home, s.stage, dev)
        if dev.type == "cuda":
            model = model.to(torch.bfloat16)  # halves weight and KV-cache memory; logits stay fp32
        batchers.append(Batcher(Engine(model, tokenizer), s.max_batch, s.max_queue, name=str(dev)))
    name = f"picochat-{cfg.run.run}-{stage}"
    limits = ServeLimits(s.max_prompt_tokens, s.max_concurrent, s.max_body_bytes, s.default_max_tokens)
    app = create_app(Router(batchers), tokenizer, name, limits)
    print(f"picochat: serving {name} on {len(batchers)} worker(s) at http://{s.host}:{s.port}/ "
          f"(API: /v1/chat/completions)", flush=True)
    uvicorn.run(app, host=s.host, port=s.port, log_level="warning")
