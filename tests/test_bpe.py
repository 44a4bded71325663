"""The BPE spec (tokenizer/bpe.py) and the native core that must reproduce it exactly.

The reference trainer is checked against a from-scratch oracle (recount every pair every step:
too slow for real use, obviously correct); the native core is checked against the reference on
real text (Gutenberg slices, when the mirror is present), non-ASCII and pathological inputs.
"""

from __future__ import annotations

import doctest
from collections import Counter

import pytest
import regex
from helpers.corpora import mirror_gutenberg
from hypothesis import given, settings
from hypothesis import strategies as st

from picochat.tokenizer import bpe, fast

# ---- the oracle ------------------------------------------------------------------------------


def oracle_train(texts: list[str], num_merges: int, pattern: str = bpe.SPLIT_PATTERN) -> list[tuple[int, int]]:
    """BPE the slow, obvious way: recount all pairs before every merge."""
    words = Counter()
    for text in texts:
        for chunk in regex.findall(pattern, bpe.clean_text(text)):
            words[tuple(chunk.encode("utf-8"))] += 1
    merges = []
    while len(merges) < num_merges:
        counts = Counter()
        for w, n in words.items():
            for pair in zip(w, w[1:]):
                counts[pair] += n
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # highest count, then lowest pair
        new_id = 256 + len(merges)
        merges.append(pair)
        merged = Counter()
        for w, n in words.items():
            merged[tuple(bpe.merge_word(list(w), pair, new_id))] += n
        words = merged
    return merges


# ---- corpora ---------------------------------------------------------------------------------

PROSE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness. We had everything before us, we had nothing before us; we were all going "
    "direct to Heaven, we were all going direct the other way. In 1775, there were 12 kings.\n\n"
)
MIXED = (
    "Ünïcödé façade naïve résumé — «quotes» and ‘single’. Ελληνικά κείμενα, русский текст, "
    "日本語のテキスト、中文文本。 한국어 텍스트. العربية עברית हिन्दी ไทย 🙂🙃 👩‍👩‍👧 🏳️‍🌈 "
    "x² ½ ⅓ ٣٤٥ ١٢ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \t\r\n tabs\tand\r\nCRLF  lines   \u00a0nbsp\u2003em\u3000ideo "
    "don't WE'LL they'Re I'M o'clock Straße ſtraße ǅ ﬁ 123456789 3.14159 1,000,000\n"
)


# ---- the reference ---------------------------------------------------------------------------


def test_known_answer_docstring():
    result = doctest.testmod(bpe, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


@pytest.mark.parametrize("texts", [[PROSE * 3], [MIXED, PROSE], ["aaaaaaaaaaaaaaaa"], ["", ""], [],
                                   ["ab ab ab cd cd cd ba ba ba dc dc dc"]])
def test_reference_equals_oracle(texts):
    assert bpe.train(texts, 200) == oracle_train(texts, 200)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab c\n1é😀'"), max_size=40), max_size=6),
       st.integers(0, 40))
def test_reference_equals_oracle_hypothesis(texts, num_merges):
    assert bpe.train(texts, num_merges) == oracle_train(texts, num_merges)


def test_forced_tie_lowest_pair_wins():
    # "ab" and "ba"... every pair occurs exactly 3 times: the lowest (left, right) pair wins.
    merges = bpe.train(["zy yx xw"] * 3, 3)
    assert merges[0] == (ord(" "), ord("x"))  # (32, 120) is the lowest of the count-3 pairs
    assert merges == oracle_train(["zy yx xw"] * 3, 3)


def test_stops_early_when_no_pair_is_left():
    assert bpe.train(["a b c"], 100) == [(32, 98), (32, 99)]  # " b", " c"; "a" alone has no pair
    assert bpe.train([""], 10) == []
    assert bpe.train(["a"], 10) == []


def test_repeated_byte_overlaps_merge_left_to_right():
    # "aaaaa" -> [X, X, a] with X = aa; then (X, a) beats (X, X) by the lower pair at count 1
    merges = bpe.train(["aaaaa"], 10)
    assert merges == [(97, 97), (256, 97), (256, 257)]
    assert bpe.vocab_bytes(merges)[-1] == b"aaaaa"


def test_lone_surrogates_become_replacement_character():
    assert bpe.clean_text("a\ud800b") == "a\ufffdb"
    assert bpe.clean_text("ok") == "ok"
    assert bpe.count_chunks(["\ud800"]) == Counter({"\ufffd".encode(): 1})


def test_reference_encode_reproduces_training_segmentation():
    merges = bpe.train([PROSE], 300)
    vocab = bpe.vocab_bytes(merges)
    ids = bpe.encode(PROSE, merges)
    assert b"".join(vocab[i] for i in ids) == PROSE.encode()
    assert len(ids) < len(PROSE.encode()) / 3  # it compresses its own training text


# ---- the native core: exactly the reference's merges -----------------------------------------

needs_native = pytest.mark.skipif(not fast.available(), reason="native BPE core not built")

PATHOLOGICAL = {
    "empty": [""],
    "nothing": [],
    "one_repeated_byte": ["a" * 5000],
    "repeated_space": [" " * 3000 + "x"],
    "emoji": ["🙂🙃😀 " * 50 + "👩‍👩‍👧👩‍👩‍👧 🏳️‍🌈" * 20],
    "mixed_scripts": [MIXED * 5],
    "lone_surrogates": ["a\ud800b\udfff c \ud83d\ude00 \ud800\ud800" * 20],
    "forced_ties": ["zy yx xw"] * 3 + ["ab cd ef gh ij"] * 7,
    "digits": ["0123456789 " * 100 + "3.14159265358979"],
    "newlines": ["\n\n\r\n  \n\t\n a\n" * 40],
}


@needs_native
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_native_equals_reference_pathological(name):
    texts = PATHOLOGICAL[name]
    assert fast.train(texts, 300) == bpe.train(texts, 300)


@needs_native
@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=8), st.integers(0, 80))
def test_native_equals_reference_hypothesis(texts, num_merges):
    assert fast.train(texts, num_merges) == bpe.train(texts, num_merges)


@needs_native
@pytest.mark.parametrize("pattern", [bpe.SPLIT_PATTERN, bpe.GPT4_SPLIT_PATTERN, r"\S+|\s+", r"."])
def test_native_equals_reference_patterns(pattern):
    texts = [MIXED, PROSE * 4]
    assert fast.train(texts, 400, pattern) == bpe.train(texts, 400, pattern)


@needs_native
@pytest.mark.parametrize("n_chars,num_merges,offset", [(300_000, 200, 0), (600_000, 1000, 3),
                                                      (1_000_000, 3000, 7)])
def test_native_equals_reference_gutenberg(n_chars, num_merges, offset):
    docs = mirror_gutenberg(n_chars, offset)
    if docs is None:
        pytest.skip("Gutenberg data mirror not found (set PICOCHAT_MIRROR)")
    assert fast.train(docs, num_merges) == bpe.train(docs, num_merges)


def test_fallback_without_native_core_warns_once_and_matches(monkeypatch):
    monkeypatch.setattr(fast, "_core", None)
    monkeypatch.setattr(fast, "_warned", False)
    monkeypatch.setattr(fast, "_IMPORT_ERROR", "simulated: not built")
    with pytest.warns(UserWarning, match="native BPE core unavailable"):
        merges = fast.train([PROSE], 50)
    assert merges == bpe.train([PROSE], 50)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_builtin_pattern_family_is_recognised(k):
    pattern = bpe.GPT4_SPLIT_PATTERN.replace(r"\p{N}{1,3}", rf"\p{{N}}{{1,{k}}}")
    assert fast.builtin_digits(pattern) == k
    assert fast.builtin_digits(r"\S+|\s+") == 0


@needs_native
@pytest.mark.parametrize("k", [1, 3])
def test_native_scanner_digit_runs(k):
    pattern = bpe.GPT4_SPLIT_PATTERN.replace(r"\p{N}{1,3}", rf"\p{{N}}{{1,{k}}}")
    texts = ["1234567 89 ٣٤٥٦ x²³ 12ab", PATHOLOGICAL["digits"][0]]
    assert fast.train(texts, 100, pattern) == bpe.train(texts, 100, pattern)


@needs_native
def test_native_many_batches_and_threads(monkeypatch):
    monkeypatch.setattr(fast, "BATCH_CHARS", 500)  # many small batches counted in the background
    texts = [PROSE[i:] + MIXED[: i * 3] for i in range(60)]
    expected = bpe.train(texts, 500)
    assert fast.train(texts, 500, n_threads=3) == expected
    assert fast.train(iter(texts), 500, n_threads=1) == expected


@needs_native
def test_native_long_documents_are_cut_safely():
    # Documents longer than 2 x 64 KiB are cut into pieces at "\n" + visible ASCII; the pieces
    # must split exactly as the whole document would. Fragments put every kind of character
    # next to newlines.
    import random

    rng = random.Random(0)
    fragments = ["\n", "\n\n", "\r\n", " \n", "\t\n", ".\n", "'s\n", "\u00a0\n", "\n ", "x", "ab", " cd",
                 "12", "!!", "?\n", "\n'", "\n1", "\nA", "\n.", "\n\u00e9", "   ", "\u3000", PROSE[:40], MIXED[:30]]
    texts = ["".join(rng.choice(fragments) for _ in range(60_000)) for _ in range(3)]
    assert min(len(t.encode()) for t in texts) > 3 * 65536
    assert fast.train(texts, 300, n_threads=2) == bpe.train(texts, 300)


TRICKY = "'sSſdDmMtTlLvVeErR \t\r\n\u00a0\u2003\u3000\x0b\x0c\x1c\x85aZé日1٣²½.,!?-_(😀\u200d\ufffd"


@needs_native
@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(TRICKY), max_size=40) | st.text(max_size=40), st.integers(1, 3))
def test_native_scanner_equals_regex_findall(text, k):
    pattern = bpe.GPT4_SPLIT_PATTERN.replace(r"\p{N}{1,3}", rf"\p{{N}}{{1,{k}}}")
    text = bpe.clean_text(text)
    chunks = fast._core.split(fast.class_ranges(), k, text.encode("utf-8"))
    assert [c.decode("utf-8") for c in chunks] == regex.findall(pattern, text)
