"""Fixtures shared by several test files; the plain builders they use (tiny_gpt, save_run, TEXT)
are in helpers/tiny.py. A file that needs a different tokenizer defines its own `tok` fixture,
which overrides this one for that file."""

from __future__ import annotations

import warnings

import pytest
from helpers.tiny import TEXT

from picochat.tokenizer.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tok() -> Tokenizer:
    """A 300-token tokenizer trained (pure-Python reference BPE) on helpers/tiny.py's TEXT:
    what the engine, server, page and tiny-run tests run their tiny GPTs with."""
    return Tokenizer.train([TEXT], vocab_size=300, native=False)


@pytest.fixture(scope="session")
def chat_tok() -> Tokenizer:
    """A 400-token tokenizer trained on the demo chat tasks' text (word problems and small talk):
    the chat stages' tests pack and train on those conversations."""
    from picochat.tasks.registry import make_mixture
    from picochat.tasks.synthetic import WordProblems

    wp, st = WordProblems("train", 60), make_mixture("smalltalk:train:60")
    text = " ".join(str(t[i]["messages"]) for t in (wp, st) for i in range(60))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the native core may be missing: the reference is fine here
        return Tokenizer.train([text], 400)
