"""The batcher, the router, the OpenAI-compatible server (driven by the official `openai` client),
its 4xx answers, and the terminal chat's one-shot mode."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import torch
from helpers.server import ServerThread
from helpers.tiny import random_gpt, save_run

from picochat.engine.batcher import Batcher, Overloaded, Router
from picochat.engine.engine import Engine, SamplingParams
from picochat.sandbox import calculator
from picochat.serve.app import ServeLimits, create_app
from picochat.tokenizer.chat import render_for_completion

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def engine(tok) -> Engine:
    return Engine(random_gpt(tok.vocab_size), tok, tool=calculator)


@pytest.fixture(scope="module")
def server(engine, tok):
    batcher = Batcher(engine, max_rows=8, max_queue=16, max_len=96)
    app = create_app(batcher, tok, "picochat-test", ServeLimits(max_prompt_tokens=60, max_body_bytes=20_000))
    with ServerThread(app) as url:
        yield url, batcher


def test_openai_client_non_streaming_and_streaming(server):
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6 times 7?"}]
    r = client.chat.completions.create(model="picochat-test", messages=msgs, max_tokens=12, temperature=0)
    text = r.choices[0].message.content
    assert isinstance(text, str) and r.choices[0].finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    stream = client.chat.completions.create(model="picochat-test", messages=msgs, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text                           # same greedy reply, token by token
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [r.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    assert [m.id for m in client.models.list().data] == ["picochat-test"]


def test_n_samples_and_seed(server):
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    kw = dict(model="picochat-test", messages=[{"role": "user", "content": "Hello"}], max_tokens=10, n=3, seed=5,
              temperature=1.0)
    a, b = client.chat.completions.create(**kw), client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_server_matches_engine(server, engine, tok):
    """What the API returns is what the engine generates for the rendered conversation."""
    url, _ = server
    conv = [{"role": "user", "content": "The quick brown fox"}]
    r = httpx.post(url + "/v1/chat/completions", json={"messages": conv, "max_tokens": 15, "temperature": 0})
    want = engine.generate([render_for_completion(tok, conv)], temperature=0.0, max_tokens=15)[0][0]
    body = r.json()
    assert body["choices"][0]["message"]["parts"] == want.parts
    assert body["usage"]["completion_tokens"] == len(want.ids)


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (json.dumps({"messages": []}).encode(), 400, "messages"),
    (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400, "role"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}).encode(), 400, "temperature"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "n": 99}).encode(), 400, "n"),
    (json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}).encode(), 400, ""),
    (json.dumps({"messages": [{"role": "user", "content": "word " * 200}]}).encode(), 400, "limit"),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 50_000}]}).encode(), 413, "limit"),
])
def test_bad_requests_get_clear_4xx(server, body, status, words):
    url, _ = server
    r = httpx.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert words in err["message"] and err["type"]


def test_health_and_page(server):
    url, _ = server
    h = httpx.get(url + "/health").json()
    assert h["status"] == "ok" and h["workers"][0]["rows"] == 8
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_client_disconnect_frees_its_rows(server):
    url, batcher = server
    body = {"messages": [{"role": "user", "content": "Tell me"}], "max_tokens": 80, "stream": True, "n": 4}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if '"content": "' in line and '"segment"' in line:
                break  # a generated token arrived: now hang up
        assert batcher.load == 4
    deadline = time.monotonic() + 20
    while batcher.load and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batcher.load == 0 and batcher.decoder.free_rows == 8


def test_queue_is_bounded(engine):
    async def go():
        b = Batcher(engine, max_rows=2, max_queue=2)  # not started: nothing leaves the queue
        b.submit([1, 2, 3], SamplingParams())
        b.submit([1, 2, 3], SamplingParams())
        with pytest.raises(Overloaded):
            b.submit([1, 2, 3], SamplingParams())
    asyncio.run(go())


def test_router_picks_least_loaded(engine):
    async def go():
        a, b = Batcher(engine, 8, 8, name="a"), Batcher(engine, 8, 8, name="b")
        router = Router([a, b])
        picks = [router.submit([1, 2], SamplingParams(n=n)).batcher.name for n in (3, 1, 1, 2, 1)]
        assert picks == ["a", "b", "b", "b", "a"]  # loads: a3 b0 -> a3 b1 -> a3 b2 -> a3 b4 -> a4 b4
        assert (a.load, b.load) == (4, 4)
    asyncio.run(go())


@pytest.mark.parametrize("prefill_chunk", [0, 1, 16])
def test_two_workers_continuous_batching_equals_engine(engine, tok, prefill_chunk):
    """Eight concurrent requests of different lengths over two started workers (each with fewer
    rows than requests, so requests wait and join running batches) give the engine's replies,
    however the prefill is sliced (0: all waiting prompts at once; 1: one prompt per pass)."""
    texts = ["Hi", "The quick brown fox jumps", "12 + 30", "What is 6", "Numbers: 0 1", "Hello, world!",
             "It is", "lazy dog"]
    prompts = [tok.encode(t, prepend=tok.bos_id) for t in texts]
    params = SamplingParams(temperature=0.0, max_tokens=12)
    router = Router([Batcher(engine, 3, 16, name=x, prefill_chunk=prefill_chunk) for x in "ab"]).start()

    async def one(p):
        ids = []
        async for events in router.submit(p, params):
            ids += [ev.id for ev in events]
        return ids

    async def go():
        return await asyncio.gather(*(one(p) for p in prompts))
    try:
        got = asyncio.run(go())
    finally:
        router.close()
    want = [c[0].ids for c in engine.generate(prompts, params)]
    assert got == want
    assert all(b.steps > 0 for b in router.batchers)


def test_chat_one_shot_loads_a_run(tmp_path, tok, capsys):
    from picochat.cli import main

    model = random_gpt(tok.vocab_size)
    save_run(tmp_path, tok, model)
    with pytest.raises(SystemExit) as e:
        main(["chat", "--home", str(tmp_path), "--run", "t", "--device", "cpu", "--temperature", "0",
              "--max-tokens", "6", "-p", "Hello"])
    assert e.value.code == 0
    conv = [{"role": "user", "content": "Hello"}]
    want = Engine(model, tok).generate([render_for_completion(tok, conv)], temperature=0.0, max_tokens=6)[0][0]
    assert capsys.readouterr().out.startswith(want.text)
    with pytest.raises(SystemExit) as e:  # a stage that was never trained: one clear sentence, exit 2
        main(["chat", "--home", str(tmp_path), "--run", "t", "--stage", "rl", "-p", "Hello"])
    assert e.value.code == 2 and "no finished 'rl' model" in capsys.readouterr().err


def test_greedy_is_deterministic_across_batch_sizes(engine, tok):
    p = tok.encode("Hello", prepend=tok.bos_id)
    with torch.no_grad():
        a = engine.generate([p], temperature=0.0, max_tokens=10)[0][0].ids
        b = engine.generate([p] * 5, temperature=0.0, max_tokens=10)[4][0].ids
    assert a == b


@pytest.mark.parametrize("limits, queue, status", [
    (ServeLimits(max_concurrent=0), 8, 429),   # too many requests in flight
    (ServeLimits(), 0, 503),                   # the batcher's waiting queue is full
])
def test_limits_answer_429_and_503(engine, tok, limits, queue, status):
    from fastapi.testclient import TestClient

    app = create_app(Batcher(engine, max_rows=2, max_queue=queue), tok, "m", limits)
    with TestClient(app, base_url="http://localhost") as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == status and r.json()["error"]["message"]


def test_a_failing_forward_fails_its_request_not_the_batcher(tok):
    from picochat.model.gpt import GPT

    class Fragile(GPT):
        """Fails on any batch that contains token 7 (in a prompt or a decode step)."""

        def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
            if (idx == 7).any():
                raise RuntimeError("boom")
            return super().forward(idx, kv_cache=kv_cache)

    model = random_gpt(tok.vocab_size, cls=Fragile)
    batcher = Batcher(Engine(model, tok, tool=None), max_rows=4, max_queue=4).start()

    async def run(prompt):
        ids = []
        async for events in batcher.submit(prompt, SamplingParams(temperature=0.0, max_tokens=3)):
            ids += [ev.id for ev in events]
        return ids

    try:
        with pytest.raises(RuntimeError, match="boom"):
            asyncio.run(run([tok.bos_id, 7, 8]))
        assert len(asyncio.run(run([tok.bos_id, 8, 9]))) >= 1  # still serving
        assert batcher.load == 0
    finally:
        batcher.close()


def test_non_streaming_client_that_gives_up_frees_its_rows(tok):
    from picochat.model.gpt import GPT

    class Slow(GPT):
        """0.05 s per step, and never ends its turn: only a cancel can stop it early."""

        def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
            time.sleep(0.05)
            logits = super().forward(idx, kv_cache=kv_cache)
            logits[..., [tok.bos_id, tok.special_id("<|assistant_end|>")]] = float("-inf")
            return logits

    model = random_gpt(tok.vocab_size, cls=Slow)
    model.config.sequence_len = 384  # room for a 300-token reply: 15 s at 0.05 s per step
    batcher = Batcher(Engine(model, tok, tool=None), max_rows=4, max_queue=4)
    with ServerThread(create_app(batcher, tok, "slow")) as url:
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 300, "n": 2}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/chat/completions", json=body, timeout=1.0)
        deadline = time.monotonic() + 20
        while batcher.load and time.monotonic() < deadline:
            time.sleep(0.05)
        assert batcher.load == 0 and batcher.decoder.free_rows == 4
        assert batcher.steps < 250  # cut short, not run to the end


def test_logprobs_streaming_and_not(server, engine, tok):
    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    conv = [{"role": "user", "content": "Numbers: 0 1"}]
    want = engine.generate([render_for_completion(tok, conv)], temperature=0.0, max_tokens=8)[0][0]
    r = client.chat.completions.create(model="picochat-test", messages=conv, max_tokens=8, temperature=0, logprobs=True)
    got = r.choices[0].logprobs.content
    assert [e.logprob for e in got] == pytest.approx(want.logprobs, abs=1e-4)
    assert b"".join(bytes(e.bytes) for e in got).decode(errors="replace").startswith(want.text)
    stream = client.chat.completions.create(model="picochat-test", messages=conv, max_tokens=8, temperature=0,
                                            logprobs=True, stream=True)
    streamed = [e.logprob for c in stream if c.choices and c.choices[0].logprobs
                for e in c.choices[0].logprobs.content]
    assert streamed == pytest.approx(want.logprobs, abs=1e-4)
    bad = httpx.post(url + "/v1/chat/completions", json={"messages": conv, "top_logprobs": 3})
    assert bad.status_code == 400 and "top_logprobs" in bad.json()["error"]["message"]


def test_prefill_passes_are_first_come_first_served_and_bounded(engine, monkeypatch):
    from picochat.engine import batcher as batcher_module

    monkeypatch.setattr(batcher_module, "PASSES_PER_STEP", 4)

    async def go():
        b = Batcher(engine, max_rows=12, max_queue=16, prefill_chunk=64)  # not started: we drive it
        tickets = [b.submit([1] * 30, SamplingParams(max_tokens=4)) for _ in range(10)]
        tickets.append(b.submit([1] * 100, SamplingParams(max_tokens=4)))
        passes = b._passes()
        assert [[t.id for t in p] for p in passes] == [[0, 1], [2, 3], [4, 5], [6, 7]]  # PASSES_PER_STEP
        b._waiting.extendleft(reversed([t for p in passes for t in p]))
        b.cancel(tickets[0])
        assert [[t.id for t in p] for p in b._passes()][0] == [1, 2]
        b._waiting.clear()
        b.submit([1] * 100, SamplingParams(max_tokens=4, n=3))
        assert [len(p) for p in b._passes()] == [1]  # a prompt longer than a pass: a pass of its own
    asyncio.run(go())


def test_first_token_comes_from_the_prefill_before_the_batch_steps(engine, tok):
    """`sample(rows)` gives new rows their first token from the prefill logits without a forward
    pass; the next `step` then feeds them with everyone else. Same tokens as generating alone."""
    a, b = tok.encode("Hello", prepend=tok.bos_id), tok.encode("The quick brown fox", prepend=tok.bos_id)
    params = SamplingParams(temperature=0.0, max_tokens=6)
    want = {k: c[0].ids for k, c in zip("ab", engine.generate([a, b], params))}
    dec = engine.decoder(4, 96)
    dec.add(a, params, "a")
    got = {"a": [ev.id for ev in dec.step()], "b": []}
    dec.add(b, params, "b")
    calls = []
    hook = dec.model.register_forward_pre_hook(lambda m, args: calls.append(1))
    first = dec.sample([i for i, r in enumerate(dec.rows) if r is not None and r.key == "b"])
    hook.remove()
    assert [ev.key for ev in first] == ["b"] and not calls        # no forward pass yet
    got["b"].append(first[0].id)
    while dec.busy:
        for ev in dec.step():
            got[ev.key].append(ev.id)
    assert got == want
