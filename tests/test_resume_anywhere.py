"""Resume anywhere, the parts beyond the base loader (tests/test_loader.py, tests/test_distributed.py):
- optimizer warm starts: a finished stage keeps its final optimizer state (optimizer.pt), and mid /
  SFT with --warm-start-optim seed their optimizers from it: the per-parameter state carries over,
  the stage's own learning rates and settings stay; a layout that does not match is one sentence;
- chat stages resume on another number of ranks: the global stream continues at the cursor."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from picochat.cli import Resolved
from picochat.common.device import DistInfo
from picochat.common.errors import UserError
from picochat.config import PRESETS, RunConfig, TrainConfig
from picochat.model import artifact
from picochat.model.gpt import GPT, GPTConfig
from picochat.tasks.registry import make_mixture
from picochat.tokenizer.tokenizer import Tokenizer
from picochat.train import base, mid, parallel
from picochat.train.chat_batches import chat_batches
from picochat.train.chat_stage import ChatStage
from picochat.train.trainer import Batch, Trainer

SEQ = 64


class RandomRows:
    name = "toy"

    def __init__(self, vocab: int):
        self.vocab = vocab

    def batches(self, cursor):
        g = torch.Generator().manual_seed(cursor or 0)
        while True:
            x = torch.randint(0, self.vocab, (2, SEQ + 1), generator=g)
            yield Batch(x[:, :-1], x[:, 1:], None, 0)


def model_of(vocab: int, depth: int = 1, aspect_ratio: int = 64) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(depth, aspect_ratio=aspect_ratio, head_dim=32, vocab_size=vocab, seq_len=SEQ))
    model.init_weights()
    return model


def cfg(**kw) -> TrainConfig:
    return TrainConfig(device_batch_size=2, total_batch_tokens=2 * SEQ, num_steps=3, eval_every=0, save_every=0,
                       log_every=1, **kw)


def finished_stage(out, vocab: int = 64) -> GPT:
    """A stage trained 3 steps by the real Trainer and saved as an artifact."""
    model = model_of(vocab)
    Trainer(model, cfg(), out, num_steps=3, device=torch.device("cpu")).fit(RandomRows(vocab))
    return model


def optimizer_state(trainer: Trainer) -> dict:
    return get_optimizer_state_dict(trainer.par.raw, trainer.optimizers, options=parallel._FULL)


def test_a_finished_stage_keeps_its_optimizer_state_and_a_warm_start_loads_it(tmp_path):
    finished_stage(tmp_path / "base")
    saved = artifact.load_optimizer_state(tmp_path / "base")
    assert saved is not None
    assert set(saved["state"]["blocks.0.attn.c_q.weight"]) == {"momentum_buffer"}  # Muon
    assert set(saved["state"]["wte.weight"]) == {"step", "exp_avg", "exp_avg_sq"}  # AdamW
    assert saved["state"]["wte.weight"]["step"] == 3

    fresh = cfg(matrix_lr=0.003, embedding_lr=0.05, weight_decay=0.0)
    trainer = Trainer(model_of(64), fresh, tmp_path / "mid", num_steps=3, device=torch.device("cpu"))
    problem = parallel.warm_start_optimizers(trainer.par, trainer.optimizers, lambda: saved, DistInfo())
    assert problem == ""
    loaded = optimizer_state(trainer)
    assert loaded["state"].keys() == saved["state"].keys()
    for name, state in saved["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(loaded["state"][name][key]), torch.as_tensor(value)), (name, key)
    muon = trainer.optimizers[1].param_groups[0]
    assert muon["lr"] == muon["initial_lr"] == 0.003 and muon["weight_decay"] == 0.0  # this stage's settings
    adam = trainer.optimizers[0].param_groups[0]
    assert adam["initial_lr"] == pytest.approx(0.05 * (64 / 768) ** -0.5)


def test_a_layout_that_does_not_match_is_named(tmp_path):
    finished_stage(tmp_path / "base")
    saved = artifact.load_optimizer_state(tmp_path / "base")
    cpu = torch.device("cpu")
    deeper = Trainer(model_of(64, depth=2), cfg(), tmp_path / "a", num_steps=3, device=cpu)
    problem = parallel.warm_start_optimizers(deeper.par, deeper.optimizers, lambda: saved, DistInfo())
    assert problem.startswith("the optimizers group the parameters differently: group ")
    wider = Trainer(model_of(64, aspect_ratio=96), cfg(), tmp_path / "b", num_steps=3, device=cpu)
    problem = parallel.warm_start_optimizers(wider.par, wider.optimizers, lambda: saved, DistInfo())
    assert "has shape" in problem and "the parameter" in problem
    assert parallel.warm_start_optimizers(wider.par, wider.optimizers, lambda: None, DistInfo()) == "none"
    assert not any(opt.state for opt in wider.optimizers), "the optimizers stay untouched (fresh)"


@pytest.fixture(scope="module")
def tok(chat_tok: Tokenizer) -> Tokenizer:
    return chat_tok  # conftest.py: trained on the demo chat tasks these tests train on


def chat_cfg(home, **train) -> Resolved:
    t = TrainConfig(device_batch_size=4, total_batch_tokens=4 * SEQ, num_steps=2, eval_every=0, save_every=0,
                    eval_tokens=4 * SEQ, log_every=1, mixture="wordproblems:train:50, smalltalk:train:20", **train)
    return Resolved(run=RunConfig(run="t", home=str(home), device="cpu", seed=0), train=t)


def test_mid_warm_starts_from_base_through_the_command(tmp_path, tok, capsys):
    tok.save(tmp_path / "runs" / "t" / "tokenizer" / "tokenizer.json")
    base_dir = tmp_path / "runs" / "t" / "base"
    finished_stage(base_dir, tok.vocab_size)
    mid.main(chat_cfg(tmp_path, warm_start_optim=True))
    out = capsys.readouterr().out
    assert "mid: optimizer warm-started from the base stage's final state" in out
    assert artifact.load_optimizer_state(tmp_path / "runs" / "t" / "mid")["state"]["wte.weight"]["step"] == 3 + 2

    (base_dir / "optimizer.pt").write_bytes(b"damaged")
    with pytest.raises(UserError, match="optimizer.pt is corrupt"):
        run_again(tmp_path, tok)
    (base_dir / "optimizer.pt").unlink()
    run_again(tmp_path, tok)
    assert "saved no optimizer state" in capsys.readouterr().out


def run_again(tmp_path, tok) -> None:
    """mid once more, from scratch (the finished mid stage is removed first)."""
    import shutil

    shutil.rmtree(tmp_path / "runs" / "t" / "mid", ignore_errors=True)
    mid.main(chat_cfg(tmp_path, warm_start_optim=True))


def test_base_refuses_a_warm_start_and_presets_follow_the_recipe(tmp_path):
    with pytest.raises(UserError, match="--warm-start-optim is for mid and sft"):
        base.main(Resolved(run=RunConfig(run="t", home=str(tmp_path), device="cpu"),
                           train=TrainConfig(warm_start_optim=True)))
    for name in ("d12", "d20", "d26", "d32"):
        stages = PRESETS[name].stages
        assert stages["mid"].warm_start_optim and not stages["sft"].warm_start_optim


def test_a_chat_stage_saved_on_two_ranks_continues_on_one_and_on_three(tok):
    """2 ranks x 2 rows, stopped after 3 batches; the single stream of 4-row batches is the truth."""
    task = make_mixture("wordproblems:train:40, smalltalk:train:40", seed=3)
    single = [b for _, b in zip(range(6), chat_batches(task, tok, 4, SEQ, crop=True))]
    ranks = [[b for _, b in zip(range(3), chat_batches(task, tok, 2, SEQ, crop=True, rank=r, world_size=2))]
             for r in range(2)]
    saved = {"ranks": [ranks[0][-1].cursor, ranks[1][-1].cursor]}
    one = ChatStage("mid", task, None, tok, 4, SEQ, crop=True)
    for want, got in zip(single[3:], one.batches(saved)):
        assert torch.equal(want.inputs, got.inputs) and torch.equal(want.targets, got.targets)
    # three ranks of 4 rows: their first batches are rows 12..23 of the single stream
    three = [next(ChatStage("mid", task, None, tok, 4, SEQ, crop=True, rank=r, world_size=3).batches(saved))
             for r in range(3)]
    assert torch.equal(torch.cat([b.inputs for b in three]), torch.cat([b.inputs for b in single[3:6]]))
    broken = {"ranks": [ranks[0][-1].cursor, ranks[0][0].cursor]}
    with pytest.raises(UserError, match="differ between ranks"):
        next(one.batches(broken))
