"""tasks/: every loader reads its real file format (fixtures written here, plus a few rows of the
real files when PICOCHAT_MIRROR is set), scorers extract answers, mixtures keep their proportions."""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
from pathlib import Path

import pytest

from picochat.common.errors import UserError
from picochat.tasks.arc import ARC, ARCChallenge, ARCEasy
from picochat.tasks.common import (
    Subset,
    Task,
    TaskMixture,
    TaskSequence,
    apportion,
    describe,
    extract_final_number,
    read_records,
    resolve_split_files,
    same_number,
)
from picochat.tasks.gsm8k import GSM8K, solution_parts
from picochat.tasks.humaneval import HumanEval, candidate_program, extract_code
from picochat.tasks.identity import Identity
from picochat.tasks.mmlu import MMLU
from picochat.tasks.smoltalk import ChitChat, SmolTalk
from picochat.tasks.spelling import SimpleSpelling, SpellingBee, spelled
from picochat.tokenizer.chat import ConversationError, content_text, validate_conversation

MIRROR = os.environ.get("PICOCHAT_MIRROR", "")
needs_mirror = pytest.mark.skipif(not MIRROR or not Path(MIRROR, "gsm8k").is_dir(),
                                  reason="PICOCHAT_MIRROR (shared/data) not set")


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def assert_valid(task: Task, n: int = 20) -> None:
    """The first n examples render: valid conversations that end with the assistant."""
    for i in range(min(n, len(task))):
        example = task[i]
        validate_conversation(example["messages"])
        assert example["messages"][-1]["role"] == "assistant"


# ----------------------------------------------------------------------------- GSM8K

GSM_ROWS = [
    {"question": "Weng earns $12 an hour. She worked 50 minutes. How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
               "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
    {"question": "A shop sells 1,200 pens a day. How many in 2 days?",
     "answer": "1,200 * 2 = <<1200*2=2400>>2,400 pens.\n#### 2,400"},
]


def test_gsm8k_calls_become_tool_parts(tmp_path):
    task = GSM8K("train", write_jsonl(tmp_path / "train.jsonl", GSM_ROWS), seed=None)
    assert len(task) == 2 and task.eval_type == "generative"
    ex = task[0]
    parts = ex["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "python", "python_output", "text", "python",
                                          "python_output", "text"]
    assert [p["text"] for p in parts if p["type"] == "python"] == ["12/60", "0.2*50"]
    # outputs are what the calculator tool prints ("10.0"), numerically the annotated results
    assert [p["text"] for p in parts if p["type"] == "python_output"] == ["0.2", "10.0"]
    # the text the assistant writes is the solution with the annotations removed
    text = "".join(p["text"] for p in parts if p["type"] == "text")
    assert text == re.sub(r"<<[^>]*>>", "", GSM_ROWS[0]["answer"])
    assert ex["answer"] == "10" and task[1]["answer"] == "2400"
    assert_valid(task)


def test_gsm8k_keeps_annotation_when_tool_disagrees():
    parts = solution_parts("So <<2+2=5>>5 apples.\n#### 5")
    assert parts[1:3] == [{"type": "python", "text": "2+2"}, {"type": "python_output", "text": "5"}]


def test_gsm8k_evaluate(tmp_path):
    task = GSM8K("test", write_jsonl(tmp_path / "test.jsonl", GSM_ROWS), seed=None)
    ex = task[1]
    assert task.evaluate(ex, "It is 2400.\n#### 2400")
    assert task.evaluate(ex, "#### 2,400.00")
    assert task.evaluate(ex, "#### 7\nno wait\n#### $2400")  # the last marker counts
    assert not task.evaluate(ex, "#### 2401")
    assert not task.evaluate(ex, "2400")  # no marker, no answer
    assert task.reward(ex, "#### 2400") == 1.0 and task.reward(ex, "") == 0.0


def test_gsm8k_reads_hf_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(GSM_ROWS), path)
    jsonl = GSM8K("train", write_jsonl(tmp_path / "train.jsonl", GSM_ROWS), seed=None)
    assert [GSM8K("train", path, seed=None)[i] for i in range(2)] == [jsonl[0], jsonl[1]]


def test_answer_extraction():
    assert extract_final_number("#### -3.5") == "-3.5"
    assert extract_final_number("#### 1,234,567") == "1234567"
    assert extract_final_number("nothing here") is None
    assert same_number("18", "18.00") and not same_number("18", None) and not same_number("18", "19")


# ----------------------------------------------------------------------------- MMLU / ARC

MMLU_ROWS = [
    {"question": "What is 2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "elementary_mathematics"},
    {"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo", "Bern"], "answer": 0,
     "subject": "geography"},
]


def test_mmlu_categorical(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl.gz", MMLU_ROWS, gz=True)
    task = MMLU("test", path, seed=None)
    ex = task[0]
    assert task.eval_type == "categorical" and ex["letters"] == ("A", "B", "C", "D")
    assert ex["answer"] == "B" == ex["messages"][1]["content"] == task.gold(ex)
    prompt = ex["messages"][0]["content"]
    assert "- 4=B\n" in prompt and prompt.startswith("Multiple choice question: What is 2+2?")
    assert task.evaluate(ex, "B") and task.evaluate(ex, " B\n") and not task.evaluate(ex, "A")
    assert len(MMLU("test", path, subjects=("geography",))) == 1
    assert_valid(task)


def test_arc_relabels_numeric_choices(tmp_path):
    rows = [
        {"question": "Which is a gas?", "choices": {"text": ["ice", "steam", "rock"], "label": ["1", "2", "3"]},
         "answerKey": "2"},
        {"question": "Which is alive?", "choices": {"text": ["a cat", "a car", "a cup", "a cap"],
                                                    "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
    ]
    path = write_jsonl(tmp_path / "ARC-Challenge-Test.jsonl", rows)
    task = ARCChallenge("test", path, seed=None)
    assert task.name == "arc_challenge" and task.eval_type == "categorical"
    first, second = task[0], task[1]
    assert first["letters"] == ("A", "B", "C") and first["answer"] == "B"
    assert "- steam=B" in first["messages"][0]["content"]
    assert second["answer"] == "A" and task.evaluate(second, "A") and not task.evaluate(second, "B")
    assert ARCEasy("test", path).name == "arc_easy"
    with pytest.raises(ValueError):
        ARC("ARC-Hard", "test", path)


# ----------------------------------------------------------------------------- HumanEval

HE_ROW = {"task_id": "HumanEval/0", "entry_point": "add",
          "prompt": "import math\n\n\ndef add(a: int, b: int) -> int:\n    \"\"\"Add two numbers.\"\"\"\n",
          "canonical_solution": "    return a + b\n",
          "test": "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}


def test_humaneval_format_and_program(tmp_path):
    task = HumanEval(write_jsonl(tmp_path / "HumanEval.jsonl.gz", [HE_ROW], gz=True))
    ex = task[0]
    assert ex["messages"][1]["content"] == HE_ROW["prompt"] + HE_ROW["canonical_solution"]
    program = candidate_program(ex, "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone.")
    assert program == "import math\n\ndef add(a, b):\n    return a + b\n"  # the tests run elsewhere
    assert extract_code("def f(): pass") == "def f(): pass"
    assert_valid(task)


def test_humaneval_evaluate_runs_tests(tmp_path):
    task = HumanEval(write_jsonl(tmp_path / "h.jsonl", [HE_ROW]), timeout=2.0)
    ex = task[0]
    assert task.evaluate(ex, ex["messages"][1]["content"])
    assert not task.evaluate(ex, "```python\ndef add(a, b):\n    return a - b\n```")
    assert not task.evaluate(ex, "def add(a, b):\n    while True: pass")


# ----------------------------------------------------------------------------- conversations

SMOL_ROWS = [
    {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello!"}], "source": "smol-magpie"},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}], "source": "x"},
    {"messages": [{"role": "assistant", "content": "I start"}], "source": "broken"},
]


def test_smoltalk_reads_parquet_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = tmp_path / "data"
    shards.mkdir()
    pq.write_table(pa.Table.from_pylist(SMOL_ROWS[:2]), shards / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(SMOL_ROWS[2:]), shards / "train-00001-of-00002.parquet")
    task = SmolTalk("train", shards, seed=None)
    assert len(task) == 3
    assert task[0]["messages"] == SMOL_ROWS[0]["messages"] and task[1]["messages"] == SMOL_ROWS[1]["messages"]
    with pytest.raises(ConversationError, match="message 0 is from assistant"):
        validate_conversation(task[2]["messages"])
    single = SmolTalk("train", shards / "train-00000-of-00002.parquet")
    assert len(single) == 2 and sorted(len(single[i]["messages"]) for i in range(2)) == [3, 4]
    with pytest.raises(UserError, match="messages"):
        pq.write_table(pa.table({"text": ["x"]}), tmp_path / "bad.parquet")
        SmolTalk("train", tmp_path / "bad.parquet")


def test_chitchat_split_and_filter(tmp_path):
    convs = [[{"role": "user", "content": f"hi {k}"}, {"role": "assistant", "content": f"hello {k}"}]
             for k in range(41)]
    convs[1] = [{"role": "user", "content": "dangling"}]  # ends with the user: dropped
    path = write_jsonl(tmp_path / "chitchat.jsonl.gz", convs, gz=True)
    train, test = ChitChat("train", path), ChitChat("test", path)
    assert len(test) == 3 and len(train) == 37 and train.skipped == 1
    train_texts = {t["messages"][0]["content"] for t in train}
    test_texts = {t["messages"][0]["content"] for t in test}
    assert test_texts == {"hi 0", "hi 20", "hi 40"} and not train_texts & test_texts
    assert_valid(train)


# ----------------------------------------------------------------------------- spelling

WORDS = ["strawberry", "banana", "apple", "mississippi", "rhythm", "a", "queue", "bookkeeper", "it's",
         "committee", "onomatopoeia", "zzz"] + [f"{c}{d}ord" for c in "bcdfgh" for d in "aeiou"]


@pytest.fixture()
def words_file(tmp_path) -> Path:
    path = tmp_path / "words_alpha.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(WORDS) + "\n")
    return path


def test_spellingbee(words_file):
    from picochat.sandbox import calculator

    train = SpellingBee("train", 200, words_file)
    test = SpellingBee("test", 50, words_file)
    assert train[7] == SpellingBee("train", 200, words_file)[7]  # deterministic
    for ex in list(train) + list(test):
        word, letter = ex["word"], ex["letter"]
        assert ex["answer"] == str(word.count(letter)) and word.isalpha() and len(word) >= 2
        parts = ex["messages"][1]["content"]
        call, output = parts[1], parts[2]
        # the tool call really computes the answer, and the output is what the tool prints
        assert call == {"type": "python", "text": f"'{word}'.count('{letter}')"}
        assert calculator(call["text"]) == output["text"] == ex["answer"]
        walk = parts[0]["text"]
        assert f"= {word.count(letter)}" in walk or word.count(letter) == 0
        assert train.evaluate(ex, content_text(parts)) and not train.evaluate(ex, "#### 99")
    # held-out words are never training words
    assert not {e["word"] for e in train} & {e["word"] for e in test}
    assert {e["word"] for e in test}
    assert_valid(train)


def test_simple_spelling(words_file):
    task = SimpleSpelling("train", 30, words_file)
    ex = task[3]
    assert ex["answer"] == spelled(ex["word"]) == "-".join(ex["word"])
    assert task.evaluate(ex, ex["messages"][1]["content"]) and not task.evaluate(ex, ex["word"])
    assert_valid(task)


# ----------------------------------------------------------------------------- identity, synthetic


def test_identity():
    task = Identity()
    assert len(task) == 48 and [task[i] for i in range(5)] == [Identity()[i] for i in range(5)]
    assert len({json.dumps(t["messages"]) for t in task}) > 30  # varied, not one conversation repeated
    for ex in task:
        assert all("picochat" in m["content"].lower() for m in ex["messages"] if m["role"] == "assistant")
    assert task.evaluate(task[0], "I am PicoChat.") and not task.evaluate(task[0], "I am ChatGPT.")
    assert_valid(task, 48)


def test_synthetic_word_problems():
    pytest.importorskip("picochat.data.synthetic")
    from picochat.sandbox import calculator
    from picochat.tasks.synthetic import SmallTalk, WordProblems

    train, test = WordProblems("train", 300), WordProblems("test", 100)
    for ex in list(train) + list(test):
        parts = ex["messages"][1]["content"]
        assert parts[1]["type"] == "python" and calculator(parts[1]["text"]) == parts[2]["text"] == ex["answer"]
        assert train.evaluate(ex, content_text(parts)) and not train.evaluate(ex, "#### -1")
    questions = lambda t: {e["messages"][0]["content"] for e in t}  # noqa: E731
    assert not questions(train) & questions(test)
    assert train[5] == WordProblems("train", 300)[5]
    assert_valid(train)
    assert_valid(SmallTalk("train", 50), 50)


# ----------------------------------------------------------------------------- combinators


class Numbers(Task):
    eval_type = "generative"

    def __init__(self, name: str, n: int):
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        i = self._check_index(i)
        return {"messages": [{"role": "user", "content": f"{self.name} {i}"},
                             {"role": "assistant", "content": str(i)}], "i": i}

    def evaluate(self, example: dict, reply: str) -> bool:
        return reply == f"{self.name}:{example['i']}"


def test_mixture_default_is_every_example_once_shuffled():
    a, b = Numbers("a", 30), Numbers("b", 70)
    mix = TaskMixture([a, b], seed=1)
    seen = [(ex["task"], ex["i"]) for ex in mix]
    assert sorted(seen) == sorted([("a", i) for i in range(30)] + [("b", i) for i in range(70)])
    assert seen[:30] != [("a", i) for i in range(30)]  # interleaved, not concatenated
    assert seen == [(ex["task"], ex["i"]) for ex in TaskMixture([a, b], seed=1)]
    assert seen != [(ex["task"], ex["i"]) for ex in TaskMixture([a, b], seed=2)]


@pytest.mark.parametrize("weights, size", [([1, 1], 200), ([0.7, 0.2, 0.1], 1000), ([3, 0, 1], 10), ([1, 2], None)])
def test_mixture_proportions_are_as_configured(weights, size):
    tasks = [Numbers(n, k) for n, k in zip("xyz", (10, 500, 40))][: len(weights)]
    mix = TaskMixture(tasks, weights, size=size, seed=0)
    total = sum(len(t) for t in tasks) if size is None else size
    counts = collections.Counter(ex["task"] for ex in mix)
    want = apportion(total, weights)
    assert len(mix) == total and [counts.get(t.name, 0) for t in tasks] == want
    for got, w in zip(want, weights):
        assert abs(got - total * w / sum(weights)) < 1
    # an oversampled task repeats its examples evenly: each pass covers all of them once
    per_example = collections.Counter(ex["i"] for ex in mix if ex["task"] == "x")
    if want[0]:
        assert max(per_example.values()) - min(per_example.values()) <= 1 and len(per_example) == min(10, want[0])
    assert describe(mix)["counts"] == {t.name: c for t, c in zip(tasks, want)}


def test_mixture_evaluate_delegates_and_errors():
    mix = TaskMixture([Numbers("a", 3), Numbers("b", 3)], seed=0)
    ex = mix[0]
    assert mix.evaluate(ex, f"{ex['task']}:{ex['i']}") and not mix.evaluate(ex, "nope")
    assert mix.reward(ex, f"{ex['task']}:{ex['i']}") == 1.0
    with pytest.raises(UserError):
        TaskMixture([Numbers("a", 3)], [1, 2])
    with pytest.raises(UserError):
        TaskMixture([Numbers("a", 3)], [0])
    with pytest.raises(UserError):
        TaskMixture([Numbers("a", 0)])
    with pytest.raises(IndexError):
        mix[6]
    assert mix[-1] == mix[5]


def test_sequence_and_subset():
    seq = TaskSequence([Numbers("a", 2), Numbers("b", 3)])
    assert [(e["task"], e["i"]) for e in seq] == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)]
    sub = Subset(Numbers("c", 10), 2, 8, 3)
    assert [e["i"] for e in sub] == [2, 5] and sub.name == "c"
    assert [e["i"] for e in Subset(Numbers("c", 4), 0, 100)] == [0, 1, 2, 3]


def test_read_records_and_missing_file(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps([{"a": 1}]))
    assert read_records(tmp_path / "x.json") == [{"a": 1}]
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="bad.jsonl"):
        read_records(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        resolve_split_files("gsm8k", "train", tmp_path / "nope.jsonl")
    with pytest.raises(UserError):
        resolve_split_files("gsm8k", "train", mirror=str(tmp_path))


# ----------------------------------------------------------------------------- the real files


@needs_mirror
def test_real_files_through_the_mirror():
    tasks = [GSM8K("train", mirror=MIRROR), GSM8K("test", mirror=MIRROR), MMLU("test", mirror=MIRROR),
             ARCEasy(mirror=MIRROR), ARCChallenge(mirror=MIRROR), HumanEval(mirror=MIRROR),
             ChitChat("train", mirror=MIRROR), SpellingBee("train", 50, mirror=MIRROR),
             SimpleSpelling("test", 50, mirror=MIRROR)]
    sizes = [len(t) for t in tasks[:6]]
    assert sizes == [7473, 1319, 14042, 2376, 1172, 164]
    for t in tasks:
        assert_valid(t, 5)
    gsm = tasks[1]
    ex = gsm[0]
    assert gsm.evaluate(ex, content_text(ex["messages"][1]["content"]))
    for cat in tasks[2:5]:
        ex = cat[0]
        assert ex["answer"] in ex["letters"] and cat.evaluate(ex, ex["answer"])


@needs_mirror
def test_real_humaneval_canonical_solutions_pass():
    task = HumanEval(mirror=MIRROR)
    for i in range(3):
        ex = task[i]
        assert task.evaluate(ex, ex["messages"][1]["content"]), ex["task_id"]


# ----------------------------------------------------------------------------- registry


def test_registry_specs():
    from picochat.tasks.registry import make_mixture, make_task, task_names

    assert {"gsm8k", "mmlu", "arc_easy", "arc_challenge", "humaneval", "smoltalk", "spellingbee"} <= set(task_names())
    ident = make_task("identity:test:10")
    assert len(ident) == 10 and ident.name == "identity"
    assert ident[0] != make_task("identity:train:10")[0] or ident[1] != make_task("identity:train:10")[1]
    mix = make_mixture("identity:train:10*2, wordproblems:train:30, smalltalk:train:40*0.5", seed=3)
    counts = collections.Counter(ex["task"] for ex in mix)
    assert counts == {"identity": 20, "wordproblems": 30, "smalltalk": 20}
    per_conv = collections.Counter(json.dumps(ex["messages"]) for ex in mix if ex["task"] == "identity")
    once = collections.Counter(json.dumps(ex["messages"]) for ex in make_task("identity:train:10"))
    assert per_conv == {c: 2 * k for c, k in once.items()}  # exactly two passes over the 10 conversations
    assert len(make_mixture("identity:train:10, smalltalk:train:40", size=25)) == 25
    for bad, msg in [("gsm9k", "did you mean 'gsm8k'"), ("identity:train:x", "whole number"),
                     ("gsm8k:dev", "split"), ("a:b:c:d", "unknown task spec")]:
        with pytest.raises(UserError, match=msg):
            make_task(bad, mirror="/nonexistent")
    with pytest.raises(UserError, match="number"):
        make_mixture("identity*two")


@needs_mirror
def test_registry_file_tasks_through_the_mirror():
    from picochat.tasks.registry import make_task

    capped = make_task("gsm8k:test:5", mirror=MIRROR)
    assert len(capped) == 5 and capped[0] == GSM8K("test", mirror=MIRROR)[0]
    assert len(make_task("arc-easy", mirror=MIRROR)) == 2376
