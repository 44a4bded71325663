"""Checkpoints: atomic, verified, and complete enough to resume a run exactly.

A stage directory (`runs/<run>/<stage>/`) holds, while training:
  checkpoints/step_000500.pt   training state: model, optimizers, data cursor, RNG, counters
  checkpoints/step_000500.json its size and sha256, written after the .pt (so a .pt without a
                               matching .json was interrupted mid-write and is ignored)
  config.json, metrics.jsonl   the resolved config and the per-step metrics
and, once finished, the artifact (model.safetensors, optimizer.pt, meta.json) that
model/artifact.py writes and loads, so inference never imports training.

Every file goes through common.io.atomic_write (temp file + fsync + rename): a crash or SIGKILL
at any moment leaves the previous checkpoint intact. On load, the newest checkpoint that passes
verification wins; a corrupt one is reported in one sentence and skipped, never deleted.

Training checkpoints are torch.save files (optimizer state, cursors, RNG) but are read with
torch.load(weights_only=True): the restricted unpickler builds tensors and plain containers only.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from picochat.common.io import atomic_write, atomic_write_json
from picochat.model.artifact import torch_bytes

KEEP_LAST = 2  # training checkpoints kept per stage (older ones are pruned after a save)


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


def save_checkpoint(stage_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write checkpoints/step_N.pt (+ its .json digest) atomically; prune old ones."""
    ckpt_dir = Path(stage_dir) / "checkpoints"
    data = torch_bytes({**state, "step": step, "rng": rng_state()})
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


def has_training_checkpoint(stage_dir: Path) -> bool:
    """Whether the stage has a training checkpoint to resume from (verified or not)."""
    return any((Path(stage_dir) / "checkpoints").glob("step_*.pt"))
