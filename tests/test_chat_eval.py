"""Chat evaluation: letter scoring against hand-set logits, padding invariance on a real GPT,
generative pass@k / pass@1 through the engine against naive greedy decoding, ChatCORE by hand,
merging of chat.json, and `picochat eval chat|samples` on a tiny saved model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers.tiny import random_gpt, save_run

from picochat.eval import chat
from picochat.model.gpt import GPT
from picochat.tasks.common import CategoricalTask, Task, render_choices
from picochat.tokenizer.chat import render_for_completion
from picochat.tokenizer.tokenizer import SPECIAL_TOKENS, Tokenizer

pytestmark = pytest.mark.timeout(300)

TEXT = ("Multiple choice question: which is a fruit? - apple=A - stone=B - cloud=C - chair=D "
        "Answer with the letter of the correct choice only. What is 6 times 7? It is 42. ") * 20


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train([TEXT], vocab_size=300, native=False)


class Questions(CategoricalTask):
    """Fixed multiple-choice examples (lengths and letter counts differ, so batches are padded)."""

    name = "fixture_mc"

    def __init__(self, rows: list[tuple[str, list[str], str]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        question, choices, gold = self.rows[self._check_index(i)]
        letters = tuple("ABCDE"[:len(choices)])
        return {"messages": [{"role": "user", "content": render_choices(question, letters, choices)},
                             {"role": "assistant", "content": gold}], "letters": letters, "answer": gold}


ROWS = [
    ("which is a fruit?", ["apple", "stone", "cloud", "chair"], "A"),
    ("what is 6 times 7? think about it carefully before answering", ["41", "42", "43"], "B"),
    ("pick C", ["x", "y", "z", "w"], "C"),
    ("which is largest?", ["1", "2", "3", "4", "5"], "E"),
    ("a", ["p", "q"], "A"),
]


class TableModel(torch.nn.Module):
    """Logits set by hand at each prompt's answer position (its last token). Every other
    position, padding included, holds the reversed preferences, so reading the wrong position
    gives a different pick; a row that is no known prompt plus padding is an error."""

    def __init__(self, table: dict[tuple[int, ...], torch.Tensor], pad: int):
        super().__init__()
        self.table, self.pad = table, pad
        self.calls = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        B, T = idx.shape
        V = next(iter(self.table.values())).numel()
        out = torch.zeros(B, T, V)
        for b in range(B):
            row = idx[b].tolist()
            matches = [p for p in self.table if tuple(row[:len(p)]) == p and set(row[len(p):]) <= {self.pad}]
            assert len(matches) == 1, "a row that is not a known prompt"
            p = max(matches, key=len)
            out[b, :] = -self.table[p]
            out[b, len(p) - 1] = self.table[p]
        return out


def letter_logits(tok, picks: dict[str, float], V: int) -> torch.Tensor:
    v = torch.zeros(V)
    for letter, value in picks.items():
        v[tok.encode(letter)[0]] = value
    return v


def test_letters_are_scored_at_the_answer_position_among_the_choices(tok):
    task = Questions(ROWS)
    V = tok.vocab_size
    prompts = [tuple(render_for_completion(tok, task[i]["messages"][:1])) for i in range(len(task))]
    hand = [
        {"A": 2.0, "B": 1.0, "C": 0.5, "D": -1.0},          # A: right
        {"A": 0.1, "B": 0.3, "C": 0.2, "D": 9.0},           # D is not a choice here: B, right
        {"A": 1.0, "B": 3.0, "C": 2.9, "D": 0.0},           # B: wrong (gold C)
        {"A": 0.0, "B": 0.0, "C": 0.0, "D": 1.0, "E": 1.5},  # E: right (5 choices)
        {"A": 1.0, "B": 1.0},                                # tie: the first letter, A: right
    ]
    table = {p: letter_logits(tok, h, V) for p, h in zip(prompts, hand)}
    for p in table.values():
        p[tok.encode(" ")[0]] = 50.0  # a non-letter token with the highest logit must be ignored
    model = TableModel(table, pad=tok.bos_id)
    picks, cropped = chat.categorical_picks(model, tok, [task[i] for i in range(5)])
    assert picks == ["A", "B", "B", "E", "A"] and cropped == 0
    for bs in (1, 2, 5):
        model.calls = 0
        r = chat.evaluate_categorical(model, tok, task, list(range(5)), batch_size=bs)
        assert (r.passed, r.total, r.accuracy) == (4, 5, 0.8)
        assert model.calls == -(-5 // bs)
    # the chance baseline of a task nanochat does not name: mean of 1/letters
    assert r.baseline == pytest.approx((1 / 4 + 1 / 3 + 1 / 4 + 1 / 5 + 1 / 2) / 5)


def test_ranks_share_the_problems(tok):
    task = Questions(ROWS)
    prompts = [tuple(render_for_completion(tok, task[i]["messages"][:1])) for i in range(5)]
    table = {p: letter_logits(tok, {"A": 1.0}, tok.vocab_size) for p in prompts}  # always picks A
    model = TableModel(table, pad=tok.bos_id)
    parts = [chat.evaluate_task(task, model, tok, batch_size=2, rank=r, world_size=2) for r in (0, 1)]
    assert [p.total for p in parts] == [3, 2]  # batches {0,1},{4} and {2,3}
    assert sum(p.passed for p in parts) == 2  # examples 0 and 4 have gold A
    capped = chat.evaluate_task(task, model, tok, max_problems=3)
    assert (capped.passed, capped.total) == (1, 3)


def test_batched_padded_picks_equal_one_prompt_at_a_time_on_a_real_gpt(tok):
    task = Questions(ROWS)
    model = random_gpt(tok.vocab_size, seq_len=128)
    examples = [task[i] for i in range(len(task))]
    picks, _ = chat.categorical_picks(model, tok, examples)
    for ex, pick in zip(examples, picks):
        ids = render_for_completion(tok, ex["messages"][:1])
        with torch.no_grad():
            last = model(torch.tensor([ids]))[0, -1]
        letter_ids = [tok.encode(c)[0] for c in ex["letters"]]
        assert pick == ex["letters"][int(torch.stack([last[i] for i in letter_ids]).argmax())]


def test_long_prompts_keep_their_last_tokens(tok):
    task = Questions(ROWS)
    ex = task[1]
    full = render_for_completion(tok, ex["messages"][:1])
    keep = len(full) - 7
    table = {tuple(full[-keep:]): letter_logits(tok, {"B": 1.0}, tok.vocab_size)}
    picks, cropped = chat.categorical_picks(TableModel(table, tok.bos_id), tok, [ex], max_len=keep)
    assert picks == ["B"] and cropped == 1


class NoTools(GPT):
    """A real GPT that never writes a special token other than <|assistant_end|> (so its greedy
    reply is plain text, which the test can decode by hand)."""

    banned: list[int] = []

    def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
        logits = super().forward(idx, kv_cache=kv_cache)
        logits[..., self.banned] = float("-inf")
        return logits


class Scripted(Task):
    """Generative: sample j of example k passes iff OUTCOMES[k][j] (counted in call order), and
    every reply is recorded so the test can check it is the engine's text."""

    name = "fixture_gen"
    eval_type = "generative"
    QUESTIONS = ["What is 6 times 7?", "Which is a fruit?", "Hello", "Answer with the letter."]

    def __init__(self, outcomes: list[list[bool]]):
        self.outcomes, self.calls, self.replies = outcomes, [0] * len(outcomes), {}

    def __len__(self) -> int:
        return len(self.outcomes)

    def __getitem__(self, i: int) -> dict:
        return {"messages": [{"role": "user", "content": self.QUESTIONS[i]}], "k": i}

    def evaluate(self, example: dict, reply: str) -> bool:
        k = example["k"]
        self.replies.setdefault(k, []).append(reply)
        j = self.calls[k]
        self.calls[k] += 1
        return self.outcomes[k][j]


def naive_greedy_text(model, tok, prompt: list[int], steps: int) -> str:
    ids, out, end = list(prompt), [], tok.special_id("<|assistant_end|>")
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            if nxt == end:
                break
            out.append(nxt)
            ids.append(nxt)
    return tok.decode(out)


def test_generative_pass_at_k_and_pass_at_1_through_the_engine(tok):
    from picochat.engine.engine import Engine

    NoTools.banned = [tok.special_id(s) for s in SPECIAL_TOKENS if s != "<|assistant_end|>"]
    model = random_gpt(tok.vocab_size, seq_len=128, cls=NoTools)
    engine = Engine(model, tok, tool=None)
    # greedy, one sample: problems 0 and 2 pass
    task = Scripted([[True], [False], [True], [False]])
    r = chat.evaluate_generative(engine, tok, task, [0, 1, 2, 3], max_new_tokens=12, max_rows=2)
    assert (r.passed, r.total, r.correct_samples, r.accuracy, r.pass1) == (2, 4, 2, 0.5, 0.5)
    for k in range(4):
        prompt = render_for_completion(tok, task[k]["messages"])
        assert task.replies[k] == [naive_greedy_text(model, tok, prompt, 12)]
    assert any(len(task.replies[k][0]) > 3 for k in range(4))  # real replies, not empty strings
    # three samples each: problem 0 passes once, 1 never, 2 always, 3 twice -> pass@3 3/4, pass@1 6/12
    task = Scripted([[True, False, False], [False] * 3, [True] * 3, [False, True, True]])
    r = chat.evaluate_generative(engine, tok, task, [0, 1, 2, 3], num_samples=3, temperature=1.0,
                                 max_new_tokens=8, max_rows=4)
    assert (r.passed, r.total, r.correct_samples, r.num_samples) == (3, 4, 6, 3)
    assert (r.accuracy, r.pass1) == (0.75, 0.5)
    assert task.calls == [3, 3, 3, 3]


def test_policy_eval_by_hand(tok):
    """RL's held-out numbers (evaluate_policy) from the one generative evaluator: per-problem passing
    samples, pass@1 and its standard error over problems, pass@k, mean reward and reply length."""
    from picochat.config import GRPOConfig
    from picochat.engine.engine import Engine

    NoTools.banned = [tok.special_id(s) for s in SPECIAL_TOKENS if s != "<|assistant_end|>"]
    engine = Engine(random_gpt(tok.vocab_size, seq_len=128, cls=NoTools), tok, tool=None)
    task = Scripted([[True, False, False], [False] * 3, [True] * 3, [False, True, True]])
    rl = GRPOConfig(eval_problems=4, pass_k=3, max_new_tokens=8, eval_temperature=1.0, top_k=0, max_rows=4)
    r = chat.evaluate_policy(engine, task, rl, seed=0)
    assert (r["correct"], r["problems"], r["k"]) == ([1, 0, 3, 2], 4, 3)
    assert (r["pass@1"], r["pass@k"], r["mean_reward"]) == (0.5, 0.75, 0.5)
    p1 = [1 / 3, 0, 1, 2 / 3]
    assert r["pass@1_stderr"] == pytest.approx((sum(x * x for x in p1) / 4 - 0.25) ** 0.5 / 2)
    assert 1 <= r["mean_length"] <= 8


def test_fit_prompt_keeps_the_end_and_room_for_the_reply():
    """The one cropping rule of sampled evals and RL rollouts (engine.py: fit_prompt)."""
    from picochat.engine.engine import fit_prompt

    prompt = list(range(100))
    assert fit_prompt(prompt, 64, 8) == prompt[-56:]      # room for the 8 reply tokens
    assert fit_prompt(prompt, 64, 40) == prompt[-48:]     # the reply's room is at most a quarter
    assert fit_prompt(prompt[:20], 64, 40) == prompt[:20]  # a prompt that fits is kept whole


def test_chatcore_by_hand():
    accs = {"arc_easy": 0.55, "arc_challenge": 0.40, "mmlu": 0.25, "gsm8k": 0.10, "humaneval": 0.05,
            "wordproblems": 0.9}  # not a ChatCORE task: ignored
    label, value = chat.chatcore(accs)
    assert label == "ChatCORE"
    assert value == pytest.approx((0.30 / 0.75 + 0.15 / 0.75 + 0.0 + 0.10 + 0.05) / 5)
    label, value = chat.chatcore({"mmlu": 0.20, "gsm8k": 0.3})
    assert label == "ChatCORE-2" and value == pytest.approx((-0.05 / 0.75 + 0.3) / 2)
    assert chat.chatcore({"wordproblems": 1.0}) is None


def test_merge_replaces_tasks_and_recomputes_chatcore(tmp_path):
    path = tmp_path / "chat.json"
    first = chat.merge_results(path, {"stage": "sft", "tasks": {"mmlu": {"accuracy": 0.5}, "gsm8k": {"accuracy": 0.1}}})
    path.write_text(json.dumps(first))
    merged = chat.merge_results(path, {"stage": "sft", "tasks": {"mmlu": {"accuracy": 0.25}}})
    assert merged["tasks"] == {"mmlu": {"accuracy": 0.25}, "gsm8k": {"accuracy": 0.1}}
    assert merged["chatcore"] == {"metric": "ChatCORE-2", "score": pytest.approx(0.05)}


@pytest.fixture
def saved_run(tmp_path, tok):
    """A run directory with a tokenizer and a tiny (random) finished SFT model."""
    return tmp_path, save_run(tmp_path, tok, random_gpt(tok.vocab_size, seq_len=256), run="tiny", stage="sft").parent


def test_cli_eval_chat_and_samples_write_their_files(saved_run, capsys):
    from picochat.cli import main

    home, run = saved_run
    args = ["--run", "tiny", "--home", str(home), "--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        main(["eval", "chat", *args, "--task", "wordproblems:test:3", "--max-new-tokens", "6", "--batch-size", "2"])
    assert e.value.code == 0
    record = json.loads((run / "sft" / "eval" / "chat.json").read_text())
    wp = record["tasks"]["wordproblems"]
    assert (wp["total"], wp["eval_type"], wp["spec"]) == (3, "generative", "wordproblems:test:3")
    assert record["chatcore"] is None
    with pytest.raises(SystemExit) as e:
        main(["eval", "samples", *args, "--stage", "sft", "--max-tokens", "5"])
    assert e.value.code == 0
    samples = json.loads((run / "sft" / "eval" / "samples.json").read_text())["samples"]
    assert len(samples) == 8 and samples[0]["prompt"] == "The capital of France is"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["eval", "chat", *args, "--task", "no_such_task"])
    assert e.value.code != 0 and "unknown task spec" in capsys.readouterr().err
    # a task that cannot be loaded is skipped when others can run
    with pytest.raises(SystemExit) as e:
        main(["eval", "chat", *args, "--task", "wordproblems:test:2, no_such_task", "--max-new-tokens", "4"])
    assert e.value.code == 0 and "skipping no_such_task" in capsys.readouterr().out
    assert json.loads((run / "sft" / "eval" / "chat.json").read_text())["tasks"]["wordproblems"]["total"] == 2


def test_default_tasks():
    assert chat.default_tasks("demo") == "wordproblems:test:100"
    assert [s.split(":")[0] for s in chat.default_tasks("d20").split(",")] == list(chat.CHATCORE_TASKS)


MIRROR = os.environ.get("PICOCHAT_MIRROR", "")


@pytest.mark.skipif(not MIRROR or not Path(MIRROR, "mmlu").is_dir() or not Path(MIRROR, "arc").is_dir(),
                    reason="PICOCHAT_MIRROR (shared/data) not set")
@pytest.mark.parametrize("spec", ["mmlu:test:12", "arc_challenge:test:12"])
def test_real_multiple_choice_files(tok, spec):
    """Real MMLU / ARC prompts (long ones cropped to a small context) through the letter scorer:
    the batched result equals scoring each prompt alone."""
    from picochat.eval.core import model_max_len
    from picochat.tasks.registry import make_task

    task = make_task(spec, mirror=MIRROR)
    model = random_gpt(tok.vocab_size, seq_len=64)
    r = chat.evaluate_task(task, model, tok, batch_size=5)
    assert r.total == 12 and r.baseline == 0.25 and r.cropped > 0
    alone = sum(chat.evaluate_categorical(model, tok, task, [i], max_len=model_max_len(model)).passed
                for i in range(12))
    assert r.passed == alone
