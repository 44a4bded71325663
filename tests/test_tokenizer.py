"""Tokenizer: id layout, save/load, tiktoken encoding equal to the reference rule, round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picochat.common.errors import UserError
from picochat.tokenizer import bpe
from picochat.tokenizer.tokenizer import SPECIAL_TOKENS, Tokenizer

TEXT = (
    "The quick brown fox jumps over the lazy dog. It's 2024; we'll see 3.14159 and 1,000,000.\n"
    "Ünïcödé façade naïve — русский текст, 日本語のテキスト, 🙂🙃 emoji, tabs\tand\r\nCRLF.\n"
    "def f(x):\n    return x ** 2  # code, too\n\n"
) * 20


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([TEXT], vocab_size=400, native=False)


def test_id_layout(tok):
    assert tok.vocab_size == 400
    assert len(tok.merges) == 400 - 256 - 9
    assert [tok.special_id(s) for s in SPECIAL_TOKENS] == list(range(391, 400))
    assert tok.bos_id == tok.special_id("<|bos|>") == 391
    assert tok.enc.n_vocab == 400
    with pytest.raises(ValueError, match="unknown special token"):
        tok.special_id("<|nope|>")


def test_vocab_size_too_small_is_a_user_error():
    with pytest.raises(UserError, match="at least 265"):
        Tokenizer.train(["abc"], vocab_size=100, native=False)
    with pytest.raises(TypeError, match="iterable of documents"):
        Tokenizer.train("one string, not a list", vocab_size=300)


def test_token_bytes(tok):
    tb = tok.token_bytes()
    assert len(tb) == tok.vocab_size
    assert tb[:256] == [1] * 256 and tb[-9:] == [0] * 9
    assert all(tb[i] == len(tok.id_to_bytes(i)) for i in range(391))
    assert tok.id_to_bytes(tok.bos_id) == b"" and sum(tb) > 391


def test_encode_matches_reference_rule(tok):
    for text in [TEXT, "unseen words: xylophone quixotic zebra 98765", "   leading spaces", ""]:
        assert tok.encode(text) == bpe.encode(text, tok.merges, tok.pattern)


def test_encode_prepend_append_and_batch(tok):
    ids = tok.encode("hello world")
    assert tok.encode("hello world", prepend=tok.bos_id) == [tok.bos_id] + ids
    end = tok.special_id("<|assistant_end|>")
    assert tok.encode("hello world", prepend=tok.bos_id, append=end) == [tok.bos_id] + ids + [end]
    texts = ["hello world", "", TEXT[:500], "🙂"]
    assert tok.encode_batch(texts, num_threads=2) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, prepend=tok.bos_id) == [[tok.bos_id] + tok.encode(t) for t in texts]


def test_special_token_text_is_not_parsed(tok):
    ids = tok.encode("<|bos|>hi<|assistant_end|>")
    assert tok.bos_id not in ids and tok.special_id("<|assistant_end|>") not in ids
    assert tok.decode(ids) == "<|bos|>hi<|assistant_end|>"
    assert tok.decode([tok.bos_id] + tok.encode("x")) == "<|bos|>x"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_tiktoken_export_equals_reference_rule_on_any_text(tok, s):
    # tiktoken splits with Rust fancy-regex, bpe.py with Python's regex: same ids expected
    assert tok.encode(s) == bpe.encode(s, tok.merges, tok.pattern)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_valid_unicode(tok, s):
    assert tok.decode(tok.encode(s)) == s


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF)))  # surrogates too
def test_round_trip_with_lone_surrogates_is_cleaned_text(tok, s):
    assert tok.decode(tok.encode(s)) == bpe.clean_text(s)


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "tok" / "tokenizer.json"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.merges == tok.merges and loaded.pattern == tok.pattern
    assert loaded.encode(TEXT) == tok.encode(TEXT)
    assert loaded.special_tokens == tok.special_tokens
    assert not list(path.parent.glob("*.tmp"))


def test_custom_pattern_is_saved(tmp_path):
    t = Tokenizer.train(["ab ab abc"], vocab_size=270, pattern=r"\S+|\s+", native=False)
    t.save(tmp_path / "t.json")
    assert Tokenizer.load(tmp_path / "t.json").pattern == r"\S+|\s+"


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"format": "other"}),
                                     json.dumps({"format": "picochat-bpe-v1", "pattern": ".",
                                                 "merges": [[300, 1]], "special_tokens": {},
                                                 "vocab_size": 1})])
def test_load_corrupt_file_is_user_error(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(UserError, match="tokenizer file"):
        Tokenizer.load(path)


def test_load_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.json")


def test_duplicate_token_bytes_still_decode():
    # Two merges can spell the same bytes: "ab"+"c" and "a"+"bc" are both b"abc".
    merges = [(97, 98), (98, 99), (256, 99), (97, 257)]
    t = Tokenizer(merges)
    assert t.id_to_bytes(258) == t.id_to_bytes(259) == b"abc"
    assert t.encode("abc") == [258]  # the earlier id is the token
    assert t.decode([259, 258]) == "abcabc"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        t.decode([10_000])


def _mirror_books(name: str, n_chars: int) -> list[str]:
    import gzip
    import os
    from pathlib import Path

    path = Path(os.environ.get("PICOCHAT_MIRROR", "/nonexistent")) / "pretrain" / name
    if not os.environ.get("PICOCHAT_MIRROR") or not path.exists():
        pytest.skip("Gutenberg data mirror not found (set PICOCHAT_MIRROR)")
    docs, total = [], 0
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"][: n_chars - total])
            total += len(docs[-1])
            if total >= n_chars:
                break
    return docs


def test_gutenberg_native_equals_reference_and_tiktoken_equals_reference_rule():
    from picochat.tokenizer import fast

    docs = _mirror_books("gutenberg_train.jsonl.gz", 400_000)
    ref = Tokenizer.train(docs, vocab_size=1500, native=False)
    if fast.available():
        assert Tokenizer.train(docs, vocab_size=1500).merges == ref.merges
    held_out = _mirror_books("gutenberg_val.jsonl.gz", 40_000)[0]
    ids = ref.encode(held_out)
    assert ids == bpe.encode(held_out, ref.merges, ref.pattern)
    assert ref.decode(ids) == held_out
    assert len(held_out.encode()) / len(ids) > 2.0  # it compresses unseen prose (2.5 bytes/token at this small vocab)


def test_cli_train_skip_force_and_eval(tmp_path, capsys):
    from picochat.cli import main

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            main(["tokenizer", *argv, "--run", "t", "--home", str(tmp_path), "--source", "synthetic"])
        return e.value.code, capsys.readouterr()

    code, out = run("train", "--vocab-size", "300", "--max-chars", "200000")
    path = tmp_path / "runs" / "t" / "tokenizer" / "tokenizer.json"
    assert code == 0 and "wrote" in out.out and Tokenizer.load(path).vocab_size == 300
    meta = json.loads((path.parent / "config.json").read_text())
    assert meta["tokenizer"]["max_chars"] == 200000
    code, out = run("train", "--vocab-size", "300", "--max-chars", "200000")
    assert code == 0 and "already trained" in out.out
    code, out = run("train", "--vocab-size", "310", "--max-chars", "200000")
    assert code == 2 and "--force" in out.err and "Traceback" not in out.err
    code, out = run("train", "--vocab-size", "310", "--max-chars", "200000", "--force")
    assert code == 0 and Tokenizer.load(path).vocab_size == 310
    other = tmp_path / "other.json"
    Tokenizer.train(["a small other corpus"], 280, native=False).save(other)
    code, out = run("eval", str(other), "--chars", "50000")
    assert code == 0 and "bytes/token" in out.out and str(other)[-40:] in out.out
    path.write_text("{broken")
    code, out = run("eval")
    assert code == 2 and "corrupt" in out.err
