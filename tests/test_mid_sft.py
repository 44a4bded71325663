"""Mid-training and SFT: packed conversation batches (loss mask, exact resume, rank split,
proportions), the stage commands end to end on a tiny model (artifact, held-out loss, resume),
and the chat-format scorer."""

from __future__ import annotations

import json
import os
import signal
import warnings
from collections import Counter

import pytest
import torch
from helpers.chat_check import score_reply
from helpers.tiny import save_run

from picochat.cli import Resolved
from picochat.common.errors import UserError
from picochat.config import DEMO_CHAT_VAL, DEMO_MID_MIXTURE, DEMO_SFT_MIXTURE, RunConfig, TrainConfig
from picochat.model import artifact
from picochat.model.gpt import GPT, GPTConfig
from picochat.tasks.common import Task
from picochat.tasks.registry import make_mixture
from picochat.tasks.synthetic import WordProblems
from picochat.tokenizer.chat import chat_tokens, render_conversation
from picochat.tokenizer.tokenizer import Tokenizer
from picochat.train import chat_stage, mid, sft
from picochat.train.chat_batches import ChatPacker, chat_batches, estimate_rows, waste_fraction

SEQ = 64


@pytest.fixture(scope="module")
def tok(chat_tok: Tokenizer) -> Tokenizer:
    return chat_tok  # conftest.py: trained on the demo chat tasks these tests pack and train on


class ToolChats(Task):
    """Multi-turn conversations with tool calls, tool outputs and a system message."""

    name = "toolchats"

    def __len__(self) -> int:
        return 30

    def __getitem__(self, i: int) -> dict:
        i = self._check_index(i)
        turns = [{"role": "system", "content": "Be brief."}] if i % 3 == 0 else []
        for k in range(1 + i % 3):
            a, b = 3 + i, 7 + k
            turns += [{"role": "user", "content": f"What is {a} times {b}?"},
                      {"role": "assistant", "content": [
                          {"type": "text", "text": "Let me compute."},
                          {"type": "python", "text": f"{a}*{b}"},
                          {"type": "python_output", "text": str(a * b)},
                          {"type": "text", "text": f" It is {a * b}."}]}]
        return {"messages": turns}


def assistant_written(tokenizer, row: list[int]) -> list[bool]:
    """Independent spec of the loss mask: token t is written by the assistant iff it lies after
    an <|assistant_start|> and up to its <|assistant_end|>, outside <|output_start|>..<|output_end|>."""
    t = chat_tokens(tokenizer)
    out, in_turn, in_output = [], False, False
    for x in row:
        if x == t.assistant_start:
            in_turn = True
            out.append(False)
            continue
        if x == t.output_start:
            in_output = True
        out.append(in_turn and not in_output)
        if x == t.output_end:
            in_output = False
        if x == t.assistant_end:
            in_turn = False
    return out


@pytest.mark.parametrize("crop", [True, False])
def test_targets_are_exactly_the_assistant_tokens(tok, crop):
    seen_output = 0
    for task in (make_mixture("wordproblems:train:40, smalltalk:train:40", seed=1), ToolChats()):
        packer = ChatPacker(task, tok, SEQ, crop=crop, infinite=False)  # the same rows, unmasked
        for batch in chat_batches(task, tok, 4, SEQ, crop=crop, infinite=False):
            for r in range(4):
                row = packer.row()
                ids = row[0] + [tok.bos_id] * (SEQ + 1 - len(row[0])) if row else [tok.bos_id] * (SEQ + 1)
                assert batch.inputs[r].tolist() == ids[:-1]
                spec = assistant_written(tok, ids)
                if row is None or len(row[0]) < SEQ + 1:
                    assert not any(spec[len(row[0]) if row else 0:])  # padding carries no loss
                want = [ids[i + 1] if spec[i + 1] else -1 for i in range(SEQ)]
                assert batch.targets[r].tolist() == want
                seen_output += ids.count(chat_tokens(tok).output_start)
        assert packer.row() is None
    assert seen_output > 0  # tool outputs were really in the rows, and carried no loss


def test_whole_conversations_once_per_pass_and_proportions(tok):
    """SFT packing (no crops): one pass puts every example of the mixture in exactly once, so the
    rows hold the configured proportions; a row's conversations are each rendered whole."""
    mixture = make_mixture("wordproblems:train:30*2, smalltalk:train:20", seed=3)
    assert mixture.counts == [60, 20]
    rendered = Counter(tuple(render_conversation(tok, mixture[i])[0]) for i in range(len(mixture)))
    bos = tok.bos_id
    found: Counter = Counter()
    for batch in chat_batches(mixture, tok, 3, 200, crop=False, infinite=False):  # all fit whole
        for r in range(3):
            row = batch.inputs[r].tolist() + [batch.targets[r, -1].item()]
            valid = (batch.targets[r] >= 0).nonzero()
            if not len(valid):
                continue  # an all-padding row at the end of the pass
            end = int(valid.max()) + 2  # past the last assistant token
            starts = [i for i in range(end) if row[i] == bos]
            for a, b in zip(starts, starts[1:] + [end], strict=True):
                found[tuple(row[a:b])] += 1
    assert found == rendered
    by_task = Counter(ex.get("task") for ex in (mixture[i] for i in range(len(mixture))))
    assert by_task == {"wordproblems": 60, "smalltalk": 20}


def test_preset_mixtures_have_the_configured_proportions():
    m = make_mixture(DEMO_MID_MIXTURE)
    assert m.counts == [3000, 3000, 200]
    s = make_mixture(DEMO_SFT_MIXTURE)
    assert s.counts == [1500, 600, 100]
    v = make_mixture(DEMO_CHAT_VAL)
    assert v.counts == [64, 64, 16]
    # held-out conversations are not training conversations
    train_q = {m[i]["messages"][0]["content"] for i in range(len(m)) if m[i]["task"] == "wordproblems"}
    assert not any(v[i]["messages"][0]["content"] in train_q for i in range(len(v)) if v[i]["task"] == "wordproblems")


@pytest.mark.parametrize("crop", [True, False])
def test_resume_from_any_cursor_gives_the_identical_next_batches(tok, crop):
    task = make_mixture("wordproblems:train:15, smalltalk:train:10", seed=5)  # small: crosses epochs
    ref = [b for _, b in zip(range(14), chat_batches(task, tok, 2, SEQ, crop=crop))]
    assert ref[-1].cursor["epoch"] >= 1
    for k in (0, 3, 7, 11):
        cursor = json.loads(json.dumps(ref[k].cursor))  # it survives a JSON round trip
        resumed = chat_batches(task, tok, 2, SEQ, crop=crop, cursor=cursor)
        for want in ref[k + 1:k + 3]:
            got = next(resumed)
            assert torch.equal(got.inputs, want.inputs) and torch.equal(got.targets, want.targets)
            assert got.cursor == want.cursor
    with pytest.raises(UserError, match="sequence length"):
        next(chat_batches(task, tok, 2, SEQ * 2, crop=crop, cursor=ref[3].cursor))
    other = make_mixture("wordproblems:train:10, smalltalk:train:15", seed=5)  # same size, other data
    with pytest.raises(UserError, match="same mixture"):
        next(chat_batches(other, tok, 2, SEQ, crop=crop, cursor=ref[3].cursor))


def test_ranks_split_the_single_process_rows(tok):
    task = make_mixture("wordproblems:train:20, smalltalk:train:20", seed=2)
    single = [b for _, b in zip(range(4), chat_batches(task, tok, 4, SEQ, crop=True))]
    r0 = [b for _, b in zip(range(4), chat_batches(task, tok, 2, SEQ, crop=True, rank=0, world_size=2))]
    r1 = [b for _, b in zip(range(4), chat_batches(task, tok, 2, SEQ, crop=True, rank=1, world_size=2))]
    for s, a, b in zip(single, r0, r1, strict=True):
        assert torch.equal(torch.cat([a.inputs, b.inputs]), s.inputs)
        assert torch.equal(torch.cat([a.targets, b.targets]), s.targets)
        assert a.cursor == b.cursor == s.cursor  # one cursor resumes every rank


def test_waste_accounting_and_estimate(tok):
    task = make_mixture("wordproblems:train:50, smalltalk:train:50", seed=0)
    L = 200  # every conversation fits a row: nothing is truncated
    packer = ChatPacker(task, tok, L, crop=False, infinite=False)
    rows = list(iter(packer.row, None))
    c = packer.cursor()
    s = c["stats"]
    assert s["rows"] == len(rows) and s["read"] == s["packed"] == 100 and s["cropped"] == 0  # SFT never crops
    assert s["tokens"] + s["padded"] == len(rows) * (L + 1)
    assert s["loss_tokens"] == sum(sum(m[1:]) for _, m in rows)
    assert 0 < waste_fraction(c) < 0.5
    assert estimate_rows(task, tok, L, crop=False, sample=100) == len(rows)
    # a chat stage with num_steps=0 makes one pass over its mixture
    one_pass = TrainConfig(num_steps=0, total_batch_tokens=4 * L)
    assert chat_stage.steps_for_one_pass(one_pass, task, tok, L, crop=False) == -(-len(rows) // 4)


# ----------------------------------------------------------------------------- the stages


def make_run(tmp_path, tok) -> str:
    torch.manual_seed(0)
    save_run(tmp_path, tok, GPT(GPTConfig.from_depth(1, head_dim=32, vocab_size=tok.vocab_size, seq_len=SEQ)), "base")
    return str(tmp_path)


def stage_cfg(home: str, **train) -> Resolved:
    t = TrainConfig(device_batch_size=4, total_batch_tokens=4 * SEQ, num_steps=4, eval_every=0,
                    eval_tokens=4 * SEQ * 4, save_every=2, log_every=1, matrix_lr=0.02, embedding_lr=0.2,
                    unembedding_lr=0.01, warmdown_frac=0.5, mixture="wordproblems:train:200, smalltalk:train:50",
                    val_mixture="wordproblems:test:16, smalltalk:test:8")
    for k, v in train.items():
        setattr(t, k, v)
    return Resolved(run=RunConfig(run="t", home=home, device="cpu", seed=0), train=t)


def test_stages_write_artifacts_and_record_heldout_loss(tmp_path, tok, capsys):
    home = make_run(tmp_path, tok)
    tok.save(tmp_path / "empty" / "runs" / "t" / "tokenizer" / "tokenizer.json")
    with pytest.raises(UserError, match="no finished mid or base"):
        sft.main(stage_cfg(str(tmp_path / "empty")))
    final = mid.main(stage_cfg(home))
    meta = json.loads((tmp_path / "runs/t/mid/meta.json").read_text())
    assert meta["stage"] == "mid" and meta["start"] == "base" and meta["final"]["step"] == 4
    assert meta["heldout"]["base"]["val_loss"] > final["val_loss"]  # even 4 steps help a random model
    assert meta["packing"]["rows"] == 16 and meta["mixture"]["counts"] == {"wordproblems": 200, "smalltalk": 50}
    assert mid.main(stage_cfg(home)) is None  # complete: skipped
    sft.main(stage_cfg(home, num_steps=3))
    meta = json.loads((tmp_path / "runs/t/sft/meta.json").read_text())
    assert meta["start"] == "mid" and set(meta["heldout"]) == {"mid", "base"}
    assert meta["packing"]["cropped"] == 0
    out = capsys.readouterr().out
    assert "held-out sft loss: mid" in out and "-> sft" in out


def test_sft_falls_back_to_base_and_resumes_exactly(tmp_path, tok, monkeypatch, capsys):
    home = make_run(tmp_path, tok)
    ref_home = make_run(tmp_path / "ref", tok)
    sft.main(stage_cfg(ref_home))
    assert "sft starts from base" in capsys.readouterr().out

    real = chat_stage.chat_batches

    def interrupted(*args, **kw):  # Ctrl-C while the 3rd batch is being read: stop after step 3
        for i, batch in enumerate(real(*args, **kw)):
            if i == 2 and kw.get("infinite"):
                os.kill(os.getpid(), signal.SIGINT)
            yield batch

    monkeypatch.setattr(chat_stage, "chat_batches", interrupted)
    with pytest.raises(SystemExit):
        sft.main(stage_cfg(home))
    assert not artifact.is_complete(tmp_path / "runs/t/sft")
    monkeypatch.setattr(chat_stage, "chat_batches", real)
    sft.main(stage_cfg(home))
    assert "resumed sft from step 3/4" in capsys.readouterr().out
    a = artifact.load_weights(tmp_path / "ref/runs/t/sft")[0]
    b = artifact.load_weights(tmp_path / "runs/t/sft")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical to the uninterrupted run


def test_missing_mixture_is_a_user_error(tmp_path, tok):
    home = make_run(tmp_path, tok)
    with pytest.raises(UserError, match="--mixture"):
        mid.main(stage_cfg(home, mixture=""))


# ----------------------------------------------------------------------------- the chat check


def test_score_reply(tok):
    task = WordProblems("test", 4)
    ex = task[0]
    ids, _ = render_conversation(tok, ex)
    t = chat_tokens(tok)
    reply = ids[ids.index(t.assistant_start) + 1:]  # what a perfect model generates
    good = score_reply(tok, reply, task, ex)
    assert good["stopped"] and good["called_calculator"] and good["correct"]
    cut = score_reply(tok, reply[:-3], task, ex)
    assert not cut["stopped"]
    no_tool = [x for x in reply if x not in (t.python_start, t.python_end)]
    assert not score_reply(tok, no_tool, task, ex)["called_calculator"]
    runaway = score_reply(tok, reply[:-1] + [t.user_start, t.assistant_end], task, ex)
    assert not runaway["stopped"]


# ----------------------------------------------------------------------------- behaviour (slow)


@pytest.mark.slow
def test_mid_then_sft_teach_the_chat_format_and_the_calculator(tmp_path):
    """From an untrained d2 model, ~60k tokens of mid-training and ~40k of SFT on the offline
    demo tasks are enough for replies that stop at <|assistant_end|> and call the calculator.
    (About a CPU minute: the demo preset's chat rows, on a smaller model with no pretraining, in
    steps of 1k tokens. Measured margins: held-out mid loss 1.36 against the bound 1.73, 8 of 8
    replies stop and call the calculator; with 40 mid steps the mid loss misses the bound.)"""
    from helpers.chat_check import check_run

    from picochat.data.synthetic import chunk

    text = "\n".join(doc for i in range(4) for doc in chunk("train", i))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = Tokenizer.train([text], 1024)
    torch.manual_seed(0)
    save_run(tmp_path, tokenizer, GPT(GPTConfig.from_depth(2, head_dim=64, vocab_size=tokenizer.vocab_size,
                                                          seq_len=256)), "base")
    rows = dict(device_batch_size=4, total_batch_tokens=1024, eval_every=0, eval_tokens=4096, save_every=0,
                log_every=20, val_mixture=DEMO_CHAT_VAL)
    mid.main(stage_cfg(str(tmp_path), **rows, num_steps=60, warmdown_frac=0.4, matrix_lr=0.02, embedding_lr=0.2,
                       unembedding_lr=0.004, mixture=DEMO_MID_MIXTURE))
    sft.main(stage_cfg(str(tmp_path), **rows, num_steps=40, warmdown_frac=1.0, matrix_lr=0.005, embedding_lr=0.05,
                       unembedding_lr=0.001, mixture=DEMO_SFT_MIXTURE))
    meta = json.loads((tmp_path / "runs/t/sft/meta.json").read_text())
    assert meta["final"]["val_loss"] < meta["heldout"]["mid"]["val_loss"] < meta["heldout"]["base"]["val_loss"] / 4
    result = check_run("t", str(tmp_path), n=8)
    assert result["stopped"] >= 6 and result["called_calculator"] >= 4, result
