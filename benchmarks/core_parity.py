"""CORE parity with nanochat: same prompts, same scored spans, same per-example verdicts.

Runs nanochat's own `core_eval` (imported from --nanochat DIR / NANOCHAT_DIR; needs jinja2) and
picochat's `eval/core.py` on the same model and tokenizer over the first N examples of every task
file present, and prints, per task, how many rendered prompts, token spans and verdicts agree.
The model is a small random GPT (weights scaled up so its predictions are not flat); parity of
the scoring code does not need a trained model.

    python benchmarks/core_parity.py --nanochat ../nanochat --mirror ../shared/data --per-task 40
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch


class NanochatTokenizerAdapter:
    """nanochat's tokenizer interface (`tok(prompts, prepend=id)`, `get_bos_token_id()`) over ours."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, texts, prepend=None):
        return [self.tok.encode(t, prepend=prepend) for t in texts]

    def get_bos_token_id(self):
        return self.tok.bos_id


def compare(ref, bundle, tok, model, per_task: int,
            scored: int = 0) -> tuple[list[tuple[str, int, int, int, int]], float, float]:
    """Per task file present in `bundle`: (label, examples, same prompts, same spans, same verdicts)
    of nanochat's core_eval module `ref` against picochat's eval/core.py on the first `per_task`
    examples (the few-shot pool; the first `scored` of them are compared, 0 = all); and the
    seconds each side spent scoring (one example per forward)."""
    from picochat.eval import core

    ntok = NanochatTokenizerAdapter(tok)
    renders = {"multiple_choice": (core.render_mc, ref.render_prompts_mc),
               "schema": (core.render_schema, ref.render_prompts_schema),
               "language_modeling": (core.render_lm, ref.render_prompts_lm)}
    batchers = {"multiple_choice": ref.batch_sequences_mc, "schema": ref.batch_sequences_schema,
                "language_modeling": ref.batch_sequences_lm}
    rows, t_ref, t_ours = [], 0.0, 0.0
    for spec in core.load_specs(bundle):
        if not (bundle / "eval_data" / spec.dataset_uri).is_file():
            continue
        data = core.load_examples(bundle, spec, per_task)
        meta = {"task_type": spec.task_type, "num_fewshot": spec.num_fewshot,
                "continuation_delimiter": spec.delimiter}
        same_prompt = same_span = same_verdict = 0
        n = min(scored, len(data)) if scored > 0 else len(data)
        for i in range(n):
            shots = [data[j] for j in core.fewshot_indices(i, len(data), spec.num_fewshot)]
            ours_r, ref_r = renders[spec.task_type]
            same_prompt += ours_r(data[i], spec.delimiter, shots) == ref_r(data[i], spec.delimiter, shots)
            p = core.prepare(i, data, spec, tok)
            ids, starts, ends = batchers[spec.task_type](ntok, ref_r(data[i], spec.delimiter, shots))
            same_span += (p.rows, p.starts, p.ends) == (ids, starts, ends)
            t0 = time.perf_counter()
            v_ref = bool(ref.evaluate_example(i, model, ntok, data, "cpu", meta))
            t1 = time.perf_counter()
            v_ours = core.judge(p, spec.task_type, core.score_batch(model, [p], tok.bos_id, "cpu")[0])
            t_ours += time.perf_counter() - t1
            t_ref += t1 - t0
            same_verdict += v_ref == v_ours
        rows.append((spec.label, n, same_prompt, same_span, same_verdict))
    return rows, t_ref, t_ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""))
    ap.add_argument("--mirror", default=os.environ.get("PICOCHAT_MIRROR", ""))
    ap.add_argument("--per-task", type=int, default=40)
    args = ap.parse_args()
    if not args.nanochat:
        sys.exit("give --nanochat DIR (a checkout of karpathy/nanochat) or set NANOCHAT_DIR")
    sys.path.insert(0, args.nanochat)
    from nanochat import core_eval as ref

    from picochat.data.corpus import iter_documents
    from picochat.eval import core
    from picochat.model.gpt import GPT, GPTConfig
    from picochat.tokenizer.tokenizer import Tokenizer

    texts = []
    for doc in iter_documents("gutenberg", "val", mirror=args.mirror):
        texts.append(doc)
        if sum(map(len, texts)) > 100_000:
            break
    tok = Tokenizer.train(texts, vocab_size=512)
    torch.manual_seed(0)
    model = GPT(GPTConfig(sequence_len=2048, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_kv_head=2,
                          n_embd=64)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    rows, t_ref, t_ours = compare(ref, core.bundle_dir(args.mirror), tok, model, args.per_task)
    print(f"{'task':<34} {'n':>4} {'prompts':>8} {'spans':>6} {'verdicts':>9}")
    for label, n, same_prompt, same_span, same_verdict in rows:
        print(f"{label:<34} {n:>4} {same_prompt:>8} {same_span:>6} {same_verdict:>9}")
    total, agree_all = sum(r[1] for r in rows), sum(min(r[2:]) for r in rows)
    print(f"examples: {total}; all three agree on at least {agree_all} ({agree_all / max(1, total):.2%})")
    print(f"scoring time, one example per forward: nanochat {t_ref:.1f}s, picochat {t_ours:.1f}s "
          f"(ratio picochat/nanochat {t_ours / max(t_ref, 1e-9):.2f})")


if __name__ == "__main__":
    main()
