"""Greedy completions of a few fixed prompts: the quickest look at what a model has learnt.

A base model is a document continuer, so each prompt is plain text after `<|bos|>`: a fact to
recall, a bit of arithmetic, a word relation. The same prompts for every run and stage make the
completions comparable across the report card's columns. Decoding is greedy (temperature 0)
through the shared engine, with no tools, and stops at `<|bos|>` (a new document) or after
`max_tokens` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

PROMPTS = (
    "The capital of France is",
    "Water freezes at a temperature of",
    "The largest planet in our solar system is",
    "Monday, Tuesday, Wednesday,",
    "If x + 4 = 10, then x =",
    "The opposite of cold is",
    "Once upon a time, there was a",
    "12 + 30 =",
)


def complete(engine, prompts: Sequence[str] = PROMPTS, max_tokens: int = 24) -> list[dict]:
    """[{"prompt", "completion"}] for each prompt, decoded greedily in one batch."""
    tok = engine.tokenizer
    ids = [tok.encode(p, prepend=tok.bos_id) for p in prompts]
    out = engine.generate(ids, temperature=0.0, max_tokens=max_tokens, max_rows=len(ids))
    return [{"prompt": p, "completion": samples[0].text} for p, samples in zip(prompts, out)]


def main(cfg) -> None:
    """`picochat eval samples`: write <stage>/eval/samples.json (the report card shows them)."""
    from picochat.common.device import init_distributed
    from picochat.common.io import atomic_write_json
    from picochat.common.log import banner, print0
    from picochat.common.paths import stage_dir
    from picochat.engine.engine import Engine
    from picochat.run_layout import load_model_and_tokenizer

    _, device = init_distributed(cfg.run.device)
    model, tokenizer, stage = load_model_and_tokenizer(cfg.run.run, cfg.run.home, cfg.args.stage, device)
    banner(f"sample completions: run '{cfg.run.run}', stage {stage}")
    rows = complete(Engine(model, tokenizer, tool=None), PROMPTS, cfg.args.max_tokens)
    for r in rows:
        print0(f"{r['prompt']}\033[1m{r['completion']}\033[0m".replace("\n", " "))
    path = stage_dir(cfg.run.run, stage, cfg.run.home) / "eval" / "samples.json"
    atomic_write_json(path, {"stage": stage, "decoding": "greedy", "max_tokens": cfg.args.max_tokens,
                             "samples": rows})
    print0(f"wrote {path}")
