"""The embedded corpus: deterministic, held-out splits disjoint, facts consistent, problems correct."""

import random
import re

from picochat.data import synthetic as S
from picochat.data.corpus import iter_documents


def test_chunks_are_deterministic_and_sized():
    a, b = S.chunk("train", 7), S.chunk("train", 7)
    assert a == b and len(a) == S.DOCS_PER_CHUNK
    assert S.chunk("train", 8) != a
    lengths = [len(d) for i in range(20) for d in S.chunk("train", i)]
    assert 100 <= min(lengths) and max(lengths) <= 1200
    assert 400 <= sum(lengths) / len(lengths) <= 900
    words = {w.lower() for i in range(100) for d in S.chunk("train", i) for w in re.findall(r"[A-Za-z]+", d)}
    assert len(words) > 1000  # enough distinct words for a BPE vocabulary of a few thousand tokens


def test_val_documents_disjoint_from_train():
    train = {d for i in range(40) for d in S.chunk("train", i)}
    val = set(iter_documents("synthetic", "val"))
    assert len(val) == S.NUM_CHUNKS["val"] * S.DOCS_PER_CHUNK
    assert not train & val


def test_world_facts_are_consistent_across_documents():
    text = "\n".join(d for i in range(30) for d in S.chunk("train", i))
    lives = re.findall(r"\b([A-Z][a-z]+) lives in ([A-Z][a-z]+(?: [A-Z][a-z]+)?)\.", text)
    colours = re.findall(r"\b([A-Z][a-z]+)'s favourite colour is (\w+)\.", text)
    assert len(lives) > 50 and len(colours) > 50
    assert all(S.WORLD[name].town == town for name, town in lives)
    assert all(S.WORLD[name].colour == colour for name, colour in colours)
    older = re.findall(r"so ([A-Z][a-z]+) is older than ([A-Z][a-z]+)\.", text)
    assert len(older) > 5 and all(S.WORLD[a].age > S.WORLD[b].age for a, b in older)
    spelled = re.findall(r"The word (\w+) is spelled ([a-z-]+)\.", text)
    assert spelled and all(w == s.replace("-", "") for w, s in spelled)


def test_word_problems_are_correct_and_partitioned():
    rng = random.Random(0)
    for split in ("train", "val"):
        for _ in range(300):
            p = S.word_problem(rng, split)
            assert eval(p.expression, {"__builtins__": {}}) == p.answer  # noqa: S307 - our own digits and + - *
            assert 0 <= p.answer <= 1000
            assert f"= {p.answer}," in p.solution or p.solution.endswith(f"= {p.answer}.")
            assert S.problem_split(p) == split


def test_corpus_only_contains_train_problems():
    text = "\n".join(d for i in range(60) for d in S.chunk("train", i))
    questions = re.findall(r"Problem \d+: (.*?) Answer: ", text)
    assert len(questions) > 100
    for q in questions:
        assert S.problem_split(S.WordProblem(q, "", 0)) == "train"


def test_small_talk_alternates_roles():
    rng = random.Random(1)
    for _ in range(100):
        msgs = S.small_talk(rng)
        assert len(msgs) % 2 == 0 and len(msgs) >= 2
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)
        assert all(m["content"] for m in msgs)
