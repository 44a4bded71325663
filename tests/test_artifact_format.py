"""The finished-stage artifact is safetensors + JSON: loading a model someone shared never
unpickles code, and runs written in the old torch.save format still load (weights-only) or are
refused with one sentence."""

from __future__ import annotations

import hashlib
import io
import json
import pickle

import pytest
import torch
from helpers.tiny import save_run, tiny_gpt

from picochat.common.errors import UserError
from picochat.model import artifact
from picochat.run_layout import load_model_and_tokenizer
from picochat.train import checkpoint


class _Payload:
    """A pickle that, when unpickled by the full unpickler, creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_bytes(marker) -> bytes:
    buf = io.BytesIO()
    torch.save({"wte.weight": _Payload(marker)}, buf)
    return buf.getvalue()


def test_artifact_is_safetensors_and_round_trips(tmp_path, tok):
    model = tiny_gpt(tok.vocab_size, n_kv_head=1)
    out = save_run(tmp_path, tok, model)
    assert (out / "model.safetensors").exists() and not (out / "model.pt").exists()
    assert (out / "model.safetensors").read_bytes()[8:9] == b"{"  # a JSON header, not a pickle
    loaded, tokenizer, stage = load_model_and_tokenizer("t", str(tmp_path), "", "cpu")
    assert stage == "sft"
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_pickle_beside_the_weights_is_never_read(tmp_path, tok):
    out = save_run(tmp_path, tok, tiny_gpt(tok.vocab_size, n_kv_head=1))
    marker = tmp_path / "pwned"
    (out / "model.pt").write_bytes(_evil_bytes(marker))  # planted by whoever shared the run
    load_model_and_tokenizer("t", str(tmp_path), "", "cpu")
    artifact.load_model(out)
    assert not marker.exists()


def test_a_legacy_pickle_with_code_is_refused_in_one_sentence(tmp_path, tok):
    out = save_run(tmp_path, tok, tiny_gpt(tok.vocab_size, n_kv_head=1))
    (out / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    data = _evil_bytes(marker)
    (out / "model.pt").write_bytes(data)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(UserError, match="holds more than tensors, so it was not loaded"):
        load_model_and_tokenizer("t", str(tmp_path), "", "cpu")
    assert not marker.exists()
    torch.load(io.BytesIO(data), weights_only=False)  # the payload is real: the full unpickler runs it
    assert marker.exists()


def test_a_legacy_run_still_loads(tmp_path, tok):
    model = tiny_gpt(tok.vocab_size, n_kv_head=1)
    out = save_run(tmp_path, tok, model)
    (out / "model.safetensors").unlink()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)  # the format written before safetensors
    (out / "model.pt").write_bytes(buf.getvalue())
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}))
    assert artifact.is_complete(out)
    loaded, _ = artifact.load_model(out)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_corrupt_safetensors_is_one_sentence(tmp_path, tok):
    out = save_run(tmp_path, tok, tiny_gpt(tok.vocab_size, n_kv_head=1))
    data = b"\xff" * 16
    (out / "model.safetensors").write_bytes(data)
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "sha256": hashlib.sha256(data).hexdigest()}))
    with pytest.raises(UserError, match="not a readable safetensors file"):
        artifact.load_model(out)


def test_training_checkpoints_load_weights_only_and_skip_code(tmp_path, capsys):
    stage = tmp_path / "base"
    checkpoint.save_checkpoint(stage, 1, {"model": {"w": torch.ones(2)}, "cursors": [{"shard": 0, "row": 3}],
                                          "elapsed": 1.5, "optimizers": []})
    marker = tmp_path / "pwned"
    data = _evil_bytes(marker)  # a newer "checkpoint" with a valid digest but code inside
    (stage / "checkpoints" / "step_000002.pt").write_bytes(data)
    (stage / "checkpoints" / "step_000002.json").write_text(json.dumps(
        {"step": 2, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))
    state = checkpoint.load_latest_checkpoint(stage)
    assert state["step"] == 1 and state["cursors"] == [{"shard": 0, "row": 3}] and not marker.exists()
    assert "step_000002.pt is unusable" in capsys.readouterr().err
    checkpoint.set_rng_state(state["rng"])  # the numpy state comes back from its tensor form


def test_old_checkpoints_with_numpy_rng_state_still_resume(tmp_path):
    import numpy as np

    np.random.seed(5)
    want = np.random.get_state()
    blob = io.BytesIO()
    torch.save({"model": {}, "step": 3, "rng": {"torch": torch.get_rng_state(), "numpy": want,
                                                  "python": __import__("random").getstate()}}, blob)
    data = blob.getvalue()
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / "step_000003.pt").write_bytes(data)
    (ckpt / "step_000003.json").write_text(json.dumps({"step": 3, "bytes": len(data),
                                                       "sha256": hashlib.sha256(data).hexdigest()}))
    state = checkpoint.load_latest_checkpoint(tmp_path)
    np.random.seed(0)
    checkpoint.set_rng_state(state["rng"])
    assert np.array_equal(np.random.get_state()[1], want[1])
    assert pickle.dumps(np.random.random()) == pickle.dumps(np.random.RandomState(5).random())


def test_the_base_loaders_real_cursor_passes_the_weights_only_loader(tmp_path, tok):
    """The cursor contract (JSON-serialisable) is what lets checkpoints load weights-only."""
    from picochat.data.loader import pretrain_batches

    _, _, cursor = next(iter(pretrain_batches("synthetic", "train", tok, 2, 16, home=str(tmp_path))))
    checkpoint.save_checkpoint(tmp_path / "base", 1, {"cursors": [cursor]})
    assert checkpoint.load_latest_checkpoint(tmp_path / "base")["cursors"] == [cursor]


def test_a_damaged_snapshot_is_refused_in_one_sentence(tmp_path, tok):
    model = tiny_gpt(tok.vocab_size, n_kv_head=1)
    path = artifact.save_snapshot(tmp_path, 5, model.state_dict(), model.config.to_dict())
    assert artifact.list_snapshots(tmp_path) == {5: path}
    assert torch.equal(artifact.load_snapshot(path).lm_head.weight, model.lm_head.weight)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="not a readable weight snapshot"):
        artifact.load_snapshot(path)
