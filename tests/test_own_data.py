"""End to end on the user's own data: `picochat train base --data FOLDER_OF_TXT --preset demo` on a
fresh run (tokenizer trained on the same text, base killed and resumed inside the user corpus) ->
bpb -> SFT on a chat file mixed with a built-in task -> `picochat chat`.
Marked slow (about a minute on 2 quiet cores); runs in CI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from picochat.data import synthetic
from picochat.train import checkpoint

HELPERS = Path(__file__).resolve().parent / "helpers"

ENV = {**os.environ, "PICOCHAT_MIRROR": "", "OMP_NUM_THREADS": "2"}
TINY_BASE = ["--depth", "1", "--seq-len", "128", "--vocab-size", "512", "--num-steps", "16", "--save-every", "4",
             "--eval-every", "8", "--eval-tokens", "2048", "--device-batch-size", "8", "--total-batch-tokens", "1024",
             "--log-every", "2"]


def picochat(home, *argv):
    return [sys.executable, "-m", "picochat", *argv, "--preset", "demo", "--run", "own", "--home", str(home)]


def write_txt_folder(folder: Path) -> None:
    """Three .txt files in nested folders: documents separated by blank lines."""
    docs = [d for i in range(12) for d in synthetic.chunk("train", i)]
    parts = [docs[k::3] for k in range(3)]
    for path, part in zip(["a.txt", "more/b.txt", "more/deeper/c.txt"], parts, strict=True):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text("\n\n".join(part) + "\n")


def write_chats(path: Path, n: int, offset: int = 0) -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": f"Say the number {i}."},
                                      {"role": "assistant", "content": f"The number is {i}."}]})
             for i in range(offset, offset + n)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_train_base_on_a_folder_of_txt_then_chat(tmp_path):
    folder, home = tmp_path / "my texts", tmp_path / "home"  # a space in the path, on purpose
    write_txt_folder(folder)
    run = home / "runs" / "own"

    # base from a fresh run: it trains the tokenizer on the same folder first; SIGKILL it once a
    # checkpoint exists, then the same command resumes inside the user corpus
    # (tests/helpers/stop_after_save.py kills at a fixed point: polling for the file raced a fast machine)
    killed = subprocess.run([sys.executable, str(HELPERS / "stop_after_save.py"), "--", "4",
                             *picochat(home, "train", "base", "--data", str(folder), *TINY_BASE)[3:]],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert "killed after the step-4 checkpoint" in killed.stdout, killed.stdout[-3000:] + killed.stderr[-3000:]
    tokenizer = json.loads((run / "tokenizer" / "config.json").read_text())["tokenizer"]
    assert tokenizer["data"] == str(folder) and tokenizer["vocab_size"] == 512
    state = checkpoint.load_latest_checkpoint(run / "base")
    cursor = state["cursors"][0]
    assert cursor["source"].startswith(f"data:{folder}@") and cursor["next"][1] >= 0 and state["step"] < 16
    base = subprocess.run(picochat(home, "train", "base", "--data", str(folder), *TINY_BASE), env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert base.returncode == 0, base.stdout[-2000:] + base.stderr
    assert "resumed base from step" in base.stdout
    saved = json.loads((run / "base" / "config.json").read_text())["train"]
    assert saved["data"] == str(folder) and saved["text_field"] == "text"

    # bpb defaults to what base trained on: the hash-held-out documents of the folder
    bpb = subprocess.run(picochat(home, "eval", "bpb"), env=ENV, capture_output=True, text=True, timeout=300)
    assert bpb.returncode == 0, bpb.stderr
    record = json.loads((run / "base" / "eval" / "bpb.json").read_text())
    assert record["source"] == f"data:{folder}" and record["documents"] > 0 and 0 < record["bpb"] < 10

    other = subprocess.run(picochat(home, "eval", "bpb", "--data", str(folder), "--val-data", str(folder / "a.txt")),
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr
    assert json.loads((run / "base" / "eval" / "bpb.json").read_text())["val_data"] == str(folder / "a.txt")

    # SFT on the user's chat file, mixed by weight with a built-in task
    write_chats(tmp_path / "chats.jsonl", 40)
    write_chats(tmp_path / "val chats.jsonl", 8, offset=100)
    sft = subprocess.run(picochat(home, "train", "sft", "--mixture",
                                  f"chatfile:{tmp_path / 'chats.jsonl'}*2, identity:train:20",
                                  "--val-mixture", f"chatfile:{tmp_path / 'val chats.jsonl'}", "--num-steps", "3",
                                  "--eval-every", "3", "--save-every", "0", "--eval-tokens", "1024",
                                  "--device-batch-size", "4", "--total-batch-tokens", "512"),
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert sft.returncode == 0, sft.stdout[-2000:] + sft.stderr
    assert "'chatfile:chats.jsonl': 80" in sft.stdout  # two passes over 40 conversations

    chat = subprocess.run(picochat(home, "chat", "-p", "Say the number 7.", "--max-tokens", "16"), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip()


@pytest.mark.slow
def test_base_on_own_data_stopped_on_two_ranks_resumes_on_one_with_exactly_the_remaining_documents(tmp_path):
    """The resume-anywhere must-show (tests/test_distributed.py) on a user corpus: 2 gloo ranks
    train base on --data and die after the step-2 checkpoint; 1 rank resumes, re-sharding their
    cursors into the user corpus, and dies after step 16. Packed + pending documents are exactly
    the first documents of the single-rank stream of the corpus, each once."""
    from collections import Counter

    from test_distributed import ENV as DIST_ENV
    from test_distributed import base_cmd, base_run_dir, logged_docs

    from picochat.data.user_corpus import open_text_corpora

    home = base_run_dir(tmp_path)
    data = tmp_path / "own"
    data.mkdir()
    docs = [d for i in range(48) for d in synthetic.chunk("train", i)]
    for k in range(64):  # 64 files of 48 documents (~33 kB): one chunk each, as small as the synthetic
        # source's, so that by step 16 the one rank has read the two ranks' partly read chunks
        (data / "parts" / f"{k // 10}").mkdir(parents=True, exist_ok=True)
        (data / "parts" / f"{k // 10}" / f"part{k:02d}.jsonl").write_text(
            "".join(json.dumps({"text": d}) + "\n" for d in docs[k::64]))
    logs = tmp_path / "doclog"
    env = {**DIST_ENV, "PICOCHAT_MIRROR": "", "PICOCHAT_DOC_LOG": str(logs)}
    two = subprocess.run(base_cmd(home, 2, "--data", str(data), ranks=2, port=29636), capture_output=True,
                         text=True, env=env, timeout=300)
    assert "killed after the step-2 checkpoint" in two.stdout, two.stderr[-3000:]
    out = home / "runs" / "t" / "base"
    old = checkpoint.load_latest_checkpoint(out)["cursors"]
    assert [c["world_size"] for c in old] == [2, 2] and old[0]["source"].startswith(f"data:{data}@")
    before = sum((logged_docs(logs / f"train-rank{r}-of2.jsonl", c["stats"]["rows"]) for r, c in enumerate(old)),
                 Counter())

    one = subprocess.run(base_cmd(home, 16, "--data", str(data)), capture_output=True, text=True, env=env,
                         timeout=300)
    assert "killed after the step-16 checkpoint" in one.stdout, one.stderr[-3000:]
    assert "the data cursors are re-sharded" in one.stdout
    (cursor,) = checkpoint.load_latest_checkpoint(out)["cursors"]
    after = logged_docs(logs / "train-rank0-of1.jsonl", cursor["stats"]["rows"])
    pending = Counter(tuple(d) for d in cursor["pending"])
    assert before and after and not set(before) & set(after)
    assert "leftover" not in cursor and cursor["next"][0] == 0
    _, chunk, offset = cursor["next"]
    corpus = open_text_corpora("", data=str(data))["train"]
    read = Counter((c, i) for c in range(chunk) for i in range(len(corpus.chunk(c))))
    read.update((chunk, i) for i in range(offset))
    assert before + after + pending == read
