"""Fixtures shared by several test files. A file that needs a different tokenizer defines its own
`tok` fixture, which overrides this one for that file."""

from __future__ import annotations

import pytest
from helpers.tiny_chat import TEXT

from picochat.tokenizer.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tok() -> Tokenizer:
    """A 300-token tokenizer trained (pure-Python reference BPE) on helpers/tiny_chat.py's TEXT:
    what the engine, server and page tests run their tiny random GPT with."""
    return Tokenizer.train([TEXT], vocab_size=300, native=False)
