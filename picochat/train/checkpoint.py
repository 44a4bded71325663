"""Checkpoints: atomic, verified, and complete enough to resume a run exactly.

A stage directory (`runs/<run>/<stage>/`) holds:
  checkpoints/step_000500.pt   training state: model, optimizers, data cursor, RNG, counters
  checkpoints/step_000500.json its size and sha256, written after the .pt (so a .pt without a
                               matching .json was interrupted mid-write and is ignored)
  model.safetensors, meta.json the finished artifact: the weights as safetensors (a flat tensor
                               table, so loading a model someone shared never unpickles code), and
                               meta.json, written last, so its presence means "this stage is complete"
  optimizer.pt                 the optimizer state at the end (what a later stage may warm-start
                               from: --warm-start-optim); its sha256 is in meta.json
  config.json, metrics.jsonl   the resolved config and the per-step metrics

Every file goes through common.io.atomic_write (temp file + fsync + rename): a crash or SIGKILL
at any moment leaves the previous checkpoint intact. On load, the newest checkpoint that passes
verification wins; a corrupt one is reported in one sentence and skipped, never deleted.

Training checkpoints are torch.save files (optimizer state, cursors, RNG) but are read with
torch.load(weights_only=True): the restricted unpickler builds tensors and plain containers only.
Runs written before the safetensors artifact (`model.pt`) still load, through the same
weights-only loader; a file that needs anything more is refused with a sentence, never executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from picochat.common.errors import UserError
from picochat.common.io import atomic_write, atomic_write_json

KEEP_LAST = 2  # training checkpoints kept per stage (older ones are pruned after a save)
WEIGHTS = "model.safetensors"  # the finished artifact's weights
LEGACY_WEIGHTS = "model.pt"    # the same, as written before safetensors (torch.save of the state dict)


def rng_state() -> dict[str, Any]:
    # numpy's state holds an ndarray, which the weights-only unpickler refuses: keep its key as a tensor
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                       has_gauss, cached), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _serialize(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(stage_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write checkpoints/step_N.pt (+ its .json digest) atomically; prune old ones."""
    ckpt_dir = Path(stage_dir) / "checkpoints"
    data = _serialize({**state, "step": step, "rng": rng_state()})
    path = ckpt_dir / f"step_{step:06d}.pt"
    atomic_write(path, lambda f: f.write(data))
    atomic_write_json(path.with_suffix(".json"),
                      {"step": step, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    for old in sorted(ckpt_dir.glob("step_*.pt"))[:-KEEP_LAST]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return path


def _verified_load(path: Path) -> dict[str, Any]:
    """Load a checkpoint after checking its size and hash against the digest file."""
    digest_path = path.with_suffix(".json")
    if not digest_path.exists():
        raise ValueError("it has no digest file (the save was interrupted)")
    digest = json.loads(digest_path.read_text())
    data = path.read_bytes()
    if len(data) != digest["bytes"]:
        raise ValueError(f"it is truncated ({len(data)} of {digest['bytes']} bytes)")
    if hashlib.sha256(data).hexdigest() != digest["sha256"]:
        raise ValueError("its contents do not match the recorded sha256")
    return _weights_only_load(data)


def _weights_only_load(data: bytes) -> Any:
    """torch.load through the restricted unpickler. Checkpoints written before the RNG state was
    stored as a tensor hold a numpy array: its reconstructors are allowed, nothing else is."""
    core = np._core if hasattr(np, "_core") else np.core
    reconstruct = core.multiarray._reconstruct  # numpy 1.x pickles name it numpy.core.multiarray
    numpy_globals = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), reconstruct,
                     (reconstruct, "numpy.core.multiarray._reconstruct")]
    with torch.serialization.safe_globals(numpy_globals):
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_latest_checkpoint(stage_dir: Path) -> dict[str, Any] | None:
    """The newest checkpoint that verifies, or None. Bad ones are reported and skipped."""
    for path in sorted((Path(stage_dir) / "checkpoints").glob("step_*.pt"), reverse=True):
        try:
            return _verified_load(path)
        except Exception as e:  # noqa: BLE001 - any failure means "not usable"; say why and fall back
            print(f"picochat: warning: checkpoint {path} is unusable because {e}; "
                  "falling back to the previous one.", file=sys.stderr)
    return None


def weights_path(stage_dir: str | Path) -> Path:
    """The finished stage's weights file: model.safetensors, or model.pt in a run written before it."""
    stage_dir = Path(stage_dir)
    new = stage_dir / WEIGHTS
    return new if new.exists() or not (stage_dir / LEGACY_WEIGHTS).exists() else stage_dir / LEGACY_WEIGHTS


def is_complete(stage_dir: Path) -> bool:
    return (Path(stage_dir) / "meta.json").exists() and weights_path(stage_dir).exists()


def save_artifact(stage_dir: Path, model: torch.nn.Module | dict[str, Any], meta: dict[str, Any],
                  optimizer: dict[str, Any] | None = None) -> None:
    """The finished stage: weights (a model, or its full state dict) as model.safetensors and, if
    given, the optimizer state (as parallel.full_state returns it) as optimizer.pt, then meta.json
    last (its existence marks completion; it records both sha256s)."""
    stage_dir = Path(stage_dir)
    meta = dict(meta)
    if optimizer is not None:
        opt_data = _serialize(optimizer)
        atomic_write(stage_dir / "optimizer.pt", lambda f: f.write(opt_data))
        meta["optimizer_sha256"] = hashlib.sha256(opt_data).hexdigest()
    state = model if isinstance(model, dict) else model.state_dict()
    # safetensors stores each tensor's own bytes: no views, no shared storage
    data = safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()},
                                  metadata={"format": "pt"})
    atomic_write(stage_dir / WEIGHTS, lambda f: f.write(data))
    (stage_dir / LEGACY_WEIGHTS).unlink(missing_ok=True)  # a retrained stage drops its old-format weights
    atomic_write_json(stage_dir / "meta.json", {**meta, "weights": WEIGHTS, "sha256": hashlib.sha256(data).hexdigest()})


def load_weights(stage_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A finished stage's state dict (on CPU, hash-checked against meta.json) and its meta.json.
    Never unpickles code: safetensors is a tensor table; a legacy model.pt goes through the
    weights-only loader."""
    stage_dir = Path(stage_dir)
    if not is_complete(stage_dir):
        raise UserError(f"no finished model in {stage_dir}; train that stage first (see `picochat train --help`)")
    meta = json.loads((stage_dir / "meta.json").read_text())
    path = weights_path(stage_dir)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise UserError(f"{path} is corrupt (sha256 mismatch); retrain the stage or restore it")
    if path.name == WEIGHTS:
        try:
            return safetensors.torch.load(data), meta
        except Exception as e:  # noqa: BLE001 - a malformed header is a damaged file, whatever the error type
            raise UserError(f"{path} is not a readable safetensors file ({e}); "
                            "retrain the stage or restore it") from None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), meta
    except pickle.UnpicklingError:
        raise UserError(f"{path} (the pre-safetensors format) holds more than tensors, so it was not loaded; "
                        f"if you trust its source, load it with torch.load and save the state dict as "
                        f"{WEIGHTS} with safetensors.torch.save_file") from None


def load_optimizer_state(stage_dir: str | Path) -> dict[str, Any] | None:
    """A finished stage's final optimizer state, or None when it saved none (an artifact from before
    optimizer.pt existed, or written without one)."""
    stage_dir = Path(stage_dir)
    meta = json.loads((stage_dir / "meta.json").read_text())
    path = stage_dir / "optimizer.pt"
    if "optimizer_sha256" not in meta or not path.exists():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["optimizer_sha256"]:
        raise UserError(f"{path} is corrupt (sha256 mismatch); restore it, or run without --warm-start-optim")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def has_training_checkpoint(stage_dir: Path) -> bool:
    """Whether the stage has a training checkpoint to resume from (verified or not)."""
    return any((Path(stage_dir) / "checkpoints").glob("step_*.pt"))


def load_model(stage_dir: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load a finished stage's model (eval mode) and its meta.json."""
    from picochat.model.gpt import GPT, GPTConfig

    state, meta = load_weights(stage_dir)
    model = GPT(GPTConfig(**meta["model_config"]))
    model.load_state_dict(state)
    return model.to(device).eval(), meta
