"""`picochat eval core` and `picochat eval bpb`: load a finished stage's model and score it.

Each command prints a table and writes its numbers beside the model, in
`runs/<run>/<stage>/eval/{core,bpb}.json` (atomic write, rank 0 only), for the report card.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from picochat.common.device import autocast_for, init_distributed
from picochat.common.errors import UserError
from picochat.common.io import atomic_write_json
from picochat.common.log import banner, human, is_main_process, print0
from picochat.common.paths import stage_dir
from picochat.eval import bpb, core


def _load(cfg) -> tuple[torch.nn.Module, object, dict, torch.device, Path]:
    """(model, tokenizer, meta, device, stage dir) for cfg.eval.stage of cfg.run.run."""
    from picochat.model.artifact import load_model
    from picochat.run_layout import check_model_stage, load_tokenizer

    check_model_stage(cfg.eval.stage)
    _, device = init_distributed(cfg.run.device)
    out = stage_dir(cfg.run.run, cfg.eval.stage, cfg.run.home)
    model, meta = load_model(out, device)
    return model, load_tokenizer(cfg.run.run, cfg.run.home), meta, device, out


def core_main(cfg) -> None:
    """`picochat eval core`: the CORE in-context-learning score (CORE-n if tasks are missing)."""
    bundle = core.bundle_dir(cfg.run.mirror, cfg.run.home)
    model, tokenizer, meta, device, out = _load(cfg)
    banner(f"CORE eval: run '{cfg.run.run}', stage {cfg.eval.stage} (step {meta.get('step', '?')}) on {device}")
    tasks = [t.strip() for t in cfg.eval.tasks.split(",") if t.strip()] or None
    with autocast_for(device, cfg.eval.dtype):
        result = core.evaluate_core(model, tokenizer, bundle, tasks=tasks, max_per_task=cfg.eval.max_per_task,
                                    batch_size=cfg.eval.batch_size, device=device, log=print0)
    if is_main_process():
        record = {**result.to_dict(), "stage": cfg.eval.stage, "step": meta.get("step"),
                  "max_per_task": cfg.eval.max_per_task, "bundle": str(bundle)}
        atomic_write_json(out / "eval" / "core.json", record)
        print0(f"wrote {out / 'eval' / 'core.json'}")


def _documents(cfg, text: dict) -> list[str]:
    from picochat.data.user_corpus import iter_text

    docs, total = [], 0
    for doc in iter_text(text["source"], cfg.eval.split, data=text["data"], text_field=text["text_field"],
                         val_data=text["val_data"], home=cfg.run.home, mirror=cfg.run.mirror):
        docs.append(doc)
        total += len(doc.encode("utf-8", "surrogatepass"))
        enough_docs = cfg.eval.max_docs and len(docs) >= cfg.eval.max_docs
        if enough_docs or (cfg.eval.max_bytes and total >= cfg.eval.max_bytes):
            break
    if not docs:
        raise UserError(f"the {cfg.eval.split} split of {_describe(text)} has no documents")
    return docs


TEXT_KEYS = ("source", "data", "text_field", "val_data")


def _text_to_score(cfg) -> dict:
    """What bpb scores: --data or --source if given, else what the base stage trained on (its saved
    config), else 'synthetic'."""
    e = cfg.eval
    if e.data or e.source or e.val_data or e.text_field != "text":  # (the last two need --data: an error)
        return {"source": e.source, "data": e.data, "text_field": e.text_field, "val_data": e.val_data}
    path = stage_dir(cfg.run.run, "base", cfg.run.home) / "config.json"
    try:
        train = json.loads(path.read_text())["train"]
    except (OSError, KeyError, ValueError):
        train = {}
    text = {"source": "synthetic", "data": "", "text_field": "text", "val_data": ""}
    text.update({k: train[k] for k in TEXT_KEYS if isinstance(train.get(k), str)})
    return text


def _describe(text: dict) -> str:
    return f"--data {text['data']}" if text["data"] else f"'{text['source']}'"


def bpb_main(cfg) -> None:
    """`picochat eval bpb`: bits per byte on held-out text (tokenizer-independent)."""
    model, tokenizer, meta, device, out = _load(cfg)
    text = _text_to_score(cfg)
    docs = _documents(cfg, text)
    source = f"data:{text['data']}" if text["data"] else text["source"]
    seq_len = model.config.sequence_len
    banner(f"bits per byte: run '{cfg.run.run}', stage {cfg.eval.stage} on {source}/{cfg.eval.split}")
    with autocast_for(device, cfg.eval.dtype):
        scores = bpb.score_documents(model, tokenizer, docs, seq_len=seq_len, device=device,
                                     batch_size=cfg.eval.batch_size)
    value = bpb.aggregate(scores)
    n_bytes, n_tokens = sum(s.num_bytes for s in scores), sum(s.num_tokens for s in scores)
    print0(f"{len(docs)} documents, {human(n_bytes)} bytes, {human(n_tokens)} tokens "
           f"({n_bytes / max(1, n_tokens):.2f} bytes/token): {value:.4f} bits per byte")
    if is_main_process():
        atomic_write_json(out / "eval" / "bpb.json", {
            "bpb": value, "source": source, "split": cfg.eval.split, "val_data": text["val_data"],
            "documents": len(docs), "bytes": n_bytes, "tokens": n_tokens, "seq_len": seq_len, "stage": cfg.eval.stage,
            "step": meta.get("step")})
        print0(f"wrote {out / 'eval' / 'bpb.json'}")
