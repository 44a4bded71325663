"""Shared by the engine, server and page tests: a tiny random GPT, its training text for a tiny
tokenizer, and a uvicorn server on a background thread."""

from __future__ import annotations

import socket
import threading
import time

import torch
import uvicorn

from picochat.model.gpt import GPT, GPTConfig

TEXT = ("The quick brown fox jumps over the lazy dog. 12 + 30 = 42. Hello, world! "
        "What is 6 times 7? It is 42. Numbers: 0 1 2 3 4 5 6 7 8 9. ") * 20


def random_gpt(vocab_size: int, n_kv_head: int = 2, seed: int = 0, cls=GPT, seq_len: int = 96) -> GPT:
    """A tiny GPT with every weight random (the real init zeroes some projections, and its tiny
    output head makes all logits near-equal: argmax would then hang on float noise)."""
    torch.manual_seed(seed)
    model = cls(GPTConfig(sequence_len=seq_len, vocab_size=vocab_size, n_layer=2, n_head=4,
                          n_kv_head=n_kv_head, n_embd=64))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.4)
    return model.eval()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn on a background thread, for clients that need a real socket."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
