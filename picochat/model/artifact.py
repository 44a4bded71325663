"""The finished artifact of a stage: its weights and meta.json, what inference and evaluation load.

A finished stage directory (`runs/<run>/<stage>/`) holds model.safetensors (the weights as a flat
tensor table, so loading a model someone shared never unpickles code), optimizer.pt (the final
optimizer state a later stage may warm-start from; its sha256 is in meta.json) and meta.json,
written last, so its presence means "this stage is complete". Runs written before safetensors hold
model.pt instead; it still loads, through torch's weights-only unpickler.

This lives with the model, below engine, eval and train, so that loading a model for inference
never imports training; train/checkpoint.py keeps the resumable training checkpoints.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from picochat.common.errors import UserError
from picochat.common.io import atomic_write, atomic_write_json
from picochat.model.gpt import GPT, GPTConfig

WEIGHTS = "model.safetensors"  # the finished artifact's weights
LEGACY_WEIGHTS = "model.pt"    # the same, as written before safetensors (torch.save of the state dict)


def torch_bytes(obj: Any) -> bytes:
    """obj as torch.save writes it, in memory (so it can be hashed, then written atomically)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


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
        opt_data = torch_bytes(optimizer)
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


def save_snapshot(stage_dir: str | Path, step: int, state: dict[str, torch.Tensor], model_config: dict) -> Path:
    """Weights at a step of training, kept for later scoring (never pruned, never resumed from):
    snapshots/step_N.safetensors, its model config in the file's own metadata so it loads alone."""
    meta = {"format": "pt", "step": str(step), "model_config": json.dumps(model_config)}
    data = safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata=meta)
    path = Path(stage_dir) / "snapshots" / f"step_{step:06d}.safetensors"
    atomic_write(path, lambda f: f.write(data))
    return path


def list_snapshots(stage_dir: str | Path) -> dict[int, Path]:
    """{step: path} of a stage's weight snapshots, in step order."""
    paths = sorted((Path(stage_dir) / "snapshots").glob("step_*.safetensors"))
    return {int(p.stem.split("_")[1]): p for p in paths}


def load_snapshot(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A model (eval mode) from one weight snapshot."""
    data = Path(path).read_bytes()
    try:
        header_len = int.from_bytes(data[:8], "little")
        config = json.loads(json.loads(data[8:8 + header_len])["__metadata__"]["model_config"])
        state = safetensors.torch.load(data)
    except Exception as e:  # noqa: BLE001 - any malformed file is a damaged snapshot
        raise UserError(f"{path} is not a readable weight snapshot ({e}); delete it or retrain") from None
    model = GPT(GPTConfig(**config))
    model.load_state_dict(state)
    return model.to(device).eval()


def load_model(stage_dir: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load a finished stage's model (eval mode) and its meta.json."""
    state, meta = load_weights(stage_dir)
    model = GPT(GPTConfig(**meta["model_config"]))
    model.load_state_dict(state)
    return model.to(device).eval(), meta
