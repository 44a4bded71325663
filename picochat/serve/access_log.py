"""One log line per request, written when the response ends (or the client hangs up):

    POST /v1/chat/completions 200 127.0.0.1 prompt=23 completion=32 ttft=14ms total=0.41s

Routes that generate put their numbers in `scope["picochat.stats"]` (a `RequestStats`); TTFT is
from the request's arrival to the first generated token reaching the event loop. A client that
goes away before the end is logged with status 499 (nginx's "client closed request").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("picochat.serve")
STATS_KEY = "picochat.stats"
CLIENT_CLOSED = 499


@dataclass
class RequestStats:
    start: float = field(default_factory=time.perf_counter)
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    first_token: float | None = None
    status: int | None = None       # set by a route to override what was sent (499 on hang-up)

    def token(self, count: int = 1) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()
        self.completion_tokens += count

    def line(self, method: str, path: str, status: int, client: str) -> str:
        parts = [method, path, str(status), client]
        if self.prompt_tokens is not None:
            parts += [f"prompt={self.prompt_tokens}", f"completion={self.completion_tokens}"]
        if self.first_token is not None:
            parts.append(f"ttft={(self.first_token - self.start) * 1e3:.0f}ms")
        parts.append(f"total={time.perf_counter() - self.start:.2f}s")
        return " ".join(parts)


def stats_of(scope: Scope) -> RequestStats:
    """The request's stats (a fresh one when the middleware is not installed, e.g. in unit tests)."""
    return scope.setdefault(STATS_KEY, RequestStats())


class AccessLog:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stats = scope[STATS_KEY] = RequestStats()
        sent = {"status": CLIENT_CLOSED}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except ClientDisconnect:  # the client left while we were sending: not a server error
            stats.status = CLIENT_CLOSED
        except Exception:
            stats.status = 500
            raise
        finally:
            client = scope.get("client") or ("-", 0)
            log.info(stats.line(scope["method"], scope["path"], stats.status or sent["status"], client[0]))
