"""Decode throughput: picochat's Engine vs nanochat's Engine on the same weights.

    python benchmarks/decode.py --nanochat /work/nanochat            # demo-sized model
    python benchmarks/decode.py --nanochat DIR --depth 12 --head-dim 128 --vocab 32768

Our GPT's weights are copied into nanochat's GPT. nanochat's extra features are set to their
neutral values (residual lambdas 1, x0/smear/backout lambdas 0, value embeddings 0, full
attention window) and its rotary tables are replaced by ours (nanochat rotates by -θ, so its sin
table gets our -sin), so both models do the same matmuls. One difference remains in the math:
nanochat multiplies q and k by 1.2 after QK-norm, so greedy tokens may differ; the work per
token does not. The special tokens' output rows are zeroed so that neither engine stops early
(at temperature 0 a zero logit never beats the largest of thousands of random ones).

Three workloads, each timed as generated tokens / wall time (prefill included; median of runs, the two
engines alternating):
- b1:        one prompt, one sample
- samples8:  one prompt, 8 samples (both engines prefill once and decode 8 rows)
- prompts8:  8 different prompts; nanochat's Engine takes one prompt per call, so it runs them
             one after another, while ours decodes them in one batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from picochat.engine.engine import Engine
from picochat.model.gpt import GPT, GPTConfig
from picochat.tokenizer.tokenizer import Tokenizer


class NanochatTokenizerView:
    """The four methods nanochat's Engine calls, answered by our tokenizer."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok

    def encode_special(self, s: str) -> int:
        return self.tok.special_id(s)

    def get_bos_token_id(self) -> int:
        return self.tok.bos_id

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def build_ours(args, tok: Tokenizer) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig.from_depth(args.depth, head_dim=args.head_dim, vocab_size=args.vocab, seq_len=args.seq_len)
    model = GPT(cfg)
    with torch.no_grad():  # random but not degenerate: the real init zeroes the output projections
        for block in model.blocks:
            block.attn.c_proj.weight.normal_(std=0.02)
            block.mlp.c_proj.weight.normal_(std=0.02)
        model.lm_head.weight.normal_(std=0.05)
        model.lm_head.weight[list(tok.special_tokens.values())] = 0.0
    return model.eval()


def build_nanochat(ours: GPT, nanochat_dir: str):
    sys.path.insert(0, nanochat_dir)
    from nanochat.gpt import GPT as NGPT
    from nanochat.gpt import GPTConfig as NConfig

    c = ours.config
    model = NGPT(NConfig(sequence_len=c.sequence_len, vocab_size=c.vocab_size, n_layer=c.n_layer,
                         n_head=c.n_head, n_kv_head=c.n_kv_head, n_embd=c.n_embd, window_pattern="L"))
    model.init_weights()
    with torch.no_grad():
        model.transformer.wte.weight.copy_(ours.wte.weight)
        model.lm_head.weight.copy_(ours.lm_head.weight)
        for mine, theirs in zip(ours.blocks, model.transformer.h):
            for name in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                theirs.get_submodule(name).weight.copy_(mine.get_submodule(name).weight)
        model.resid_lambdas.fill_(1.0)
        model.x0_lambdas.zero_()
        model.smear_lambda.zero_()
        model.backout_lambda.zero_()
        for ve in model.value_embeds.values():
            ve.weight.zero_()
        n = model.cos.size(1)
        model.cos = ours.cos[:, :n].to(model.cos.dtype).clone()
        model.sin = -ours.sin[:, :n].to(model.sin.dtype).clone()
    return model.eval()


def timed_pair(fa, fb, repeats: int) -> tuple[tuple[float, int], tuple[float, int]]:
    """Median seconds and tokens of two functions, run alternately (a shared, noisy machine
    slows both alike) after one warm-up each."""
    fa(), fb()
    runs: tuple[list[float], list[float]] = ([], [])
    tokens = [0, 0]
    for _ in range(repeats):
        for k, f in enumerate((fa, fb)):
            t0 = time.perf_counter()
            tokens[k] = f()
            runs[k].append(time.perf_counter() - t0)
    return (statistics.median(runs[0]), tokens[0]), (statistics.median(runs[1]), tokens[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""), help="nanochat checkout")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if not args.nanochat or not os.path.isdir(args.nanochat):
        sys.exit("decode.py: pass --nanochat DIR (a karpathy/nanochat checkout) or set NANOCHAT_DIR")
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = Tokenizer([])  # 256 byte tokens + the specials: all the engines need from a tokenizer
    ours = build_ours(args, tok)
    theirs = build_nanochat(ours, args.nanochat)
    from nanochat.engine import Engine as NEngine  # importable now: build_nanochat put it on sys.path

    mine, ref = Engine(ours, tok, tool=None), NEngine(theirs, NanochatTokenizerView(tok))
    g = torch.Generator().manual_seed(1)
    prompts = [[tok.bos_id] + torch.randint(0, 256, (args.prompt_len + 3 * i,), generator=g).tolist()
               for i in range(8)]
    T = args.max_tokens

    def ours_run(ps, n):
        return sum(len(c.ids) for cs in mine.generate(ps, temperature=0.0, max_tokens=T, n=n) for c in cs)

    def theirs_run(ps, n):
        total = 0
        for p in ps:
            for column, _ in ref.generate(p, num_samples=n, max_tokens=T, temperature=0.0):
                total += len(column)
        return total

    print(f"model: depth {args.depth}, width {ours.config.n_embd}, heads {ours.config.n_head}, "
          f"vocab {args.vocab}, {ours.num_params() / 1e6:.1f}M params; prompt ~{args.prompt_len} tokens, "
          f"{T} new tokens per row; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'workload':<10} {'picochat tok/s':>15} {'nanochat tok/s':>15} {'ratio':>7}")
    with torch.inference_mode():
        for name, ps, n in (("b1", prompts[:1], 1), ("samples8", prompts[:1], 8), ("prompts8", prompts, 1)):
            (t_ours, n_ours), (t_ref, n_ref) = timed_pair(lambda ps=ps, n=n: ours_run(ps, n),
                                                          lambda ps=ps, n=n: theirs_run(ps, n), args.repeats)
            a, b = n_ours / t_ours, n_ref / t_ref
            print(f"{name:<10} {a:>15.1f} {b:>15.1f} {a / b:>6.2f}x")


if __name__ == "__main__":
    main()
