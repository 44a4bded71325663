"""Grading model-written code (picochat/sandbox/grading.py): the verdict is decided outside the
reply's reach. Every cheating reply of tests/helpers/cheats.py fails real HumanEval problems,
the canonical solutions pass, an RL run whose policy emits the cheats rewards them 0, and evals
and RL refuse a sandbox below the required isolation unless --unsafe-sandbox."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from helpers.cheats import CHEATS, cheat_reply
from helpers.tiny import save_run, tiny_gpt

from picochat.cli import main as cli_main
from picochat.config import GRPOConfig, TrainConfig
from picochat.eval import report
from picochat.sandbox import codec, grade_function, jail
from picochat.sandbox.grading import decide
from picochat.tasks.common import Subset, Task
from picochat.tasks.humaneval import HumanEval

pytestmark = pytest.mark.timeout(300)
MIRROR = os.environ.get("PICOCHAT_MIRROR", "")
needs_mirror = pytest.mark.skipif(not MIRROR or not Path(MIRROR, "humaneval").is_dir(),
                                  reason="PICOCHAT_MIRROR (shared/data with humaneval/) not set")
# float tolerance checks (0, 32: math.fabs), the entry point called by name (33), seeded random (53)
PROBLEMS = ("HumanEval/0", "HumanEval/32", "HumanEval/33", "HumanEval/53")


# ----------------------------------------------------------------------------- the codec


@pytest.mark.parametrize("value", [None, True, 0, -7, 10**40, 1.5, float("inf"), -0.0, 2 + 3j, "héllo", b"\x00\xff",
                                   [1, [2, (3, "x")]], (1,), {"a": [1.0], (1, 2): None}, {1, 2}, frozenset({"z"})])
def test_codec_round_trips_exact_builtins(value):
    back = codec.decode(codec.encode(value))
    assert back == value and type(back) is type(value)


def test_codec_refuses_anything_but_exact_builtins():
    class Eq(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    for bad in (Eq(1), [Eq(1)], object(), {"k": lambda: 1}, type("L", (list,), {})()):
        with pytest.raises(codec.CodecError):
            codec.encode(bad)
    deep: list = []
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(codec.CodecError):
        codec.encode(deep)


@pytest.mark.parametrize("msg", [["i", 5], ["x"], [], "s", ["d", [[["l", []], ["N"]]]], ["b", "true"],
                                 ["f", "nope"], ["t", [["s"]]], ["i", "1" * 5000]])
def test_codec_rejects_malformed_messages(msg):
    with pytest.raises(codec.CodecError):
        codec.decode(msg)


def test_frames_are_length_checked():
    def reader(data: bytes):  # like os.read on a pipe: at most n bytes, here at most 3 at a time
        stream = io.BytesIO(data)
        return lambda n: stream.read(min(n, 3))

    data = codec.dumps(["ret", "id", codec.encode([1, 2])])
    assert codec.read_frame(reader(data)) == ["ret", "id", ["l", [["i", "1"], ["i", "2"]]]]
    assert codec.read_frame(reader(b"")) is None  # a clean end
    with pytest.raises(codec.CodecError):
        codec.read_frame(reader((codec.MAX_FRAME + 1).to_bytes(4, "big")))
    with pytest.raises(codec.CodecError):  # cut inside a message
        codec.read_frame(reader(data[:-1]))


# ----------------------------------------------------------------------------- the verdict


def test_only_the_checkers_line_for_this_nonce_is_a_pass():
    ok = jail.SandboxResult("ok", isolation=("a", "b"))
    assert decide(b"PASS n0nce 3\n", "n0nce", ok, ok).passed
    for line in (b"PASS other 3\n", b"PASS n0nce\n", b"PASS n0nce x\n", b"", b"ok\n"):
        assert not decide(line, "n0nce", ok, ok).passed, line
    crashed = jail.SandboxResult("error", error="AssertionError")
    assert not decide(b"PASS n0nce 3\n", "n0nce", crashed, ok).passed  # a PASS needs a clean checker too


SIMPLE = {"prompt": "def add(a: int, b: int) -> int:\n    \"\"\"Add.\"\"\"\n", "entry_point": "add",
          "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}


def _grade(code: str, problem: dict = SIMPLE, **kw):
    return grade_function(code, entry_point=problem["entry_point"], prompt=problem["prompt"], test=problem["test"],
                          timeout=kw.pop("timeout", 5.0), **kw)


def test_right_and_wrong_functions():
    v = _grade("def add(a, b):\n    return a + b\n")
    assert v.passed and v.calls == 2 and jail.unmet_requirements(v.isolation) == [], v
    assert not _grade("def add(a, b):\n    return a - b\n").passed
    assert "NameError" in _grade("def plus(a, b):\n    return a + b\n").reason  # wrong name
    assert not _grade("def add(a, b):\n    while True:\n        pass\n", timeout=2.0).passed


def test_values_keep_their_exact_type():
    """5.0 arrives as a float (== 5 holds, as in-process), and a test that checks the type sees it."""
    assert _grade("def add(a, b):\n    return float(a + b)\n").passed
    problem = dict(SIMPLE, test="def check(candidate):\n    assert type(candidate(2, 3)) is int\n")
    assert _grade("def add(a, b):\n    return a + b\n", problem).passed
    assert not _grade("def add(a, b):\n    return float(a + b)\n", problem).passed
    assert not _grade("class I(int):\n    pass\ndef add(a, b):\n    return I(a + b)\n", problem).passed


def test_exceptions_cross_by_name_and_tests_that_expect_them_pass():
    problem = dict(SIMPLE, test=("def check(candidate):\n    try:\n        candidate(1, None)\n"
                                 "    except TypeError:\n        return\n    assert False\n"))
    assert _grade("def add(a, b):\n    return a + b\n", problem).passed


@pytest.mark.parametrize("layers", [{"namespaces": False}, {"namespaces": False, "landlock": False}])
def test_the_verdict_does_not_rest_on_the_isolation_layers(layers):
    """Where namespaces (or Landlock too) are missing, the grader still cannot be fooled: the
    verdict comes from the separate checker process, whatever the candidate's process does."""
    assert _grade("def add(a, b):\n    return a + b\n", **layers).passed
    for cheat in ("exit0_os", "always_equal", "settrace_exit", "redefine_check", "excepthook_exit0",
                  "write_result_fds", "fake_pass_marker"):
        assert not _grade(CHEATS[cheat].replace("{entry}", "add"), **layers).passed, cheat


def test_a_check_that_never_calls_the_candidate_is_no_pass():
    problem = dict(SIMPLE, test="def check(candidate):\n    pass\n")
    v = _grade("def add(a, b):\n    return a + b\n", problem)
    assert not v.passed and "never called" in v.reason


def test_arguments_the_candidate_mutates_stay_the_checkers():
    problem = {"prompt": "def f(xs):\n    pass\n", "entry_point": "f",
               "test": ("def check(candidate):\n    xs = [3, 1]\n    assert candidate(xs) == [1, 3]\n"
                        "    assert xs == [3, 1]\n")}
    assert _grade("def f(xs):\n    xs.sort()\n    return xs\n", problem).passed


# ----------------------------------------------------------------------------- real HumanEval


@pytest.fixture(scope="module")
def humaneval() -> HumanEval:
    if not MIRROR or not Path(MIRROR, "humaneval").is_dir():
        pytest.skip("PICOCHAT_MIRROR (shared/data with humaneval/) not set")
    return HumanEval(mirror=MIRROR, timeout=5.0)


@pytest.fixture(scope="module")
def problems(humaneval) -> list[dict]:
    by_id = {humaneval[i]["task_id"]: humaneval[i] for i in range(len(humaneval))}
    return [by_id[t] for t in PROBLEMS]


def test_canonical_solutions_pass(humaneval, problems):
    for ex in problems:
        v = humaneval.grade(ex, "```python\n" + ex["messages"][1]["content"] + "```")
        assert v.passed and v.calls > 0, (ex["task_id"], v.reason)


@pytest.mark.parametrize("cheat", list(CHEATS))
def test_cheating_reply_fails_real_problems(cheat, humaneval, problems):
    if cheat == "kill_parent" and not {"pidns", "landlock-signal", "audit-hook"} & set(jail.probe().isolation):
        pytest.skip("nothing here would stop the reply from killing this test run")
    for ex in problems:
        v = humaneval.grade(ex, cheat_reply(cheat, ex["entry_point"]))
        assert not v.passed, (cheat, ex["task_id"])


# ----------------------------------------------------------------------------- RL


class Recording(Task):
    """A task that records every (reply, reward) the RL stage asks it for."""

    def __init__(self, task: Task):
        self.task, self.name, self.eval_type, self.seen = task, task.name, task.eval_type, []

    def __len__(self) -> int:
        return len(self.task)

    def __getitem__(self, i: int) -> dict:
        return self.task[i]

    def evaluate(self, example: dict, reply: str) -> bool:
        return self.task.evaluate(example, reply)

    def reward(self, example: dict, reply: str) -> float:
        r = self.task.reward(example, reply)
        self.seen.append((example["task_id"], reply, r))
        return r


@pytest.fixture(scope="module")
def tok():
    """Trained on a line of Python, so HumanEval prompts and the cheating replies stay short."""
    from picochat.tokenizer.tokenizer import Tokenizer

    return Tokenizer.train(["def f(x):\n    return x + 1\n" * 50], vocab_size=300, native=False)


def test_rl_policy_emitting_cheats_gets_reward_zero(humaneval, tok, tmp_path):
    """One real RL step (rollouts, rewards, advantages, policy-gradient update) on two HumanEval
    problems, with a policy that emits every cheating reply and the canonical solution."""
    from picochat.engine.engine import Completion, Engine
    from picochat.train import rl
    from picochat.train.trainer import Trainer

    task = Recording(Subset(humaneval, 0, 2))
    model = tiny_gpt(tok.vocab_size, seq_len=256)
    grpo = GRPOConfig(prompts_per_step=2, samples_per_prompt=len(CHEATS) + 1, max_new_tokens=64, eval_problems=1,
                      pass_k=2, max_rows=64)
    replies_of = {}
    for i in range(len(task)):
        ex = task[i]
        prompt = tuple(rl.reply_prompt(tok, ex, model.config.sequence_len, grpo.max_new_tokens))
        replies_of[prompt] = [cheat_reply(c, ex["entry_point"]) for c in CHEATS] + [
            "```python\n" + ex["messages"][1]["content"] + "```"]

    class ScriptedPolicy(Engine):
        """The engine with its sampler replaced by the script: the replies a policy might find."""

        def generate(self, prompts, params=None, max_rows=64, seeds=None, **kw):
            return [[Completion(ids=tok.encode(text), forced=[False] * len(tok.encode(text)),
                                logprobs=[-1.0] * len(tok.encode(text)), pieces=[("text", text)], finish="stop")
                     for text in replies_of[tuple(p)][-params.n:]] for p in prompts]

    no_eval = {key: 0.0 for key in rl.EVAL_KEYS}  # the held-out eval is not what this test is about
    stage = rl.RLStage(ScriptedPolicy(model, tok, tool=None), task, task, grpo, rows_per_micro=16, seed=0,
                       evaluate_policy=lambda *a, **kw: no_eval)
    train = TrainConfig(device_batch_size=16, num_steps=1, warmdown_frac=0.0, eval_every=0, save_every=0, log_every=1)
    before = [p.detach().clone() for p in model.parameters()]
    Trainer(model, train, tmp_path / "rl", num_steps=1, device=torch.device("cpu"), loss_fn=stage.loss,
            accum_steps=stage.micro_per_step).fit(stage)
    rollouts = task.seen[:2 * grpo.samples_per_prompt]
    cheats = [(tid, r) for tid, reply, r in rollouts if "Here is my solution" in reply]
    honest = [r for _, reply, r in rollouts if "Here is my solution" not in reply]
    assert len(cheats) == 2 * len(CHEATS) and all(r == 0.0 for _, r in cheats), cheats
    assert honest == [1.0, 1.0]
    assert stage.last["rollout_reward"] == pytest.approx(1 / grpo.samples_per_prompt)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step did update


# ----------------------------------------------------------------------------- refusal and the report


def _weak_sandbox(monkeypatch):
    weak = jail.SandboxResult("ok", isolation=("rlimits", "audit-hook", "output-cap"),
                              missing=(("namespaces", "unshare: Operation not permitted"),))
    monkeypatch.setattr("picochat.sandbox.probe", lambda: weak)


@needs_mirror
@pytest.mark.parametrize("argv", [["eval", "chat", "--task", "humaneval"],
                                  ["train", "rl", "--task", "humaneval", "--eval-task", "humaneval"]])
def test_evals_and_rl_refuse_a_weak_sandbox(argv, monkeypatch, tmp_path, capsys):
    _weak_sandbox(monkeypatch)
    with pytest.raises(SystemExit) as e:
        cli_main([*argv, "--mirror", MIRROR, "--home", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--unsafe-sandbox" in err and "unshare: Operation not permitted" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:  # the flag lets it past the sandbox check (to the missing run)
        cli_main([*argv, "--mirror", MIRROR, "--home", str(tmp_path), "--unsafe-sandbox"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "sandbox" not in err and "Traceback" not in err, err


def test_report_card_states_the_sandbox_layers():
    layers = ["netns", "pidns", "mountns", "unprivileged", "nproc", "rlimits", "landlock", "audit-hook", "output-cap"]
    sft = report.StageData("sft", evals={"chat": {"tasks": {"humaneval": {
        "total": 164, "passed": 3, "sandbox": {"layers": layers, "unmet": [], "unsafe": False}}}}})
    rl_stage = report.StageData("rl", evals={"rl": {"sandbox": {"layers": ["rlimits", "audit-hook", "output-cap"],
                                                                "unmet": ["a private filesystem"], "unsafe": True}}})
    lines = report.eval_details({"sft": sft, "rl": rl_stage})
    line = [x for x in lines if x.startswith("- sandbox")]
    assert len(line) == 1
    assert "SFT humaneval: netns, pidns, mountns" in line[0] and "(all required layers)" in line[0]
    assert ("RL rewards and evals: rlimits, audit-hook, output-cap (**below the required isolation** (lacks a "
            "private filesystem; run with --unsafe-sandbox))") in line[0]
    assert not [x for x in report.eval_details({"sft": report.StageData("sft")}) if x.startswith("- sandbox")]


def _tiny_run(home: Path, tok) -> Path:
    """A run with a tokenizer and a tiny random SFT model (its replies are noise: they fail)."""
    return save_run(home, tok, tiny_gpt(tok.vocab_size, seq_len=128), run="tiny", stage="sft", final={}).parent


@needs_mirror
def test_eval_chat_records_the_layers_and_the_report_shows_them(tmp_path, tok, capsys):
    """End to end: `eval chat --task humaneval:test:2` on a tiny random model grades its replies in
    the sandbox, writes the layers active in every grading to chat.json, and `report` shows them."""
    run = _tiny_run(tmp_path, tok)
    args = ["--run", "tiny", "--home", str(tmp_path), "--device", "cpu", "--mirror", MIRROR]
    with pytest.raises(SystemExit) as e:
        cli_main(["eval", "chat", *args, "--task", "humaneval:test:2", "--max-new-tokens", "8"])
    assert e.value.code == 0
    record = report.read_json(run / "sft" / "eval" / "chat.json", [])["tasks"]["humaneval"]
    assert record["total"] == 2 and record["sandbox"]["unmet"] == [] and not record["sandbox"]["unsafe"]
    assert {"mountns", "pidns", "netns", "unprivileged", "nproc"} <= set(record["sandbox"]["layers"])
    with pytest.raises(SystemExit) as e:
        cli_main(["report", "--run", "tiny", "--home", str(tmp_path)])
    text = (run / "report" / "report.md").read_text()
    assert "- sandbox layers active while model-written code ran: SFT humaneval: " in text
    assert "(all required layers)" in text


@needs_mirror
def test_train_rl_on_code_records_the_layers(tmp_path, tok, capsys):
    """`train rl` with HumanEval rewards: the layers active in every reward grading land in rl.json."""
    run = _tiny_run(tmp_path, tok)
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "rl", "--run", "tiny", "--home", str(tmp_path), "--device", "cpu", "--mirror", MIRROR,
                  "--task", "humaneval:test:2", "--eval-task", "humaneval:test:1", "--num-steps", "1",
                  "--prompts-per-step", "2", "--samples-per-prompt", "2", "--max-new-tokens", "8",
                  "--eval-problems", "1", "--pass-k", "1", "--device-batch-size", "4"])
    assert e.value.code == 0
    record = report.read_json(run / "rl" / "eval" / "rl.json", [])["sandbox"]
    assert record["unmet"] == [] and {"mountns", "pidns", "netns", "seccomp"} <= set(record["layers"])
