"""A user's chat file (OpenAI messages JSONL) as a mid/SFT task: reading, mixing by weight, the
`chatfile:` spec syntax, and every class of bad conversation (one sentence with file and line)."""

import gzip
import json
import subprocess
import sys

import pytest

from picochat.common.errors import UserError
from picochat.tasks.chatfile import ChatFile
from picochat.tasks.common import TaskMixture
from picochat.tasks.registry import make_mixture, make_task


def conv(i):
    return {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": f"What is {i} + 1?"},
                         {"role": "assistant", "content": f"{i + 1}"},
                         {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
                         {"role": "assistant", "content": "You're welcome."}]}


def write_chats(path, convs, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(c) + "\n" for c in convs)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text + "\n")  # a trailing blank line is fine
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_chat_file_reads_every_conversation(tmp_path, gz):
    convs = [conv(i) for i in range(30)]
    path = write_chats(tmp_path / ("c.jsonl.gz" if gz else "c.jsonl"), convs, gz)
    task = ChatFile(path)
    assert len(task) == 30 and task.name == f"chatfile:{path.name}"
    got = sorted((task[i]["messages"] for i in range(len(task))), key=lambda m: int(m[2]["content"]))
    assert got == [c["messages"] for c in convs]
    assert ChatFile(path)[5] == task[5]  # the seeded order is stable


def test_chat_file_mixes_with_built_in_tasks_by_weight(tmp_path):
    path = write_chats(tmp_path / "dir:with:colons" / "my*chats.jsonl", [conv(i) for i in range(10)])
    mix = make_mixture(f"chatfile:{path}*3, identity:train:20")
    assert isinstance(mix, TaskMixture)
    assert mix.counts == [30, 20]  # three passes over 10 conversations, next to 20 identity ones
    names = [mix[i]["task"] for i in range(len(mix))]
    assert names.count("chatfile:my*chats.jsonl") == 30
    assert make_mixture(f"chatfile:{path}").counts == [10]  # no passes: once
    assert len(make_task(f" chatfile: {path} ")) == 10


def test_chat_file_is_not_an_eval_task(tmp_path):
    task = ChatFile(write_chats(tmp_path / "c.jsonl", [conv(1)]))
    with pytest.raises(UserError, match="no answers to score"):
        task.evaluate(task[0], "2")


def messages(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


BAD = {
    "unknown-role": (json.dumps(messages(("user", "hi"), ("tool", "x"))), "unknown role 'tool'"),
    "missing-assistant-turn": (json.dumps(messages(("user", "hi"))), "assistant turn that answers it is missing"),
    "two-user-turns": (json.dumps(messages(("user", "hi"), ("user", "again"), ("assistant", "x"))),
                       "should be from assistant"),
    "empty-content": (json.dumps(messages(("user", "hi"), ("assistant", "  "))), "has empty content"),
    "content-not-a-string": (json.dumps(messages(("user", 42), ("assistant", "x"))), "content must be a string"),
    "messages-not-a-list": (json.dumps({"messages": "hi"}), "non-empty list of messages"),
    "no-messages-key": (json.dumps([{"role": "user", "content": "hi"}]), "with a 'messages' list"),
    "not-json": ('{"messages": [', "not valid JSON"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_conversation_is_one_sentence_with_file_and_line(tmp_path, name):
    line, fragment = BAD[name]
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(conv(0)) + "\n\n" + json.dumps(conv(1)) + "\n" + line + "\n")
    with pytest.raises(UserError) as e:
        make_mixture(f"chatfile:{path}*2, identity:train:5")
    message = str(e.value)
    assert f"{path} line 4" in message and fragment in message and "\n" not in message, message


def test_bad_files(tmp_path):
    (tmp_path / "latin.jsonl").write_bytes(json.dumps(conv(0)).encode() + b"\n\xe9\n")
    with pytest.raises(UserError, match="latin.jsonl line 2 is not UTF-8"):
        ChatFile(tmp_path / "latin.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        make_task(f"chatfile:{tmp_path / 'nope.jsonl'}")
    with pytest.raises(UserError, match="must be .jsonl or .jsonl.gz"):
        ChatFile(write_chats(tmp_path / "c.json", [conv(0)]))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="has no conversations"):
        ChatFile(tmp_path / "empty.jsonl")
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress((json.dumps(conv(0)) + "\n").encode() * 1000)[:200])
    with pytest.raises(UserError, match="not a readable gzip file"):
        ChatFile(tmp_path / "cut.jsonl.gz")


def test_bad_chat_file_on_the_command_line_exits_2_without_traceback(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(conv(0)) + "\n" + json.dumps(messages(("user", "hi"), ("bot", "x"))) + "\n")
    r = subprocess.run([sys.executable, "-m", "picochat", "eval", "chat", "--task", f"chatfile:{path}",
                        "--home", str(tmp_path / "home")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and f"{path} line 2" in r.stderr and "unknown role" in r.stderr, r.stderr


def test_data_flag_on_a_chat_stage_points_to_chatfile(tmp_path):
    from picochat.config import TrainConfig
    from picochat.train.chat_stage import build_mixtures

    with pytest.raises(UserError, match="chatfile:PATH"):
        build_mixtures(TrainConfig(mixture="identity:train:5", data=str(tmp_path)), "sft", 0, "", "")
