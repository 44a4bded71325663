"""picochat held equal to the references its docs say it matches, when they are installed.

rustbpe (pip install rustbpe; in the `test` extra): picochat/tokenizer/bpe.py says its trainer
has rustbpe's semantics ("on the same chunks our merges equal its merges": highest count, then
the lowest pair, count-1 pairs allowed, an early stop when no pair is left), and guide ch. 10 /
benchmarks/RESULTS.md say the trained vocabulary is identical to rustbpe's. Checked here for the
reference trainer, the native core (when built) and `Tokenizer.train` on small offline texts, and
for the native core on 3 MB of the mirror's Gutenberg books (PICOCHAT_MIRROR).

nanochat (a karpathy/nanochat checkout named by NANOCHAT_DIR): picochat's split pattern is
nanochat's (bpe.py, guide ch. 03), its width rule is nanochat's (`GPTConfig.from_depth`, guide
ch. 04), its FLOPs per token are nanochat's estimate (`GPT.flops_per_token`, PaLM's), and the
horizon's scaling parameters are nanochat's count (train/horizon.py), each up to the modules
nanochat has and picochat does not (value-embedding gates, the smear gate), which the docs name;
and CORE's prompts, scored spans and verdicts are nanochat's core_eval's (guide ch. 09; this one
also needs the mirror's CORE bundle, PICOCHAT_MIRROR). Every test skips with the reason when its
reference is missing.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.corpora import mirror_gutenberg

from picochat.data import synthetic
from picochat.model.gpt import GPT, GPTConfig
from picochat.tokenizer import bpe, fast
from picochat.tokenizer.tokenizer import Tokenizer

# ----------------------------------------------------------------------------- rustbpe

TEXTS = {
    "synthetic": synthetic.chunk("train", 3)[:20],
    "known-answer": ["aaabdaaabac"],                      # bpe.train's doctest (Wikipedia's example)
    "forced-ties": ["abcdefgh"],                          # every pair once: the tie-break decides all
    "repetitive": ["ab ab ab ba ba ba", "aaaa aaaa", "x" * 500, "12345678901234567890 " * 5],
    "non-ascii": ["Héllo wörld, 你好 🙂 naïve café ünïcödé " * 10, "Ελληνικά και русский текст 42."],
}
PATTERNS = {"picochat": bpe.SPLIT_PATTERN, "gpt4": bpe.GPT4_SPLIT_PATTERN}


def rustbpe_vocab(texts: list[str], num_merges: int, pattern: str) -> list[bytes]:
    """rustbpe's vocabulary in rank order (ids 0..255 are the bytes, as in ours)."""
    rustbpe = pytest.importorskip("rustbpe", reason="rustbpe is not installed (pip install rustbpe, or the test extra)")
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(texts), 256 + num_merges, pattern=pattern)
    ranks = tok.get_mergeable_ranks()
    assert [rank for _, rank in ranks] == list(range(len(ranks)))
    return [bytes(b) for b, _ in ranks]


@pytest.mark.parametrize("pattern", PATTERNS, ids=str)
@pytest.mark.parametrize("name", TEXTS, ids=str)
def test_reference_trainer_learns_rustbpes_merges(name, pattern):
    texts = TEXTS[name]
    for num_merges in (5, 60, 300):   # 300 runs past the end of the short texts: both stop early
        want = rustbpe_vocab(texts, num_merges, PATTERNS[pattern])
        assert bpe.vocab_bytes(bpe.train(texts, num_merges, PATTERNS[pattern])) == want, (name, num_merges)


@pytest.mark.skipif(not fast.available(), reason="the native tokenizer core is not built")
@pytest.mark.parametrize("name", TEXTS, ids=str)
def test_native_trainer_learns_rustbpes_merges(name):
    texts = TEXTS[name]
    want = rustbpe_vocab(texts, 300, bpe.SPLIT_PATTERN)
    assert bpe.vocab_bytes(fast.train(texts, 300)) == want


@pytest.mark.skipif(not fast.available(), reason="the native tokenizer core is not built")
def test_native_trainer_learns_rustbpes_merges_on_gutenberg():
    """Guide ch. 10: on real books the merge list is identical to rustbpe's (the benchmark checks
    the whole 58 MB corpus; here 3 MB and 4,000 merges, deep into the count-tie region)."""
    docs = mirror_gutenberg(3_000_000, offset=11)
    if docs is None:
        pytest.skip("the Gutenberg books of the data mirror are not available (set PICOCHAT_MIRROR)")
    assert bpe.vocab_bytes(fast.train(docs, 4000)) == rustbpe_vocab(docs, 4000, bpe.SPLIT_PATTERN)


def test_tokenizer_vocabulary_is_rustbpes():
    """What benchmarks/tokenizer_train.py checks on the whole Gutenberg corpus, on a small text:
    the ordinary tokens of a trained Tokenizer are rustbpe's vocabulary, rank for rank (rustbpe
    is asked for the vocabulary without our special tokens)."""
    texts = [doc for i in range(2) for doc in synthetic.chunk("train", i)]
    tok = Tokenizer.train(texts, vocab_size=1024)
    ours = [tok.id_to_bytes(i) for i in range(tok.vocab_size) if tok.id_to_bytes(i)]
    assert ours == rustbpe_vocab(texts, len(ours) - 256, bpe.SPLIT_PATTERN)

# ----------------------------------------------------------------------------- nanochat


@pytest.fixture(scope="module")
def nanochat() -> SimpleNamespace:
    """nanochat's checkout (NANOCHAT_DIR) and its model module, imported from there."""
    root = Path(os.environ.get("NANOCHAT_DIR", ""))
    if not os.environ.get("NANOCHAT_DIR") or not (root / "nanochat" / "gpt.py").is_file():
        pytest.skip("NANOCHAT_DIR does not name a karpathy/nanochat checkout (git clone "
                    "https://github.com/karpathy/nanochat; NANOCHAT_DIR=path)")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        try:
            from nanochat import gpt
        except ImportError as e:  # its own dependencies (filelock, ...) missing here
            pytest.skip(f"nanochat at {root} does not import here: {e}")
    return SimpleNamespace(root=root, gpt=gpt)


def _script_defaults(path: Path, flags: tuple[str, ...]) -> dict[str, object]:
    """The `default=` of some `parser.add_argument("--flag", ...)` calls in a nanochat script."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            flag = ast.literal_eval(node.args[0]) if isinstance(node.args[0], ast.Constant) else None
            for kw in node.keywords:
                if flag in flags and kw.arg == "default":
                    found[flag] = ast.literal_eval(kw.value)
    assert set(found) == set(flags), f"{path}: no default found for {set(flags) - set(found)}"
    return found


def nanochat_model(nc: SimpleNamespace, depth: int, vocab_size: int = 32768, seq_len: int = 2048,
                   window_pattern: str = "L") -> torch.nn.Module:
    """The model nanochat's base_train builds for `--depth`: its own `build_model_meta` (taken
    from scripts/base_train.py and run with the script's default width flags), on the meta device."""
    script = nc.root / "scripts" / "base_train.py"
    defaults = _script_defaults(script, ("--aspect-ratio", "--head-dim"))
    fn = next((n for n in ast.parse(script.read_text()).body
               if isinstance(n, ast.FunctionDef) and n.name == "build_model_meta"), None)
    assert fn is not None, f"{script} has no build_model_meta any more: the width rule moved"
    args = SimpleNamespace(aspect_ratio=defaults["--aspect-ratio"], head_dim=defaults["--head-dim"],
                           max_seq_len=seq_len, window_pattern=window_pattern)
    namespace = {"args": args, "vocab_size": vocab_size, "GPTConfig": nc.gpt.GPTConfig, "GPT": nc.gpt.GPT,
                 "torch": torch}
    exec(compile(ast.Module([fn], type_ignores=[]), str(script), "exec"), namespace)
    return namespace["build_model_meta"](depth)


def picochat_model(depth: int, **kw) -> GPT:
    with torch.device("meta"):
        return GPT(GPTConfig.from_depth(depth, **kw))


def _extra_matmul_weights(model: torch.nn.Module, names: tuple[str, ...]) -> int:
    """Weights of nanochat's modules that picochat's default model does not have."""
    return sum(m.weight.numel() for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in names)


def test_split_pattern_is_nanochats(nanochat):
    tree = ast.parse((nanochat.root / "nanochat" / "tokenizer.py").read_text())
    theirs = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and any(getattr(t, "id", "") == "SPLIT_PATTERN" for t in n.targets))
    assert bpe.SPLIT_PATTERN == theirs


@pytest.mark.parametrize("depth", [1, 2, 4, 12, 20, 24, 26, 32])
def test_width_rule_is_nanochats(nanochat, depth):
    theirs = nanochat_model(nanochat, depth).config
    ours = GPTConfig.from_depth(depth)
    assert (ours.n_layer, ours.n_embd, ours.n_head, ours.n_kv_head) == \
        (theirs.n_layer, theirs.n_embd, theirs.n_head, theirs.n_kv_head)


@pytest.mark.parametrize("window_pattern", ["L", "SSSL"])
@pytest.mark.parametrize("depth", [12, 24])
def test_flops_per_token_are_nanochats_estimate(nanochat, depth, window_pattern):
    """6 per matmul weight plus 12·H·D·keys per layer, on both sides; nanochat's count also holds
    its value-embedding gates and smear gate (6 FLOPs per weight), which picochat's model lacks.
    At T = 2048 both put a short window at a quarter of the context (512 keys)."""
    theirs = nanochat_model(nanochat, depth, window_pattern=window_pattern)
    ours = picochat_model(depth, window_pattern=window_pattern)
    extra = _extra_matmul_weights(theirs, ("ve_gate", "smear_gate"))
    assert 0 < extra < 1e-4 * ours.flops_per_token()
    assert theirs.estimate_flops() == ours.flops_per_token() + 6 * extra


@pytest.mark.parametrize("depth", [12, 20, 24])
def test_scaling_params_are_nanochats(nanochat, depth):
    """train/horizon.py: N = block matrices + lm_head as nanochat counts them, less nanochat's
    value-embedding gates (12 x n_kv_head on every other layer: 1,728 weights at d24)."""
    from picochat.train.horizon import scaling_params

    theirs = nanochat_model(nanochat, depth)
    counts = theirs.num_scaling_params()
    gates = _extra_matmul_weights(theirs, ("ve_gate",))
    assert counts["transformer_matrices"] + counts["lm_head"] - gates == scaling_params(picochat_model(depth))
    if depth == 24:
        assert gates == 1728


def test_core_scoring_is_nanochats(nanochat, tok):
    """Guide ch. 09: picochat's CORE prompts, scored token spans and per-example verdicts agree
    with nanochat's core_eval (benchmarks/core_parity.py's comparison, here on 1 example of every
    task file in the mirror's bundle on a tiny random model with non-flat predictions)."""
    import importlib.util

    from helpers.tiny import tiny_gpt

    mirror = os.environ.get("PICOCHAT_MIRROR", "")
    bundle = Path(mirror) / "core_icl"
    if not (bundle / "core.yaml").is_file():
        pytest.skip("PICOCHAT_MIRROR with core_icl/ (the CORE bundle) is not available")
    pytest.importorskip("jinja2", reason="nanochat's core_eval needs jinja2")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(nanochat.root))
        from nanochat import core_eval
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "core_parity.py"
    spec = importlib.util.spec_from_file_location("core_parity", path)
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    model = tiny_gpt(tok.vocab_size, seq_len=2048, n_layer=2, n_embd=64, std=0.5)
    rows, _, _ = parity.compare(core_eval, bundle, tok, model, per_task=11, scored=1)  # 10-shot tasks need 11
    assert len(rows) >= 10, f"only {len(rows)} task files in {bundle}"
    assert [r for r in rows if not r[1] == r[2] == r[3] == r[4]] == []


@pytest.mark.parametrize("shape", [(64, 32), (32, 96), (48, 48)], ids=str)
def test_muon_refinements_are_nanochats(nanochat, shape):
    """Muon with equilibrate_rows, variance_reduction and cautious_wd takes nanochat's Muon steps
    (its muon_step_fused, run uncompiled) for tall, wide and square stacks, three steps in a row.
    (nanochat's decay also carries the tall-matrix rate factor; its wd is divided by it here so both
    decay by lr x wd, picochat's convention.)"""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(nanochat.root))
        from nanochat import optim as nano_optim
    fused = getattr(nano_optim.muon_step_fused, "_torchdynamo_orig_callable", nano_optim.muon_step_fused)
    from picochat.optim.muon import Muon

    torch.manual_seed(0)
    lr, wd, (m, n) = 0.02, 0.3, shape
    scale = max(1.0, m / n) ** 0.5
    start = torch.randn(3, m, n)
    params = [torch.nn.Parameter(w.clone()) for w in start]
    ours = Muon(params, lr=lr, weight_decay=wd, equilibrate_rows=True, variance_reduction=True, cautious_wd=True)
    theirs, momentum = start.clone(), torch.zeros_like(start)
    second = torch.zeros(3, m, 1) if m >= n else torch.zeros(3, 1, n)
    for _ in range(3):
        grads = torch.randn(3, m, n)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        ours.step()
        fused(grads.clone(), theirs, momentum, second, torch.tensor(0.95), torch.tensor(lr * scale),
              torch.tensor(wd / scale), torch.tensor(0.9), 5, -1 if m >= n else -2)
        torch.testing.assert_close(torch.stack([p.detach() for p in params]), theirs, atol=2e-6, rtol=0)
    assert (theirs - start).abs().max() > 0.01  # the steps moved the weights
