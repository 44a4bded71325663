"""Bits per byte against hand-computed values on tiny fixed models."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.tiny import save_run, tiny_gpt

from picochat.eval.bpb import DocScore, aggregate, bits_per_byte, score_documents, windows

pytestmark = pytest.mark.timeout(120)


class CharTokenizer:
    """One token per character; BOS is the last id."""

    def __init__(self, chars: str):
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.bos_id = len(chars)
        self.vocab_size = len(chars) + 1

    def encode(self, text: str, prepend: int | None = None) -> list[int]:
        return ([prepend] if prepend is not None else []) + [self.stoi[c] for c in text]


class Bigram(torch.nn.Module):
    """logits[b, t] = log P(. | idx[b, t]): the next token depends only on the current one."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("logp", probs.log())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logp[idx]


class Positional(torch.nn.Module):
    """logits[b, t] = log P(. | position t in the window): exposes where windows start."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("logp", probs.log())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        return self.logp[:T].unsqueeze(0).expand(B, T, -1)


def test_uniform_model_is_log2_vocab_per_ascii_byte():
    tok = CharTokenizer("abcdefghijklmno")  # 15 chars + BOS = 16 ids
    model = Bigram(torch.full((16, 16), 1 / 16))
    assert bits_per_byte(model, tok, ["abcab", "o"], seq_len=8) == pytest.approx(4.0, abs=1e-6)


def test_bytes_not_characters_are_the_denominator():
    tok = CharTokenizer("aé")  # 'é' is one token but two UTF-8 bytes
    model = Bigram(torch.full((3, 3), 1 / 3))
    # 2 tokens x ln 3 nats over 4 bytes
    assert bits_per_byte(model, tok, ["éé"], seq_len=8) == pytest.approx(2 * math.log2(3) / 4, abs=1e-6)


def test_bigram_hand_computed():
    tok = CharTokenizer("abc")  # ids a=0 b=1 c=2 bos=3
    probs = torch.full((4, 4), 0.25)
    probs[3] = torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6])  # P(a | bos) = 1/2
    model = Bigram(probs)
    # "ab": -ln P(a|bos) - ln P(b|a) = ln 2 + ln 4 = 3 ln 2 nats over 2 bytes -> 1.5 bits/byte
    assert bits_per_byte(model, tok, ["ab"], seq_len=16) == pytest.approx(1.5, abs=1e-6)
    # "ba": ln 6 + ln 4 over 2 bytes
    assert bits_per_byte(model, tok, ["ba"], seq_len=16) == pytest.approx((math.log2(6) + 2) / 2, abs=1e-6)


@pytest.mark.parametrize("seq_len,expected", [(2, 1.5), (3, 1.5), (4, 1.75), (10, 1.75), (1, 1.0)])
def test_windows_restart_context_exactly_where_documented(seq_len, expected):
    # position 0 of every window gives 'a' probability 1/2, later positions are uniform (1/4):
    # "aaaa" scores ln 2 per window start and ln 4 elsewhere, so the total counts window starts.
    tok = CharTokenizer("abc")
    probs = torch.full((16, 4), 0.25)
    probs[0] = torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6])
    model = Positional(probs)
    assert bits_per_byte(model, tok, ["aaaa"], seq_len=seq_len) == pytest.approx(expected, abs=1e-6)


def test_windows_cover_every_target_once():
    ids = list(range(11))  # bos + 10 tokens
    for L in (1, 3, 4, 10, 50):
        ws = windows(ids, L)
        assert [t for _, y in ws for t in y] == ids[1:]
        assert all(len(x) == len(y) <= L for x, y in ws)
        assert all(x[1:] == y[:-1] for x, y in ws)  # targets are the inputs shifted by one


def test_aggregate_is_total_over_total_and_per_document_values():
    tok = CharTokenizer("abc")
    probs = torch.full((4, 4), 0.25)
    probs[3] = torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6])
    model = Bigram(probs)
    docs = ["ab", "cccc", ""]
    scores = score_documents(model, tok, docs, seq_len=3, batch_size=2)
    assert [s.num_bytes for s in scores] == [2, 4, 0]
    assert [s.num_tokens for s in scores] == [2, 4, 0]
    assert scores[0].bpb == pytest.approx(1.5, abs=1e-6)
    assert scores[1].nats == pytest.approx(math.log(6) + 3 * math.log(4), abs=1e-5)
    total = (3 * math.log(2) + math.log(6) + 3 * math.log(4)) / (math.log(2) * 6)
    assert bits_per_byte(model, tok, docs, seq_len=3) == pytest.approx(total, abs=1e-6)
    assert total != pytest.approx((scores[0].bpb + scores[1].bpb) / 2)  # not a mean of ratios
    with pytest.raises(ValueError):
        aggregate([DocScore(0.0, 0, 0)])


def test_batching_and_padding_do_not_change_a_real_gpt():
    model = tiny_gpt(16, seq_len=16, n_layer=2, std=0.3)  # the zero-initialised projections would hide attention
    tok = CharTokenizer("abcdefghijklmno")
    docs = ["abcdefghijklmnoabc", "hello", "a", "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"]
    one = score_documents(model, tok, docs, seq_len=16, batch_size=1)
    many = score_documents(model, tok, docs, seq_len=16, batch_size=8)
    for a, b in zip(one, many):
        assert a.nats == pytest.approx(b.nats, rel=1e-4)
    assert all(math.isfinite(s.nats) and s.nats > 0 for s in one)


def test_cli_eval_bpb_writes_its_json(tmp_path, tok, monkeypatch):
    import json

    from picochat import cli
    from picochat.common.paths import stage_dir

    monkeypatch.setenv("PICOCHAT_HOME", str(tmp_path))
    save_run(tmp_path, tok, tiny_gpt(tok.vocab_size), stage="base", step=7)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "bpb", "--run", "t", "--device", "cpu", "--source", "synthetic", "--max-docs", "3"])
    assert e.value.code == 0
    out = json.loads((stage_dir("t", "base") / "eval" / "bpb.json").read_text())
    assert out["documents"] == 3 and out["step"] == 7 and out["seq_len"] == 32
    # an untrained model is near-uniform: about log2(V) bits per token
    assert out["bpb"] == pytest.approx(math.log2(tok.vocab_size) * out["tokens"] / out["bytes"], rel=0.05)
    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "bpb", "--run", "missing", "--device", "cpu"])
    assert e.value.code == 2  # a UserError: one sentence, no traceback
