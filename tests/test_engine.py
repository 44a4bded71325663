"""The engine against naive full recomputation, batched against one-by-one, and the tool machine."""

from __future__ import annotations

import pytest
import torch
from helpers.tiny import random_gpt

from picochat.engine.engine import Engine, SamplingParams, truncate_logits
from picochat.engine.text import TextStream
from picochat.model.gpt import GPT
from picochat.model.kv_cache import KVCache, RaggedKVCache


@pytest.fixture(scope="module")
def model(tok) -> GPT:
    return random_gpt(tok.vocab_size)


def naive_greedy(model: GPT, prompt: list[int], steps: int, stops: set[int]) -> list[int]:
    """Greedy decoding that re-runs the whole sequence every step (no cache)."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
            if nxt in stops:
                break
    return out


def prompts(tok) -> list[list[int]]:
    return [tok.encode(t, prepend=tok.bos_id) for t in
            ("The quick", "Hello, world! What is 6 times", "1", "It is 42. Numbers: 0 1 2")]


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])  # MQA, GQA, MHA
def test_greedy_with_cache_equals_full_recomputation(tok, n_kv_head):
    model = random_gpt(tok.vocab_size, n_kv_head=n_kv_head, seed=n_kv_head)
    engine = Engine(model, tok, tool=None)
    stops = {tok.bos_id, tok.special_id("<|assistant_end|>")}
    for prompt in prompts(tok):
        got = engine.generate([prompt], temperature=0.0, max_tokens=40)[0][0]
        assert got.ids == naive_greedy(model, prompt, 40, stops)
        assert not any(got.forced)


def test_batched_equals_one_by_one(tok, model):
    engine = Engine(model, tok, tool=None)
    ps = prompts(tok)
    for params in (SamplingParams(temperature=0.0, max_tokens=30),
                   SamplingParams(temperature=0.9, top_k=50, top_p=0.9, seed=7, n=3, max_tokens=30)):
        together = engine.generate(ps, params)
        alone = [engine.generate([p], params)[0] for p in ps]
        # max_rows=2 makes prompts wait for free rows and join a running batch
        joining = engine.generate(ps, params, max_rows=params.n * 2 - 1)
        for a, b, c in zip(together, alone, joining):
            assert [s.ids for s in a] == [s.ids for s in b] == [s.ids for s in c]
            for s, t in zip(a, b):
                assert s.logprobs == pytest.approx(t.logprobs, abs=1e-4)


def test_seeds_reproduce_and_samples_differ(tok, model):
    engine = Engine(model, tok, tool=None)
    p = prompts(tok)[0]
    a = engine.generate([p], temperature=1.0, n=4, seed=3, max_tokens=20)[0]
    b = engine.generate([p], temperature=1.0, n=4, seed=3, max_tokens=20)[0]
    assert [s.ids for s in a] == [s.ids for s in b]
    assert len({tuple(s.ids) for s in a}) > 1


def test_logprobs_are_the_models(tok, model):
    engine = Engine(model, tok, tool=None)
    p = prompts(tok)[1]
    got = engine.generate([p], temperature=1.0, seed=1, max_tokens=10)[0][0]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + got.ids]))[0], dim=-1)
    want = [logp[len(p) - 1 + t, i].item() for t, i in enumerate(got.ids)]
    assert got.logprobs == pytest.approx(want, abs=1e-4)


def test_max_tokens_and_length_finish(tok, model):
    engine = Engine(model, tok, tool=None)
    got = engine.generate([prompts(tok)[0]], temperature=0.0, max_tokens=5)[0][0]
    assert len(got.ids) <= 5
    assert got.finish == ("length" if len(got.ids) == 5 else "stop")


class Scripted(GPT):
    """A real GPT whose logits get +100 on a scripted token at chosen positions, so a test can
    make the model open and close a python call."""

    script: dict[int, int] = {}

    def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
        logits = super().forward(idx, kv_cache=kv_cache)
        for b, n in enumerate(kv_cache.lens[kv_cache.active]):
            if n in self.script:
                logits[b, -1, self.script[n]] += 100.0
        return logits


def test_tool_output_is_forced_and_marked(tok):
    model = random_gpt(tok.vocab_size, cls=Scripted)
    sp = {name: tok.special_id(f"<|{name}|>") for name in
          ("python_start", "python_end", "output_start", "output_end", "assistant_end")}
    prompt = prompts(tok)[0]
    code = tok.encode("6*7")
    result = tok.encode("42")
    P = len(prompt)
    # the script: position -> token the model "wants" to write there
    wanted = [sp["python_start"], *code, sp["python_end"]]
    model.script = {P + i: t for i, t in enumerate(wanted)}
    after = P + len(wanted) + 2 + len(result)       # past <|output_start|> 42 <|output_end|>
    model.script[after] = sp["assistant_end"]
    calls = []
    engine = Engine(model, tok, tool=lambda c: calls.append(c) or str(eval(c)))
    got = engine.generate([prompt], temperature=0.0, max_tokens=50)[0][0]
    forced_part = [sp["output_start"], *result, sp["output_end"]]
    assert calls == ["6*7"]
    assert got.ids == wanted + forced_part + [sp["assistant_end"]]
    assert got.forced == [False] * len(wanted) + [True] * len(forced_part) + [False]
    assert got.finish == "stop"
    assert got.parts == [{"type": "python", "text": "6*7"}, {"type": "python_output", "text": "42"}]


def test_ragged_cache_matches_separate_caches(tok, model):
    """Two rows of different lengths decoded together give each row's own-cache logits."""
    a, b = prompts(tok)[0], prompts(tok)[1]
    ragged = RaggedKVCache.for_model(model, 2, 64)
    with torch.no_grad():
        for row, p in enumerate((a, b)):
            ragged.active = slice(row, row + 1)
            model(torch.tensor([p]), kv_cache=ragged)
        ragged.active = slice(0, 2)
        both = model(torch.tensor([[5], [6]]), kv_cache=ragged)[:, -1]
        for row, (p, t) in enumerate(((a, 5), (b, 6))):
            cache = KVCache.for_model(model, 1, 64)
            model(torch.tensor([p]), kv_cache=cache)
            alone = model(torch.tensor([[t]]), kv_cache=cache)[0, -1]
            torch.testing.assert_close(both[row], alone, atol=1e-4, rtol=1e-4)


def test_truncate_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
    out = truncate_logits(logits, torch.tensor([2, 0]), torch.tensor([1.0, 0.8]))
    assert torch.isfinite(out).tolist() == [[True, True, False, False], [True, True, False, False]]
    out = truncate_logits(logits, torch.tensor([0]), torch.tensor([0.81]))[:1]
    assert torch.isfinite(out).tolist() == [[True, True, True, False]]


def test_text_stream_holds_back_stop_strings_and_split_utf8():
    s = TextStream(stop=["User:"])
    out = []
    for chunk in (b"Hi ", b"Us", b"e", b"r? no. ", "é".encode()[:1], "é".encode()[1:], b" Use", b"r:", b"x"):
        out += s.push(chunk, "text")
    assert "".join(t for _, t in out) == "Hi User? no. é "
    assert s.stopped
    s = TextStream()
    pieces = s.push(b"a", "text") + s.push(b"1+1", "python") + s.push(b"2", "python_output") + s.finish()
    assert pieces == [("text", "a"), ("python", "1+1"), ("python_output", "2")]


def test_stop_string_ends_the_reply_before_it(tok, model):
    engine = Engine(model, tok, tool=None)
    p = prompts(tok)[1]
    full = engine.generate([p], temperature=0.0, max_tokens=40)[0][0]
    text = full.text
    assert len(text) > 6, "the random model should say something"
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = engine.generate([p], temperature=0.0, max_tokens=40, stop=(stop,))[0][0]
    assert cut.text == text[:text.index(stop)]
    assert cut.finish == "stop" and len(cut.ids) < len(full.ids)


def test_top_k_1_is_greedy(tok, model):
    engine = Engine(model, tok, tool=None)
    p = prompts(tok)[2]
    greedy = engine.generate([p], temperature=0.0, max_tokens=20)[0][0].ids
    assert engine.generate([p], temperature=1.5, top_k=1, seed=9, max_tokens=20)[0][0].ids == greedy
    assert engine.generate([p], temperature=1.5, top_p=1e-6, seed=9, max_tokens=20)[0][0].ids == greedy
