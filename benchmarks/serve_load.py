"""Load test: N concurrent streaming clients against `picochat serve`.

    python benchmarks/serve_load.py --concurrency 64 --requests 256          # starts a demo server
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --concurrency 16

Without --url it starts a server in a child process on a demo-sized model: the demo preset's
shape (depth 4, width 256, vocab 4096) with random weights and a tokenizer trained on the
synthetic corpus, so it runs anywhere without a trained run (pass --run NAME to serve a trained
run instead). Each client sends a streaming chat completion (temperature 1, `max_tokens`
new tokens), then the next, until `--requests` are done.

First `--idle-requests` requests run one at a time (the idle baseline), then the load run.
Reports requests/s, output tokens/s, and percentiles of time-to-first-token (TTFT: request sent
-> first content chunk), inter-token latency (ITL: the gap between successive content chunks of
a stream), end-to-end latency, and per-stream decode speed (tokens after the first / time after
the first), plus the error count (non-200, broken stream, missing [DONE]); then TTFT under load
over TTFT idle as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx


def serve_demo(port: int, max_batch: int, run: str, prefill_chunk: int, server_log: str) -> None:
    """The child process: a demo model behind the real app, or `picochat serve --run`."""
    if run:
        from picochat.cli import main

        main(["serve", "--run", run, "--port", str(port), "--max-batch", str(max_batch), "--quiet",
              "--max-queue", "1024", "--max-concurrent", "4096", "--prefill-chunk", str(prefill_chunk)])
        return
    import logging

    import torch
    import uvicorn

    from picochat.data import synthetic
    from picochat.engine.batcher import Batcher
    from picochat.engine.engine import Engine
    from picochat.model.gpt import GPT, GPTConfig
    from picochat.serve.app import ServeLimits, create_app
    from picochat.tokenizer.tokenizer import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.train(synthetic.chunk("train", 0), 4096)
    model = GPT(GPTConfig.from_depth(4, head_dim=64, vocab_size=tok.vocab_size, seq_len=256)).eval()
    batcher = Batcher(Engine(model, tok), max_rows=max_batch, max_queue=1024, prefill_chunk=prefill_chunk)
    app = create_app(batcher, tok, "picochat-demo-random", ServeLimits(max_concurrent=4096))
    if server_log:  # the server's own line per request (server-side TTFT), for a closer look
        open(server_log, "w").close()  # mode "a": uvicorn's logging setup closes handlers, and a
        handler = logging.FileHandler(server_log, mode="a")  # closed "w" handler never reopens
        handler.setFormatter(logging.Formatter("%(relativeCreated)d %(message)s"))
        logging.getLogger("picochat.serve").addHandler(handler)
        logging.getLogger("picochat.serve").setLevel(logging.INFO)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def tokens_for(i: int, max_tokens: int, spread: float) -> int:
    """Request i's max_tokens: fixed, or drawn from max_tokens x [1 - spread, 1 + spread] (seeded by i).
    A random-weight model never ends its turn, so with a fixed max_tokens every stream ends on the
    same step and all clients send their next request at once (lock-step waves); a spread stands
    in for replies of different lengths, as a trained model's are."""
    if not spread:
        return max_tokens
    lo, hi = max(1, round(max_tokens * (1 - spread))), round(max_tokens * (1 + spread))
    return random.Random(i).randint(lo, max(lo, hi))


async def read_sse(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The `data:` payloads of a chunked (Transfer-Encoding: chunked) SSE body, as they arrive."""
    buffer = b""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            return
        buffer += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if event.startswith(b"data: "):
                yield event[6:]


async def one_request(url: str, i: int, max_tokens: int) -> dict:
    """One streaming chat completion over a plain asyncio connection. The load generator shares
    the machine with the server, so it does as little as it can: HTTP by hand (an httpx client
    spent more CPU per chunk than the server) and JSON only for the chunks that need it."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"messages": [{"role": "user", "content": f"Tell me a story about the number {i}."}],
                       "max_tokens": max_tokens, "temperature": 1.0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    ttft, tokens, done, last, gaps = None, 0, False, None, []
    try:
        writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        status = (await reader.readline()).split(b" ")[1]
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if status != b"200":
            return {"error": f"HTTP {status.decode()}"}
        async for data in read_sse(reader):
            if data == b"[DONE]":
                done = True
                break
            if b'"content": "' in data and b'"content": ""' not in data:  # a token with text
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - t0
                else:
                    gaps.append(now - last)
                last = now
            elif b'"error"' in data or b'"usage"' in data:
                chunk = json.loads(data)
                if "error" in chunk:
                    return {"error": chunk["error"]["message"]}
                tokens = chunk["usage"]["completion_tokens"]
    finally:
        writer.close()
    total = time.perf_counter() - t0
    if not done:
        return {"error": "stream ended without [DONE]"}
    ttft = total if ttft is None else ttft
    rate = (tokens - 1) / (total - ttft) if tokens > 1 and total > ttft else float("nan")
    return {"ttft": ttft, "latency": total, "tokens": tokens, "rate": rate, "gaps": gaps}


async def load(url: str, concurrency: int, requests: int, max_tokens: int,
               spread: float = 0.0) -> tuple[list[dict], float]:
    counter = iter(range(requests))
    results: list[dict] = []

    async def worker() -> None:
        for i in counter:
            try:
                results.append(await one_request(url, i, tokens_for(i, max_tokens, spread)))
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
                results.append({"error": repr(e)})

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results, time.perf_counter() - t0


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve_load.py: the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit("serve_load.py: the server did not come up")


def report(title: str, results: list[dict], wall: float, concurrency: int, max_tokens: int) -> float:
    """Print one run's numbers; return its TTFT p50 (seconds)."""
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    tokens = sum(r["tokens"] for r in ok)
    print(f"== {title}: {len(results)} requests, {concurrency} concurrent streams, max_tokens {max_tokens}: "
          f"{len(errors)} errors, wall {wall:.1f}s")
    print(f"throughput: {len(ok) / wall:.2f} requests/s, {tokens / wall:.0f} output tokens/s")
    gaps = [g for r in ok for g in r["gaps"]]
    for name, xs, unit, scale in (("TTFT", [r["ttft"] for r in ok], "ms", 1e3), ("ITL", gaps, "ms", 1e3),
                                  ("latency", [r["latency"] for r in ok], "s", 1),
                                  ("stream decode", [r["rate"] for r in ok], "tok/s", 1)):
        xs = [x for x in xs if x == x]
        mean = statistics.fmean(xs) if xs else float("nan")
        print(f"{name:>14}: p50 {pct(xs, 50) * scale:8.1f}  p95 {pct(xs, 95) * scale:8.1f}  "
              f"p99 {pct(xs, 99) * scale:8.1f}  mean {mean * scale:8.1f} {unit}")
    if errors:
        print("first errors:", errors[:3])
    return pct([r["ttft"] for r in ok], 50)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="", help="an already running server (default: start a demo one)")
    ap.add_argument("--run", default="", help="serve this trained run instead of the random demo model")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--spread", type=float, default=0.0,
                    help="draw each request's max_tokens from max_tokens x [1-spread, 1+spread] (0 = fixed)")
    ap.add_argument("--idle-requests", type=int, default=16, help="requests sent one at a time first (0 = skip)")
    ap.add_argument("--max-batch", type=int, default=64, help="rows of the started server's batch")
    ap.add_argument("--prefill-chunk", type=int, default=128, help="the started server's --prefill-chunk")
    ap.add_argument("--server-log", default="", help="the started demo server writes its request log here")
    ap.add_argument("--_serve", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._serve:
        serve_demo(args._serve, args.max_batch, args.run, args.prefill_chunk, args.server_log)
        return
    proc = None
    url = args.url
    if not url:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, os.path.abspath(__file__), "--_serve", str(port), "--max-batch", str(args.max_batch),
               "--prefill-chunk", str(args.prefill_chunk), "--server-log", args.server_log]
        proc = subprocess.Popen(cmd + (["--run", args.run] if args.run else []))
        wait_ready(url, proc)
    try:
        results = []
        if args.idle_requests:
            idle, wall = asyncio.run(load(url, 1, args.idle_requests, args.max_tokens, args.spread))
            idle_p50 = report("idle", idle, wall, 1, args.max_tokens)
            results += idle
        busy, wall = asyncio.run(load(url, args.concurrency, args.requests, args.max_tokens, args.spread))
        busy_p50 = report("load", busy, wall, args.concurrency, args.max_tokens)
        results += busy
        if args.idle_requests:
            print(f"TTFT p50 under load / idle: {busy_p50 * 1e3:.1f} ms / {idle_p50 * 1e3:.1f} ms = "
                  f"{busy_p50 / idle_p50:.1f}x")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
