"""Who may talk to the server: an ASGI middleware in front of every route.

A model on localhost is reachable by every web page the user visits, so the checks are about
browsers as much as about remote clients:

- Content-Type. A page may POST to any URL without asking first if the body is `text/plain`,
  form-encoded or multipart (a CORS "simple request", Fetch standard section 3.2.3); only other
  types need a preflight. So API POSTs must say `application/json` (else 415): a cross-site page
  cannot send that without the preflight below, which it fails.
- Origin. Browsers send `Origin` on cross-origin requests and on every POST. A request from
  another origin is refused (403) unless `--cors-origin` lists it (or `*`); preflights
  (OPTIONS with Access-Control-Request-Method) are answered for listed origins only. The chat
  page is same-origin and passes.
- Host. When the server listens on loopback only, the Host header must name loopback too:
  otherwise a page on evil.example whose DNS name is re-pointed to 127.0.0.1 (DNS rebinding)
  would be "same-origin" with the server.
- API key. With `--api-key`, every /v1/ route needs `Authorization: Bearer <key>` (401 otherwise),
  compared in constant time (hmac.compare_digest) so the answer time does not leak the key.
  The chat page and /health stay open: the page holds no data and asks for the key itself.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from picochat.serve.protocol import error_body

API_PREFIX = "/v1/"
JSON_TYPES = ("application/json",)
ALLOW_HEADERS = "Authorization, Content-Type"
ALLOW_METHODS = "GET, POST, OPTIONS"


@dataclass(frozen=True)
class Policy:
    api_key: str = ""
    cors_origins: tuple[str, ...] = ()  # exact origins ("https://app.example:8443") or "*"
    loopback_only: bool = True          # the Host header must name loopback (see the module doc)

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.cors_origins or origin.rstrip("/") in self.cors_origins


def is_loopback(host: str) -> bool:
    """True for localhost and the loopback addresses (127.0.0.0/8, ::1), with or without a port."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761 section 6.3
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _charset_ok(value: str) -> bool:
    for param in value.split(";")[1:]:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


class Guard:
    """The checks above, in order: preflight, Host, Origin, API key, Content-Type."""

    def __init__(self, app: ASGIApp, policy: Policy):
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        cross = origin is not None and not self._same_origin(scope, headers, origin)
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            asked = headers.get("access-control-request-headers", "")
            await self._preflight(origin, cross, asked)(scope, receive, send)
            return
        refusal = self._refusal(scope, headers, origin, cross)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if not cross:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"access-control-allow-origin", origin.encode("latin-1")),
                                      (b"vary", b"Origin")]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    def _same_origin(scope: Scope, headers: Headers, origin: str) -> bool:
        return origin == f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"

    def _preflight(self, origin: str, cross: bool, asked: str) -> Response:
        if cross and not self.policy.origin_allowed(origin):
            return _error(403, f"cross-origin requests from {origin} are not allowed; start the server "
                               f"with --cors-origin {origin} to allow them", "origin_not_allowed")
        return Response(status_code=204, headers={
            "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": ALLOW_METHODS,
            # An allowed origin may send what its client needs (the official JS client adds
            # x-stainless-* headers); the origin check, not a header list, is the protection.
            "Access-Control-Allow-Headers": asked or ALLOW_HEADERS, "Access-Control-Max-Age": "600",
            "Vary": "Origin"})

    def _refusal(self, scope: Scope, headers: Headers, origin: str | None, cross: bool) -> Response | None:
        host = headers.get("host", "")
        if self.policy.loopback_only and not is_loopback(host):
            return _error(403, f"the Host header {host!r} does not name this server (it listens on loopback "
                               "only; a page on another name resolving to it is refused)", "host_not_allowed")
        if cross and not self.policy.origin_allowed(origin or ""):
            return _error(403, f"cross-origin requests from {origin} are not allowed; start the server "
                               f"with --cors-origin {origin} to allow them", "origin_not_allowed")
        if not scope["path"].startswith(API_PREFIX):
            return None
        if self.policy.api_key and not self._key_ok(headers.get("authorization", "")):
            given = "authorization" in headers
            return _error(401, "invalid API key" if given else
                          "this server needs an API key: send the header 'Authorization: Bearer <key>'",
                          "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if scope["method"] in ("POST", "PUT", "PATCH"):
            ctype = headers.get("content-type", "")
            if _media_type(ctype) not in JSON_TYPES or not _charset_ok(ctype):
                return _error(415, f"Content-Type must be application/json (UTF-8); got {ctype or 'none'!r}",
                              "unsupported_media_type")
        return None

    def _key_ok(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        ok = hmac.compare_digest(token.strip().encode(), self.policy.api_key.encode())
        return ok and scheme.lower() == "bearer"


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    type_ = "authentication_error" if status == 401 else "invalid_request_error"
    return JSONResponse(error_body(message, type_, None, code), status_code=status, headers=headers)
