"""`picochat serve`: the OpenAI-compatible API and the chat page, on FastAPI + uvicorn.

    POST /v1/chat/completions   chat completions, streaming (SSE) or not
    POST /v1/completions        plain text completions (a prompt string, strings, or token ids)
    GET  /v1/models             the served model (and its alias, if one is set)
    GET  /health                liveness and per-worker load
    GET  /                      the chat page (static/: plain HTML, CSS and JS, no build step)

The event loop only parses, validates and relays: conversations become token ids in
`tokenizer/chat.py`, and the forward passes run on the batchers' threads (engine/batcher.py).
A client that disconnects has its request cancelled, which frees its rows before the next step.

Every 4xx/5xx, the framework's own 404/405 included, is OpenAI's error object
`{"error": {"message", "type", "param", "code"}}`. Who may call at all is decided in front of
the routes (serve/guard.py); each request gets one log line (serve/access_log.py).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from picochat.engine.batcher import Batcher, Router
from picochat.serve import protocol as P
from picochat.serve.access_log import AccessLog, stats_of
from picochat.serve.errors import ApiError, ClientGone
from picochat.serve.guard import Guard, Policy, is_loopback
from picochat.serve.jsonbody import BodyError, parse_object
from picochat.serve.service import ServeLimits, Service

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("picochat.serve")

__all__ = ["ServeLimits", "Policy", "create_app", "main"]


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it passes `limit` bytes, declared or not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is {declared} bytes; the limit is {limit}", code="request_too_large")
    body = bytearray()
    try:
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise ApiError(413, f"the request body is over the {limit}-byte limit", code="request_too_large")
    except ClientDisconnect:
        raise ClientGone() from None
    return bytes(body)


_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _is_location(item: int | str) -> bool:
    """pydantic's error locations name union members too (`stop.str`, `content.list[Part]`)."""
    return isinstance(item, int) or not ("[" in item or "(" in item or item in _UNION_TAGS)


def parse_request(body: bytes, schema: type[BaseModel]) -> Any:
    """Bytes -> a validated request, or one 400 that names the field and what was wrong."""
    try:
        data = parse_object(body)
    except BodyError as e:
        raise ApiError(400, str(e)) from None
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        # The deepest error is the most specific (a union reports every member that failed).
        err = max(e.errors(include_url=False), key=lambda x: len(x["loc"]))
        where = ".".join(str(x) for x in err["loc"] if _is_location(x)) or None
        if err["type"] == "extra_forbidden":
            raise ApiError(400, f"unrecognized request argument: {where}", param=where) from None
        msg = err["msg"].removeprefix("Value error, ")
        raise ApiError(400, f"invalid request: {where}: {msg}" if where else f"invalid request: {msg}",
                       param=where) from None


ROUTES_HINT = "the API serves POST /v1/chat/completions, POST /v1/completions and GET /v1/models"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(P.error_body(e.message, e.type, e.param, e.code), status_code=e.status,
                            headers=e.headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, e: ClientGone) -> Response:
        stats_of(request.scope).status = 499  # nobody reads this answer; the log line says what happened
        return Response(status_code=499)

    @app.exception_handler(HTTPException)
    async def framework_error(request: Request, e: HTTPException) -> JSONResponse:
        if e.status_code == 404:
            message = f"no such route: {request.method} {request.url.path}; {ROUTES_HINT}"
        elif e.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (allowed: {e.headers.get('Allow', '?')})"
        else:
            message = str(e.detail)
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        type_ = "server_error" if e.status_code >= 500 else "invalid_request_error"
        return JSONResponse(P.error_body(message, type_, None, code), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        return JSONResponse(P.error_body(f"invalid request: {where}: {err.get('msg')}", param=where), status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        # The traceback still reaches the log (uvicorn prints it once): this is a bug to fix.
        return JSONResponse(P.error_body("internal server error; the server log has the details",
                                         "server_error"), status_code=500)


def _add_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = parse_request(await read_body(request, service.limits.max_body_bytes), P.ChatCompletionRequest)
        return await service.chat(req, request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req = parse_request(await read_body(request, service.limits.max_body_bytes), P.CompletionRequest)
        return await service.complete(req, request)

    @app.get("/v1/models")
    async def models() -> dict:
        return P.models_list(list(service.names))

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict:
        service.check_model(name)
        return P.models_list([name])["data"][0]

    @app.get("/health")
    async def health() -> dict:
        workers = [{"name": b.name, "load": b.load, "rows": b.max_rows} for b in service.router.batchers]
        return {"status": "ok", "model": service.names[0], "in_flight": service.in_flight, "workers": workers}

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def create_app(router: Router | Batcher, tokenizer: Any, model_name: str, limits: ServeLimits | None = None,
               policy: Policy | None = None, aliases: tuple[str, ...] = ()) -> FastAPI:
    """The app: routes behind the guard (serve/guard.py), inside the access log. The router's
    batcher threads start with the app and stop with it."""
    router = router if isinstance(router, Router) else Router([router])
    service = Service(router, tokenizer, (model_name, *aliases), limits or ServeLimits())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        router.start()
        yield
        router.close()

    app = FastAPI(title="picochat", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    _install_error_handlers(app)
    _add_routes(app, service)
    app.add_middleware(Guard, policy=policy or Policy())
    app.add_middleware(AccessLog)  # added last = outermost: guard refusals are logged too
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


def _policy(s: Any) -> Policy:
    """The guard's settings from the flags; warns when the API is open beyond this machine."""
    origins = tuple(o.strip().rstrip("/") for o in s.cors_origin.split(",") if o.strip())
    local = is_loopback(s.host)
    api_key = s.api_key or os.environ.get("PICOCHAT_API_KEY", "")
    if not local and not api_key:
        print(f"picochat: WARNING: listening on {s.host} without --api-key: anyone who can reach this "
              "machine can use the model", file=sys.stderr, flush=True)
    return Policy(api_key=api_key, cors_origins=origins, loopback_only=local)


def main(cfg: Any) -> None:
    """`picochat serve`: load the run's model on every worker device and serve until Ctrl-C."""
    import torch
    import uvicorn

    from picochat.engine.engine import Engine
    from picochat.run_layout import load_model_and_tokenizer

    s = cfg.serve
    policy = _policy(s)
    batchers = []
    for dev in _worker_devices(cfg.run.device, s.gpus):
        model, tokenizer, stage = load_model_and_tokenizer(cfg.run.run, cfg.run.home, s.stage, dev)
        if dev.type == "cuda":
            model = model.to(torch.bfloat16)  # halves weight and KV-cache memory; logits stay fp32
        batchers.append(Batcher(Engine(model, tokenizer), s.max_batch, s.max_queue, name=str(dev),
                                prefill_chunk=s.prefill_chunk))
    name = f"picochat-{cfg.run.run}-{stage}"
    aliases = tuple(a for a in [s.model_alias] if a and a != name)
    limits = ServeLimits(s.max_prompt_tokens, s.max_concurrent, s.max_body_bytes, s.default_max_tokens)
    app = create_app(Router(batchers), tokenizer, name, limits, policy, aliases)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO if not s.quiet else logging.WARNING)
    print(f"picochat: serving {name}{''.join(' (alias ' + a + ')' for a in aliases)} on {len(batchers)} "
          f"worker(s) at http://{s.host}:{s.port}/ (API: /v1/chat/completions, /v1/completions)", flush=True)
    uvicorn.run(app, host=s.host, port=s.port, log_level="warning")
