"""The chat page in headless Chromium: type, send, watch the reply stream in (with a tool call and
its output), stop it, regenerate, go on to a second turn, start a new chat; screenshots saved.

Needs Debian's `chromium` (scripts/test.sh installs it) and `playwright` from PyPI, driving that
browser through `executable_path` (never `playwright install`, which downloads).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers.server import ServerThread
from helpers.tiny import random_gpt

from picochat.engine.batcher import Batcher
from picochat.engine.engine import Engine
from picochat.model.gpt import GPT
from picochat.sandbox import calculator
from picochat.serve.app import ServeLimits, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
if not os.path.exists(CHROMIUM):
    pytest.skip("chromium is not installed; scripts/test.sh installs it with apt-get (Debian package 'chromium')",
                allow_module_level=True)


class ChainGPT(GPT):
    """A real GPT with a scripted habit, so the page has something definite to show: after token a
    it strongly prefers chain[a] (here: <|assistant_start|> -> a python call "6*7"), it never
    ends its turn (replies run to max_tokens), and each step takes `delay` seconds so a person,
    or a test, can press Stop mid-reply."""

    chain: dict[int, int] = {}
    banned: list[int] = []
    delay = 0.0

    def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
        time.sleep(self.delay)
        logits = super().forward(idx, kv_cache=kv_cache)
        logits[..., self.banned] = float("-inf")
        for b, last in enumerate(idx[:, -1].tolist()):
            if last in self.chain:
                logits[b, -1, self.chain[last]] += 100.0
        return logits


@pytest.fixture(scope="module")
def site(tmp_path_factory, tok):
    model = random_gpt(tok.vocab_size, cls=ChainGPT)
    model.config.sequence_len = 384  # room for long replies (the rotary table covers 4 x 96)
    sp = tok.special_id
    path = [sp("<|assistant_start|>"), sp("<|python_start|>"), *tok.encode("6*7"), sp("<|python_end|>")]
    model.chain = dict(zip(path[:-1], path[1:]))
    model.banned = [sp("<|assistant_end|>"), tok.bos_id]
    model.delay = 0.03
    batcher = Batcher(Engine(model, tok, tool=calculator), max_rows=4, max_queue=8)
    app = create_app(batcher, tok, "picochat-ui-test", ServeLimits())
    with ServerThread(app) as url:
        yield url, batcher


def test_chat_page_end_to_end(site, tmp_path):
    url, batcher = site
    shots = Path(os.environ.get("PICOCHAT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 390, "height": 760})  # a phone-sized screen
        bodies: list[dict] = []
        page.on("request", lambda r: bodies.append(json.loads(r.post_data)) if r.method == "POST" else None)
        page.set_default_timeout(20_000)
        page.goto(url)
        page.click(".settings summary")  # open the settings panel
        sync_api.expect(page.locator("#model")).to_have_text("picochat-ui-test")

        # 1. type and send; the reply streams in: a tool call, its forced output, then text
        page.fill("#max-tokens", "150")
        page.fill("#input", "What is 6 times 7?")
        page.keyboard.press("Enter")
        reply = page.locator(".msg.assistant").last
        sync_api.expect(reply.locator(".tool.python code")).to_have_text("6*7")
        sync_api.expect(reply.locator(".tool.python_output code")).to_have_text("42")
        text = reply.locator(".text")
        sync_api.expect(text).not_to_be_empty()
        first = len(text.inner_text())
        page.wait_for_function("n => document.querySelector('.msg.assistant .text').textContent.length > n",
                               arg=first)
        assert "streaming" in reply.get_attribute("class")
        page.screenshot(path=str(shots / "chat_streaming_phone.png"))

        # 2. stop mid-reply: the page keeps the partial reply and the server frees the rows
        page.click("#stop")
        sync_api.expect(reply.locator(".note")).to_have_text("stopped")
        sync_api.expect(page.locator("#send")).to_be_visible()
        deadline = time.monotonic() + 20
        while batcher.load and time.monotonic() < deadline:
            time.sleep(0.05)
        assert batcher.load == 0

        # 3. regenerate: the reply is replaced by a fresh one, which runs to max tokens
        page.fill("#max-tokens", "12")
        page.click("#regenerate")
        sync_api.expect(page.locator(".msg.assistant")).to_have_count(1)
        sync_api.expect(page.locator(".msg.assistant .note")).to_have_text("cut off: max tokens reached")
        assert bodies[-1]["messages"] == bodies[0]["messages"]

        # 4. a second turn sends the whole history, the tool call as parts
        page.fill("#input", "And 2 + 2?")
        page.click("#send")
        sync_api.expect(page.locator(".msg.assistant .note")).to_have_count(2)
        history = bodies[-1]["messages"]
        assert [m["role"] for m in history] == ["user", "assistant", "user"]
        assert history[1]["content"][:2] == [{"type": "python", "text": "6*7"},
                                             {"type": "python_output", "text": "42"}]
        page.screenshot(path=str(shots / "chat_two_turns_phone.png"), full_page=True)
        page.set_viewport_size({"width": 1100, "height": 760})
        page.screenshot(path=str(shots / "chat_desktop.png"))

        # 5. new chat clears everything
        page.click("#new-chat")
        sync_api.expect(page.locator(".msg")).to_have_count(0)
        browser.close()
    assert (shots / "chat_streaming_phone.png").stat().st_size > 0


def test_chat_page_asks_for_the_api_key_and_sends_it(tmp_path, tok):
    """With --api-key the page gets 401, asks for the key once (a prompt dialog), keeps it, and
    sends it as a Bearer token from then on; same-origin, so the guard lets it through."""
    from picochat.serve.guard import Policy

    batcher = Batcher(Engine(random_gpt(tok.vocab_size), tok, tool=None), max_rows=2, max_queue=4)
    app = create_app(batcher, tok, "picochat-key-test", ServeLimits(), Policy(api_key="k3y"))
    with ServerThread(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        page.set_default_timeout(20_000)
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.message), d.accept("k3y")))
        auth: list[str | None] = []
        page.on("request", lambda r: auth.append(r.headers.get("authorization")) if "/v1/" in r.url else None)
        page.goto(url.replace("127.0.0.1", "localhost"))
        sync_api.expect(page.locator("#model")).to_have_text("picochat-key-test")
        page.click(".settings summary")
        page.fill("#max-tokens", "5")
        page.fill("#input", "Hello")
        page.keyboard.press("Enter")
        # The reply is over when the page offers to regenerate it, however it ended: the random
        # model may sample <|assistant_end|> before the 5-token limit (the note then reads "stopped").
        sync_api.expect(page.locator("#regenerate")).to_be_visible()
        sync_api.expect(page.locator(".msg.assistant")).to_have_count(1)
        browser.close()
    assert len(asked) == 1 and "API key" in asked[0]
    assert auth[0] is None and auth[1:] == ["Bearer k3y"] * (len(auth) - 1) and len(auth) >= 3
