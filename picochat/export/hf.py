"""`picochat export hf --run R [--stage S] OUT/`: a finished stage as a Hugging Face model folder.

OUT/ gets model.safetensors, config.json (transformers' NanoChat architecture: see hf_model.py for
why the math is the same), generation_config.json, tokenizer.json + tokenizer_config.json with the
chat template (hf_tokenizer.py), and README.md, a model card with the run's report-card numbers.
It loads with `AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)`,
no remote code. The folder is built beside OUT and renamed into place, so an interrupted export
leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import safetensors.torch
import torch

from picochat.common.errors import UserError
from picochat.common.log import human
from picochat.common.paths import run_dir, stage_dir
from picochat.config import ChatConfig
from picochat.export.hf_model import ExportError, hf_config, hf_state_dict
from picochat.export.hf_tokenizer import tokenizer_config, tokenizer_json, verify_tokenizer_json
from picochat.tokenizer.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def generation_config(tok: Tokenizer) -> dict:
    """Stop where picochat's engine stops (a sampled <|assistant_end|> or <|bos|>); sample as `picochat chat`."""
    chat = ChatConfig()
    end = tok.special_id("<|assistant_end|>")
    return {"bos_token_id": tok.bos_id, "eos_token_id": [end, tok.bos_id], "pad_token_id": end,
            "do_sample": chat.temperature > 0, "temperature": chat.temperature, "top_k": chat.top_k,
            "top_p": chat.top_p}


def model_card(run: str, stage: str, meta: dict, home: str, tokenizer_checked: bool) -> str:
    """README.md: what the model is, how to load it, what is not carried over, and the report card's numbers."""
    from picochat.eval.report import metrics_table

    c = meta["model_config"]
    report = run_dir(run, home) / "report" / "report.md"
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [picochat, nanochat]", "---", "",
        f"# picochat `{run}` ({stage} stage)", "",
        f"A {human(meta.get('num_params') or 0)}-parameter chat model trained with picochat, exported to the "
        "Hugging Face format as transformers' own `NanoChatForCausalLM` (no remote code).", "",
        f"- shape: {c['n_layer']} layers, width {c['n_embd']}, {c['n_head']} query heads, {c['n_kv_head']} "
        f"key/value heads, vocabulary {c['vocab_size']}, trained context {c['sequence_len']} tokens, "
        f"logit soft-cap {c['softcap'] or 'none'}",
        f"- trained: {meta.get('final', {}).get('step', '?')} steps of the {stage} stage",
        "", "## Use", "", "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tok = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "ids = tok.apply_chat_template([{\"role\": \"user\", \"content\": \"What is 7 times 8?\"}],",
        "                              add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
        "out = model.generate(**ids, max_new_tokens=64)",
        "print(tok.decode(out[0, ids[\"input_ids\"].shape[1]:]))", "```", "",
        "## What differs from picochat's own engine", "",
        "- Tool use: picochat's engine runs the calculator on a `<|python_start|>…<|python_end|>` call and feeds "
        "the result back between `<|output_start|>` and `<|output_end|>`; `generate` does not, so a tool call "
        "comes out as text and the model then guesses the output itself.",
        "- Text in a message that spells a special token (e.g. `<|assistant_end|>`) becomes that token here "
        "(transformers parses special tokens in the rendered template); picochat encodes message text as "
        "plain text.",
        "- Assistant content given as several adjacent text parts is encoded as one text here, as separate "
        "texts by picochat (the token ids can differ at the seam).",
    ]
    if not tokenizer_checked:
        lines.append("- The exported tokenizer was not checked against picochat's at export time (the "
                     "`tokenizers` package was not installed).")
    lines += ["", "## Report card", ""]
    if report.exists():
        lines += [f"From `picochat report --run {run}` (the run's files on disk):", "",
                  metrics_table(run_dir(run, home))]
    else:
        lines.append(f"This run had no report card when it was exported (`picochat report --run {run}` writes one).")
    return "\n".join(lines) + "\n"


def _write_folder(out: Path, files: dict[str, bytes], force: bool) -> None:
    """Build the folder beside `out`, then move it into place (replacing `out` only with --force)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(f"{out} already exists and is not empty; choose a new folder or pass --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as e:
        raise UserError(f"cannot create {out} ({e.strerror}); choose a folder you can write to") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the folder is meant to be shared
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_hf(run: str, out: str | Path, *, stage: str = "", home: str = "", dtype: str = "float32",
              force: bool = False) -> Path:
    """Write the Hugging Face folder for a run's stage (the latest finished one when stage is "")."""
    from picochat.model.artifact import load_weights
    from picochat.run_layout import load_tokenizer, resolve_stage

    if dtype not in DTYPES:
        raise UserError(f"unknown --dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    stage = resolve_stage(run, home, stage)
    state, meta = load_weights(stage_dir(run, stage, home))
    tok = load_tokenizer(run, home)
    model_config = meta["model_config"]
    if model_config.get("vocab_size") != tok.vocab_size:
        raise ExportError(f"the {stage} model has a vocabulary of {model_config.get('vocab_size')} but the run's "
                          f"tokenizer has {tok.vocab_size}; the run directory is inconsistent")
    weights = hf_state_dict(state, model_config, DTYPES[dtype])
    config = hf_config(model_config, tok.bos_id, tok.special_id("<|assistant_end|>"), DTYPES[dtype])
    tok_json = tokenizer_json(tok)
    try:
        verify_tokenizer_json(tok, tok_json)
        checked = True
    except ImportError:
        checked = False
    as_json = lambda obj: (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    files = {
        "model.safetensors": safetensors.torch.save(weights, metadata={"format": "pt"}),
        "config.json": as_json(config),
        "generation_config.json": as_json(generation_config(tok)),
        "tokenizer.json": as_json(tok_json),
        "tokenizer_config.json": as_json(tokenizer_config(tok, model_config["sequence_len"])),
        "README.md": model_card(run, stage, meta, home, checked).encode(),
    }
    _write_folder(Path(out), files, force)
    return Path(out)


def main(cfg) -> None:
    """`picochat export hf`: write OUT/ and say what was exported."""
    a = cfg.args
    out = export_hf(cfg.run.run, a.out, stage=a.stage, home=cfg.run.home, dtype=a.dtype, force=a.force)
    print(f"exported run '{cfg.run.run}' to {out} (NanoChatForCausalLM + tokenizer with chat template); "
          f"load it with transformers' AutoModelForCausalLM.from_pretrained('{out}')")
