"""--tracker: TensorBoard event files and an offline W&B run hold exactly the metrics.jsonl numbers,
plus the resolved config at the start and the report card at the end."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from picochat.common.errors import UserError
from picochat.common.tracking import open_tracker
from picochat.config import TrainConfig
from picochat.eval.report import metrics_table
from picochat.model.gpt import GPT, GPTConfig
from picochat.train.trainer import Batch, Trainer, write_config


class _Stage:
    name = "base"

    def batches(self, cursor):
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randint(0, 32, (2, 8), generator=g)
            yield Batch(x, x, cursor=0)

    def evaluate(self, model) -> dict[str, float]:
        w = model.lm_head.weight
        return {"val_score": float(w.detach().abs().mean())}  # changes from eval to eval


def _train(tmp_path: Path, tracker: str) -> tuple[Path, list[dict]]:
    out = tmp_path / "runs" / "r" / "base"
    cfg = TrainConfig(num_steps=6, eval_every=3, log_every=2, save_every=0, device_batch_size=2,
                      total_batch_tokens=16, tracker=tracker)
    write_config(out, {"train": {"tracker": tracker, "num_steps": 6}, "run": {"run": "r"}})
    # an earlier `eval bpb` of this stage, so the report card's table has a measured row to carry
    (out / "eval").mkdir()
    (out / "eval" / "bpb.json").write_text(json.dumps({"bpb": 1.25, "bytes": 1000}))
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, head_dim=32, vocab_size=32, seq_len=8))
    Trainer(model, cfg, out, num_steps=6, device=torch.device("cpu"), meta={"stage": "base"},
            report_card=metrics_table).fit(_Stage())  # what the `picochat train` commands hand in
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {2, 3, 4, 6} and any("val_score" in r for r in rows)
    return out, rows


def _expected(rows: list[dict]) -> dict[tuple[str, int], float]:
    return {(k, r["step"]): v for r in rows for k, v in r.items() if k != "step"}


def test_tensorboard_events_hold_the_jsonl_numbers(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, rows = _train(tmp_path, "tensorboard")
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    want = _expected(rows)
    assert got.keys() == want.keys()
    for key, value in want.items():  # TensorBoard stores float32: equal after that rounding
        assert got[key] == np.float32(value), key
    texts = {tag: acc.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in acc.Tags()["tensors"]}
    assert '"num_steps": 6' in texts["config/text_summary"]         # the resolved config.json
    assert "| metric | BASE |" in texts["report_card/text_summary"]  # the report card's table
    assert "| bits per byte (1.0k bytes) | 1.2500 |" in texts["report_card/text_summary"]
    assert '"step": 6' in texts["final/text_summary"]


def _wandb_records(path: Path):
    """The protobuf records of a .wandb file: wandb's log format (the LevelDB log layout: 32 KiB
    blocks of chunks, each with a 7-byte header crc32/length/type) after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_offline_run_holds_the_jsonl_numbers(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    out, rows = _train(tmp_path, "wandb")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # offline by default: no network, no login
    records = list(_wandb_records(next(runs[0].glob("run-*.wandb"))))
    got = {}
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            step = items.pop("_step")
            got.update({(k, step): v for k, v in items.items() if not k.startswith("_")})
    assert got == _expected(rows)  # JSON doubles: exactly equal
    config = [r.run.config for r in records if r.WhichOneof("record_type") == "run"]
    keys = {u.key or "/".join(u.nested_key) for c in config for u in c.update}
    assert {"train", "run"} <= keys
    summary = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for r in records
               if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert summary["final/step"] == 6
    assert "| metric | BASE |" in (runs[0] / "files" / "report_card.md").read_text()


def test_tensorboard_resume_replaces_the_killed_runs_later_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = open_tracker("tensorboard", tmp_path)
    for step in (1, 2, 3):
        first.log({"step": step, "loss": float(step)})
    first.writer.close()  # killed after step 3; the checkpoint was at step 1
    second = open_tracker("tensorboard", tmp_path)
    for step in (2, 3, 4):
        second.log({"step": step, "loss": 10.0 * step})
    second.finish({"step": 4})
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 1.0), (2, 20.0), (3, 30.0), (4, 40.0)]


def test_unknown_tracker_or_missing_package_is_one_sentence(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="unknown tracker 'tensorbored'"):
        open_tracker("tensorbored", tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'picochat\[wandb\]'"):
        open_tracker("wandb", tmp_path)
    open_tracker("none", tmp_path).log({"step": 1, "loss": 1.0})  # the default needs nothing
