"""Who may call the server: JSON-only API bodies (no CORS "simple request" can drive the model),
Origin checks and preflights (--cors-origin), the loopback Host check (DNS rebinding), the
optional API key, and the warning for an open server beyond localhost."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from helpers.tiny import random_gpt, save_run

from picochat.engine.batcher import Batcher
from picochat.engine.engine import Engine
from picochat.serve.app import _policy, create_app
from picochat.serve.guard import Policy, is_loopback

BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def make_client(tok):
    engine = Engine(random_gpt(tok.vocab_size), tok, tool=None)
    clients = []

    def make(policy: Policy = Policy(), base_url: str = "http://localhost:8000") -> TestClient:
        app = create_app(Batcher(engine, max_rows=2, max_queue=4), tok, "picochat-test", policy=policy)
        c = TestClient(app, base_url=base_url)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def error_code(r) -> str:
    return r.json()["error"]["code"]


@pytest.mark.parametrize("ctype", [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx", "text/json",
                                   "application/json; charset=latin-1"])
def test_api_bodies_must_be_json(make_client, ctype):
    """The content types a page may send cross-site without a preflight (and other non-JSON) get 415."""
    c = make_client()
    headers = {} if ctype is None else {"content-type": ctype}
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = c.post(path, content=BODY, headers=headers)
        assert r.status_code == 415 and error_code(r) == "unsupported_media_type"


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "Application/JSON",
                                   'application/json;charset="UTF-8"'])
def test_json_content_types_pass(make_client, ctype):
    assert make_client().post("/v1/chat/completions", content=BODY, headers={"content-type": ctype}).status_code == 200


def test_cross_origin_requests_are_refused_unless_allowed(make_client):
    c = make_client()
    evil = {**JSON, "origin": "https://evil.example"}
    r = c.post("/v1/chat/completions", content=BODY, headers=evil)
    assert r.status_code == 403 and error_code(r) == "origin_not_allowed"
    assert "--cors-origin" in r.json()["error"]["message"]
    assert c.get("/v1/models", headers={"origin": "https://evil.example"}).status_code == 403
    assert c.post("/v1/chat/completions", content=BODY, headers={**JSON, "origin": "null"}).status_code == 403
    # the chat page: same origin (scheme, host and port all match)
    same = {**JSON, "origin": "http://localhost:8000"}
    r = c.post("/v1/chat/completions", content=BODY, headers=same)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    other_port = {**JSON, "origin": "http://localhost:9999"}
    assert c.post("/v1/chat/completions", content=BODY, headers=other_port).status_code == 403
    # a preflight from elsewhere is refused, so the browser never sends the JSON POST
    pre = {"origin": "https://evil.example", "access-control-request-method": "POST",
           "access-control-request-headers": "content-type"}
    r = c.options("/v1/chat/completions", headers=pre)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_cors_origin_flag_allows_listed_origins(make_client):
    c = make_client(Policy(cors_origins=("https://app.example",)))
    pre = {"origin": "https://app.example", "access-control-request-method": "POST",
           "access-control-request-headers": "authorization, content-type"}
    r = c.options("/v1/chat/completions", headers=pre)
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-allow-headers"] == "authorization, content-type"
    r = c.post("/v1/chat/completions", content=BODY, headers={**JSON, "origin": "https://app.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["vary"] == "Origin"
    r = c.post("/v1/chat/completions", content=BODY, headers={**JSON, "origin": "https://other.example"})
    assert r.status_code == 403
    star = make_client(Policy(cors_origins=("*",)))
    r = star.post("/v1/chat/completions", content=BODY, headers={**JSON, "origin": "https://any.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://any.example"


def test_host_must_be_loopback_when_listening_on_loopback(make_client):
    """DNS rebinding: a page on rebind.example resolved to 127.0.0.1 is 'same-origin' with itself."""
    c = make_client(base_url="http://rebind.example:8000")
    r = c.post("/v1/chat/completions", content=BODY, headers={**JSON, "origin": "http://rebind.example:8000"})
    assert r.status_code == 403 and error_code(r) == "host_not_allowed"
    assert c.get("/").status_code == 403
    open_ = make_client(Policy(loopback_only=False), base_url="http://rebind.example:8000")
    assert open_.post("/v1/chat/completions", content=BODY, headers=JSON).status_code == 200
    for host in ("localhost", "localhost:8000", "127.0.0.1:80", "127.9.9.9", "[::1]:8000", "app.localhost"):
        assert is_loopback(host), host
    for host in ("", "evil.example", "127.0.0.1.evil.example", "0.0.0.0", "10.0.0.1:8000", "localhost.evil.example"):
        assert not is_loopback(host), host


def test_api_key(make_client):
    c = make_client(Policy(api_key="s3cret-key"))
    r = c.post("/v1/chat/completions", content=BODY, headers=JSON)
    assert r.status_code == 401 and error_code(r) == "invalid_api_key"
    assert r.json()["error"]["type"] == "authentication_error" and r.headers["www-authenticate"] == "Bearer"
    for auth in ("Bearer wrong", "Bearer s3cret-ke", "Bearer s3cret-key2", "Basic s3cret-key", "s3cret-key", "Bearer"):
        assert c.post("/v1/chat/completions", content=BODY, headers={**JSON, "authorization": auth}).status_code == 401
    assert c.get("/v1/models").status_code == 401
    ok = {**JSON, "authorization": "Bearer s3cret-key"}
    assert c.post("/v1/chat/completions", content=BODY, headers=ok).status_code == 200
    assert c.get("/v1/models", headers={"authorization": "bearer s3cret-key"}).status_code == 200
    # the page and liveness stay open: the page has no data and asks for the key itself
    assert c.get("/").status_code == 200 and c.get("/health").status_code == 200
    # the key is checked before the body is even read: no 415/400 hints for strangers
    assert c.post("/v1/chat/completions", content=b"x", headers={"content-type": "text/plain"}).status_code == 401


def test_policy_from_flags_warns_when_open_beyond_localhost(capsys, monkeypatch):
    monkeypatch.delenv("PICOCHAT_API_KEY", raising=False)
    flags = dict(api_key="", cors_origin="https://a.example/, https://b.example", host="0.0.0.0")
    p = _policy(SimpleNamespace(**flags))
    assert "WARNING" in capsys.readouterr().err and not p.loopback_only
    assert p.cors_origins == ("https://a.example", "https://b.example")
    _policy(SimpleNamespace(**{**flags, "api_key": "k"}))
    _policy(SimpleNamespace(**{**flags, "host": "127.0.0.1"}))
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("PICOCHAT_API_KEY", "from-env")
    assert _policy(SimpleNamespace(**flags)).api_key == "from-env"
    assert capsys.readouterr().err == ""


def test_serve_command_wires_the_flags(tmp_path, tok, monkeypatch, capsys):
    """`picochat serve` with --api-key, --model-alias, --cors-origin and --host: the app it hands
    to uvicorn lists both names, wants the key, allows the origin, and the warning is printed."""
    import uvicorn

    from picochat.cli import main

    save_run(tmp_path, tok, random_gpt(tok.vocab_size))
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    with pytest.raises(SystemExit) as e:
        main(["serve", "--home", str(tmp_path), "--run", "t", "--device", "cpu", "--model-alias", "gpt-x",
              "--api-key", "k", "--cors-origin", "https://app.example", "--prefill-chunk", "32", "--port", "8123"])
    assert e.value.code == 0 and served["port"] == 8123 and "gpt-x" in capsys.readouterr().out
    _policy(SimpleNamespace(api_key="", cors_origin="", host="0.0.0.0"))
    assert "WARNING" in capsys.readouterr().err
    with TestClient(served["app"], base_url="http://localhost") as c:
        assert c.get("/v1/models").status_code == 401
        key = {"authorization": "Bearer k", "origin": "https://app.example"}
        r = c.get("/v1/models", headers=key)
        assert [m["id"] for m in r.json()["data"]] == ["picochat-t-sft", "gpt-x"]
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert c.app.state.service.router.batchers[0].prefill_chunk == 32
