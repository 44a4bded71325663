"""POST /v1/completions (plain text completion) through the official `openai` client and raw HTTP,
the per-request log line, and quiet hang-ups (mid-upload and mid-stream)."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest
from helpers.server import ServerThread
from helpers.tiny import random_gpt

from picochat.engine.batcher import Batcher
from picochat.engine.engine import Engine
from picochat.serve.app import ServeLimits, create_app

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def engine(tok) -> Engine:
    return Engine(random_gpt(tok.vocab_size), tok, tool=None)


@pytest.fixture(scope="module")
def server(engine, tok):
    batcher = Batcher(engine, max_rows=8, max_queue=16, max_len=96)
    app = create_app(batcher, tok, "picochat-test", ServeLimits(max_body_bytes=20_000), aliases=("davinci",))
    with ServerThread(app) as url:
        yield url, batcher


def greedy(engine, ids, n_tokens):
    return engine.generate([ids], temperature=0.0, max_tokens=n_tokens)[0][0]


def test_openai_client_completions(server, engine, tok):
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    want = greedy(engine, tok.encode("The quick brown", prepend=tok.bos_id), 10)
    r = client.completions.create(model="davinci", prompt="The quick brown", max_tokens=10, temperature=0)
    assert r.object == "text_completion" and r.model == "picochat-test"
    assert r.choices[0].text == "".join(t for _, t in want.pieces)
    assert r.choices[0].finish_reason == want.finish
    assert r.usage.completion_tokens == len(want.ids)
    assert r.usage.prompt_tokens == len(tok.encode("The quick brown")) + 1  # + <|bos|>
    stream = client.completions.create(model="picochat-test", prompt="The quick brown", max_tokens=10,
                                       temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [want.finish]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_prompt_shapes_n_echo_and_logprobs(server, engine, tok):
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    a, b = tok.encode("Hello", prepend=tok.bos_id), tok.encode("12 + 30", prepend=tok.bos_id)
    wa, wb = greedy(engine, a, 6), greedy(engine, b, 6)
    text = lambda c: "".join(t for _, t in c.pieces)  # noqa: E731
    # token ids, and a list of token-id prompts with n=2: choices are prompt-major
    r = client.completions.create(model="picochat-test", prompt=a, max_tokens=6, temperature=0)
    assert r.choices[0].text == text(wa)
    r = client.completions.create(model="picochat-test", prompt=[a, b], max_tokens=6, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert [c.text for c in r.choices] == [text(wa), text(wa), text(wb), text(wb)]
    # a list of strings, with echo: the prompt text comes first
    r = client.completions.create(model="picochat-test", prompt=["Hello", "12 + 30"], max_tokens=6,
                                  temperature=0, echo=True)
    assert [c.text for c in r.choices] == ["Hello" + text(wa), "12 + 30" + text(wb)]
    # logprobs: 0 gives the chosen tokens' logprobs, at their offsets in the text
    r = client.completions.create(model="picochat-test", prompt="Hello", max_tokens=6, temperature=0, logprobs=0)
    lp = r.choices[0].logprobs
    assert lp.token_logprobs == pytest.approx(wa.logprobs, abs=1e-4)
    assert len(lp.tokens) == len(wa.ids) and lp.text_offset[0] == 0
    streamed = client.completions.create(model="picochat-test", prompt="Hello", max_tokens=6, temperature=0,
                                         logprobs=0, stream=True)
    got = [x for c in streamed if c.choices and c.choices[0].logprobs for x in c.choices[0].logprobs.token_logprobs]
    assert got == pytest.approx(wa.logprobs, abs=1e-4)


def test_seeded_samples_repeat(server):
    url, _ = server
    body = {"prompt": "Numbers:", "max_tokens": 8, "n": 3, "seed": 11, "temperature": 1.0}
    a = httpx.post(url + "/v1/completions", json=body).json()
    b = httpx.post(url + "/v1/completions", json=body).json()
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]


def test_raw_http_stream_format(server):
    url, _ = server
    body = {"prompt": "Hello", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("body, words", [
    ({}, "prompt"),
    ({"prompt": []}, "prompt must be"),
    ({"prompt": [[]]}, "prompt must be"),
    ({"prompt": [1, "a"]}, "prompt must be"),
    ({"prompt": [1, 2.0]}, "prompt must be"),
    ({"prompt": [True, 2]}, "prompt must be"),
    ({"prompt": [-1]}, "prompt must be"),
    ({"prompt": 5}, "prompt must be"),
    ({"prompt": None}, "prompt must be"),
    ({"prompt": ["a"] * 33}, "at most 32 prompts"),
    ({"prompt": [5, 99999]}, "outside the vocabulary"),
    ({"prompt": [[5], [6, 10**6]]}, "outside the vocabulary"),
    ({"prompt": [7] * 200}, "limit"),
    ({"prompt": "hi", "logprobs": 2}, "logprobs > 0 is not supported"),
    ({"prompt": "hi", "logprobs": 6}, "logprobs"),
    ({"prompt": "hi", "echo": True, "logprobs": 0}, "echo with logprobs"),
    ({"prompt": "hi", "suffix": "end"}, "suffix"),
    ({"prompt": "hi", "best_of": 3}, "best_of"),
    ({"prompt": "hi", "echo": "yes"}, "echo"),
    ({"prompt": "hi", "max_tokens": "4"}, "max_tokens"),
    ({"prompt": "hi", "messages": []}, "unrecognized request argument: messages"),
])
def test_completions_bad_requests(server, body, words):
    url, _ = server
    r = httpx.post(url + "/v1/completions", json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]


def test_one_log_line_per_request(server, caplog):
    url, _ = server
    with caplog.at_level(logging.INFO, logger="picochat.serve"):
        httpx.post(url + "/v1/completions", json={"prompt": "Hello", "max_tokens": 3})
        httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                       "max_tokens": 2, "stream": True})
        httpx.get(url + "/nope-log-line")
        deadline = time.monotonic() + 10
        while not any("/nope-log-line" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # a stray second line for one of these requests would arrive by now
    # an earlier test's stream may log its line late (the server is shared), so read from ours on
    lines = [r.getMessage() for r in caplog.records]
    first = next((i for i, line in enumerate(lines) if line.startswith("POST /v1/completions 200")), len(lines))
    lines = lines[first:]
    assert len(lines) == 3, lines
    assert lines[0].startswith("POST /v1/completions 200 127.0.0.1 prompt=") and "completion=3" in lines[0]
    assert "ttft=" in lines[0] and "total=" in lines[0]
    assert lines[1].startswith("POST /v1/chat/completions 200") and "completion=2" in lines[1]
    assert lines[2].startswith("GET /nope-log-line 404") and "prompt=" not in lines[2]


def _raw(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        time.sleep(0.2)


def test_hang_ups_are_quiet_and_free_rows(server, caplog, capfd):
    """A client that goes away mid-upload or mid-stream costs one log line (status 499), no
    traceback, and frees its rows."""
    url, batcher = server
    port = int(url.rsplit(":", 1)[1])
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n")
    with caplog.at_level(logging.INFO, logger="picochat.serve"):
        _raw(port, head + b'{"messages": [')                      # mid-upload
        body = {"messages": [{"role": "user", "content": "Tell me"}], "max_tokens": 60, "stream": True, "n": 2}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if '"segment"' in line:
                    break                                          # mid-stream
        deadline = time.monotonic() + 20
        while (batcher.load or len(caplog.records) < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(" 499 " in line for line in lines), lines
    assert batcher.load == 0 and batcher.decoder.free_rows == 8
    assert not [r for r in caplog.records if r.exc_info]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in ASGI" not in err, err
