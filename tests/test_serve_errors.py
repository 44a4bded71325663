"""The server's error contract: every 4xx/5xx is OpenAI's error object with the right status, for
bad bodies (size, encoding, nesting, JSON that is not an object), strict types (no coercion),
ranges, unknown models and fields, and the framework's own 404/405."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from helpers.tiny import random_gpt

from picochat.engine.batcher import Batcher
from picochat.engine.engine import Engine
from picochat.serve.app import ServeLimits, create_app
from picochat.serve.jsonbody import BodyError, nesting_depth, parse_object

MSGS = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(tok):
    batcher = Batcher(Engine(random_gpt(tok.vocab_size), tok, tool=None), max_rows=4, max_queue=8, max_len=96)
    app = create_app(batcher, tok, "picochat-test", ServeLimits(max_body_bytes=20_000), aliases=("gpt-test",))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def is_error(r, status: int, words: str = "", type_: str = "invalid_request_error", code: str | None = None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    err = body["error"]
    assert err["type"] == type_ and words.lower() in err["message"].lower(), err
    if code is not None:
        assert err["code"] == code
    return err


def post(client, body, path="/v1/chat/completions"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=data, headers={"content-type": "application/json"})


@pytest.mark.parametrize("body, words", [
    (b"", "empty"),
    (b"   ", "empty"),
    (b"{not json", "not valid JSON"),
    (b'{"messages": [1, 2,]}', "not valid JSON"),
    (b"[]", "array, not a JSON object"),
    (b'"hello"', "string, not a JSON object"),
    (b"42", "number, not a JSON object"),
    (b"null", "null, not a JSON object"),
    (b"true", "boolean, not a JSON object"),
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "not valid UTF-8"),
    (b'\xef\xbb\xbf{"messages": []}', "not valid JSON"),                 # a UTF-8 BOM
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
    (b'{"temperature": NaN, "messages": []}', "NaN is not a JSON value"),
    (b'{"temperature": Infinity, "messages": []}', "Infinity is not a JSON value"),
    (b'{"temperature": 1e999, "messages": []}', "out of range"),
    (b'{"seed": ' + b"9" * 5000 + b', "messages": []}', "not valid JSON"),  # int() digit limit
    (b"[" * 5000 + b"]" * 5000, "nests 5000 levels"),
    (b'{"a":' * 100_0 + b"1" + b"}" * 100_0, "nests 1000 levels"),
])
def test_bad_bodies_are_400_error_objects(client, body, words):
    is_error(post(client, body), 400, words)


def test_deep_nesting_is_found_before_parsing_and_strings_do_not_count():
    assert nesting_depth(b'{"a": [[1], {"b": 2}]}') == 3
    assert nesting_depth(b'{"a": "[[[[[[\\"]]]]"}') == 1          # brackets inside a string (and \")
    assert nesting_depth(b"[" * 200_000) == 200_000                 # counted, never recursed into
    with pytest.raises(BodyError, match="nests"):
        parse_object(b'{"x": ' + b"[" * 33 + b"]" * 33 + b"}")
    assert parse_object(b'{"x": ' + b"[" * 31 + b"]" * 31 + b"}")["x"]


def test_oversized_body_is_413_declared_or_not(client):
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 30_000}]}).encode()
    is_error(post(client, big), 413, "limit", code="request_too_large")

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield big[:10_000]
        yield big[10_000:]
    r = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    is_error(r, 413, "limit")


@pytest.mark.parametrize("field, value, words", [
    # no lax coercion: strings, bools and floats are not numbers or flags
    ("stream", "yes", "stream"), ("stream", 1, "stream"), ("stream", "true", "stream"),
    ("max_tokens", "5", "max_tokens"), ("max_tokens", 5.0, "max_tokens"), ("max_tokens", True, "max_tokens"),
    ("n", 2.5, "n"), ("n", "2", "n"), ("n", False, "n"),
    ("temperature", "0.5", "temperature"), ("temperature", True, "temperature"), ("temperature", [1], "temperature"),
    ("top_k", 3.0, "top_k"), ("seed", "7", "seed"), ("seed", 1.5, "seed"), ("logprobs", "yes", "logprobs"),
    ("model", 7, "model"), ("stop", 5, "stop"), ("stop", ["ok", 3], "stop"),
    # ranges
    ("temperature", -0.1, "temperature"), ("temperature", 2.01, "temperature"), ("top_p", 0, "top_p"),
    ("top_p", 1.5, "top_p"), ("top_k", -1, "top_k"), ("top_k", 10**30, "top_k"), ("n", 0, "n"), ("n", 17, "n"),
    ("max_tokens", 0, "max_tokens"), ("max_tokens", -5, "max_tokens"), ("max_tokens", 10**30, "max_tokens"),
    ("max_completion_tokens", 0, "max_completion_tokens"), ("seed", 2**64, "seed"),
    ("stop", ["a", "b", "c", "d", "e"], "at most 4"), ("stop", [""], "1 to 256"), ("stop", "x" * 300, "1 to 256"),
    # what the engine cannot do is said, not ignored
    ("top_logprobs", 3, "top_logprobs"), ("frequency_penalty", 0.5, "frequency_penalty"),
    ("presence_penalty", -1.0, "presence_penalty"), ("logit_bias", {"5": 10}, "logit_bias"),
    ("tools", [{"type": "function"}], "tools"), ("response_format", {"type": "json_object"}, "response_format"),
    ("stream_options", {"include_usage": True}, "only allowed when stream"),
    ("temprature", 0.5, "unrecognized request argument: temprature"),
])
def test_strict_types_and_ranges(client, field, value, words):
    err = is_error(post(client, {"messages": MSGS, field: value}), 400, words)
    if field == "stream_options":  # a whole-request check names no one field
        assert err["param"] is None
    else:
        assert err["param"] == field or err["param"].startswith(field + ".")


@pytest.mark.parametrize("messages, words", [
    ([], "messages"),
    ("hi", "messages"),
    ([{"role": "wizard", "content": "hi"}], "role"),
    ([{"role": "tool", "content": "42"}], "role"),
    ([{"role": "user"}], "content"),
    ([{"role": "user", "content": None}], "content"),
    ([{"role": "user", "content": 5}], "content"),
    ([{"content": "hi"}], "role"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "'image_url' are not supp"),
    ([{"role": "assistant", "content": "hi", "tool_calls": [{"id": "1"}]}], "tool_calls"),
    ([{"role": "assistant", "content": "hi"}], ""),          # the conversation must end with a user turn
    ([["user", "hi"]], "messages.0"),
])
def test_messages_shape_and_roles(client, messages, words):
    is_error(post(client, {"messages": messages}), 400, words)


def test_sloppy_but_valid_clients_are_served(client):
    """null means "the default" (as OpenAI takes it), `developer` is the newer name for system,
    a reply sent back with the official client's extra null fields is fine."""
    body = {"model": None, "messages": [{"role": "developer", "content": "Be brief."},
                                        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                        {"role": "assistant", "content": "hello", "refusal": None,
                                         "tool_calls": None, "parts": [{"type": "text", "text": "hello"}]},
                                        {"role": "user", "content": "again"}],
            "temperature": None, "top_p": None, "n": None, "stop": None, "max_tokens": 3, "seed": None,
            "stream": False, "logprobs": None, "top_logprobs": 0, "frequency_penalty": 0, "presence_penalty": 0.0,
            "logit_bias": {}, "user": "u1", "tools": [], "response_format": {"type": "text"}}
    r = post(client, body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "picochat-test"


def test_model_names(client):
    err = is_error(post(client, {"model": "gpt-4o", "messages": MSGS}), 404, "gpt-4o", code="model_not_found")
    assert err["param"] == "model" and "picochat-test" in err["message"]
    for name in ("picochat-test", "gpt-test"):  # the served name and the alias
        assert post(client, {"model": name, "messages": MSGS, "max_tokens": 2}).status_code == 200
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["picochat-test", "gpt-test"]
    assert client.get("/v1/models/gpt-test").json()["id"] == "gpt-test"
    is_error(client.get("/v1/models/nope"), 404, "nope", code="model_not_found")
    is_error(post(client, {"model": "nope", "prompt": "hi"}, "/v1/completions"), 404, "nope", code="model_not_found")


def test_max_tokens_beyond_the_context_is_400_not_a_silent_cut(client):
    err = is_error(post(client, {"messages": MSGS, "max_tokens": 1000}), 400, "does not fit",
                   code="context_length_exceeded")
    assert err["param"] == "max_tokens" and "96" in err["message"]
    err = is_error(post(client, {"messages": MSGS, "max_completion_tokens": 95}), 400, "does not fit")
    is_error(post(client, {"prompt": "hi", "max_tokens": 96}, "/v1/completions"), 400, "does not fit")
    long = {"messages": [{"role": "user", "content": "word " * 200}]}
    is_error(post(client, long), 400, "limit", code="context_length_exceeded")
    r = post(client, {"messages": MSGS})  # no max_tokens: the default, cut to what fits
    assert r.status_code == 200 and r.json()["usage"]["total_tokens"] <= 96


@pytest.mark.parametrize("method, path, status, words", [
    ("GET", "/v1/nope", 404, "no such route"),
    ("POST", "/v1/engines/x/completions", 404, "no such route"),
    ("GET", "/static/missing.css", 404, ""),
    ("GET", "/v1/chat/completions", 405, "not allowed"),
    ("DELETE", "/v1/models", 405, "not allowed"),
    ("PUT", "/v1/completions", 405, "not allowed"),
])
def test_framework_errors_are_error_objects(client, method, path, status, words):
    r = client.request(method, path, content=b"{}", headers={"content-type": "application/json"})
    is_error(r, status, words)


def test_internal_errors_are_error_objects(tok):
    app = create_app(Batcher(Engine(random_gpt(tok.vocab_size), tok), 2, 2), tok, "m")

    @app.get("/v1/boom")
    async def boom() -> None:
        raise KeyError("a bug")

    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        is_error(c.get("/v1/boom"), 500, "internal server error", type_="server_error")
