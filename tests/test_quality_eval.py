"""benchmarks/quality.py scores nanochat's model through an adapter: check it on a tiny fixed model.

A model whose logits are all equal predicts every next token with probability 1/V, so each text
token costs ln V nats; with a byte-level tokenizer (one token per UTF-8 byte) the bits per byte
is exactly log2 V, whatever the documents' lengths or how they are cut into windows.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from picochat.eval.bpb import aggregate, score_documents

ROOT = Path(__file__).resolve().parents[1]


def load_quality():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


class ByteTokenizerNanochatStyle:
    """nanochat's tokenizer interface: get_bos_token_id() and encode(text, prepend=id)."""

    vocab = 257  # 256 bytes + BOS

    def get_bos_token_id(self) -> int:
        return 256

    def encode(self, text, prepend=None, append=None):
        ids = list(text.encode("utf-8"))
        return ([prepend] if prepend is not None else []) + ids


class UniformModel(torch.nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.calls = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.zeros(*idx.shape, self.vocab)


class BigramModel(torch.nn.Module):
    """Logits depend on the previous token only: a fixed random table, for a hand-computed sum."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def test_adapter_uniform_model_gives_log2_vocab():
    quality = load_quality()
    tok = quality.NanochatTokenizerAdapter(ByteTokenizerNanochatStyle())
    assert tok.bos_id == 256
    assert tok.encode("ab", prepend=tok.bos_id) == [256, 97, 98]
    docs = ["a short one", "é and a longer document " * 5]  # the second spans several 16-token windows
    model = UniformModel(ByteTokenizerNanochatStyle.vocab)
    scores = score_documents(model, tok, docs, seq_len=16, batch_size=2)
    assert [s.num_tokens for s in scores] == [len(d.encode("utf-8")) for d in docs]
    assert math.isclose(aggregate(scores), math.log2(257), rel_tol=1e-6)


def test_adapter_bigram_model_matches_hand_sum():
    quality = load_quality()
    tok = quality.NanochatTokenizerAdapter(ByteTokenizerNanochatStyle())
    model = BigramModel(ByteTokenizerNanochatStyle.vocab)
    doc = "hello"
    ids = [256] + list(doc.encode("utf-8"))
    logp = torch.log_softmax(model.table, dim=-1)
    nats = -sum(logp[a, b].item() for a, b in zip(ids[:-1], ids[1:]))
    expected = nats / (math.log(2) * len(doc))
    got = aggregate(score_documents(model, tok, [doc], seq_len=512))
    assert math.isclose(got, expected, rel_tol=1e-5)
    # windows of 2 restart the context, but each window's first input is the previous target, and a
    # bigram model needs no more context than that: every token is still scored once, same sum
    windowed = aggregate(score_documents(model, tok, [doc], seq_len=2))
    assert math.isclose(windowed, expected, rel_tol=1e-5)


def test_time_to_reach_interpolates_between_eval_points():
    quality = load_quality()
    side = quality.SideResult("x", curve=[(0, 3.0), (10, 2.0), (20, 1.5)], curve_s=[0.0, 5.0, 15.0])
    # 1.75 lies halfway between the points at steps 10 (2.0) and 20 (1.5): 10 s, step 15
    assert quality.time_to_reach(side, 1.75) == (10.0, 15.0)
    assert quality.time_to_reach(side, 2.0) == (5.0, 10.0)  # reached exactly at an eval point
    assert quality.time_to_reach(side, 3.5) == (0.0, 0.0)  # already below at the first point
    assert quality.time_to_reach(side, 1.4) is None  # never reached


def test_report_and_record(tmp_path, monkeypatch):
    quality = load_quality()
    ours = quality.SideResult("picochat", curve=[(10, 2.0), (20, 1.5)], curve_s=[5.0, 15.0], final_bpb=1.50,
                              train_s=20.0, first_step_s=5.0, tokens=2000, steps=20)
    ref = quality.SideResult("nanochat", curve=[(0, 3.0), (10, 2.2), (20, 1.75)], curve_s=[0.0, 6.0, 20.0],
                             final_bpb=1.60, train_s=25.0, first_step_s=5.0, tokens=2000, steps=20)
    text = quality.report(ours, ref, None)
    assert "| final val bpb, common evaluator | 1.5000 | 1.6000 | 0.938 |" in text
    # 2000 x 19/20 tokens over 20 - 5 s and over 25 - 5 s
    assert "| tokens/s, first step excluded | 127 | 95 | 1.333 |" in text
    assert "bpb difference picochat - nanochat (this run): -0.1000" in text
    # nanochat ends at 1.75, halfway between picochat's points at steps 10 (5 s) and 20 (15 s)
    assert "own-curve target 1.7500: picochat 10.0 s (step 15.0 of 20) vs nanochat 20.0 s (step 20): 2.00x" in text
    monkeypatch.setattr(sys, "argv", ["quality.py", "--mirror", "some dir"])
    args = quality.argparse.Namespace(device="cpu", png=str(tmp_path / "curves.png"))
    results = tmp_path / "RESULTS.md"
    results.write_text("# results\n")
    quality.record(text, args, results)
    written = results.read_text()
    assert written.startswith("# results\n\n### quality.py run, ")
    assert "    python benchmarks/quality.py --mirror 'some dir'\n" in written
    assert text in written and written.endswith("![curves](curves.png)\n")


def test_equal_in_domain_comparison_interpolates_each_curve_at_shared_levels():
    q = load_quality()
    # in-domain bpb falls 3.0 -> 2.0 for one side and 2.5 -> 2.0 for the other; the out-of-domain
    # score is linear in it for both, with the second side 0.25 bpb lower everywhere
    ours = q.SideResult("picochat", domain_curve=[(0, {"gutenberg": 3.0, "wiki": 5.0}),
                                                   (8, {"gutenberg": 2.0, "wiki": 4.0})])
    ref = q.SideResult("nanochat", domain_curve=[(0, {"gutenberg": 2.5, "wiki": 4.25}),
                                                  (4, {"gutenberg": 2.25, "wiki": 4.0}),
                                                  (8, {"gutenberg": 2.0, "wiki": 3.75})])
    assert q.at_in_domain(ours.domain_curve, 2.5, "wiki") == 4.5
    assert q.at_in_domain(ref.domain_curve, 2.1, "wiki") == pytest.approx(3.85)
    assert q.at_in_domain(ref.domain_curve, 2.6, "wiki") is None  # outside the curve
    lines = q.equal_quality_lines(ours, ref)
    rows = [line for line in lines if line.startswith("| 2.")]
    assert rows == ["| 2.5000 | 4.5000 - 4.2500 = **+0.2500** |", "| 2.2500 | 4.2500 - 4.0000 = **+0.2500** |",
                    "| 2.0000 | 4.0000 - 3.7500 = **+0.2500** |"]
    apart = q.SideResult("nanochat", domain_curve=[(0, {"gutenberg": 3.5, "wiki": 6.0}),
                                                   (8, {"gutenberg": 3.2, "wiki": 5.0})])
    assert "do not overlap" in "\n".join(q.equal_quality_lines(ours, apart))


def test_wikitext_detokenizer_reads_as_prose():
    sys.path.insert(0, str(ROOT))
    from benchmarks import domains

    line = 'In 1 @,@ 000 cases , the " big @-@ ticket " item ( a 3 @.@ 5 m tree ) wasn \'t sold .'
    assert domains.detokenize_wikitext(line) == 'In 1,000 cases, the "big-ticket" item (a 3.5 m tree) wasn\'t sold.'


def test_held_out_sets_are_capped_documents_of_the_mirror():
    mirror = os.environ.get("PICOCHAT_MIRROR", "")
    if not (mirror and Path(mirror, "humaneval").is_dir()):
        pytest.skip("PICOCHAT_MIRROR with the held-out sets is not available")
    sys.path.insert(0, str(ROOT))
    from benchmarks import domains

    for name in (*domains.OUT_OF_DOMAIN, *domains.CONFIRMATION):
        docs = domains.documents(mirror, name, 30_000)
        assert docs and sum(map(len, docs)) <= 30_000 and all(0 < len(d) <= 1000 for d in docs), name
        assert docs == domains.documents(mirror, name, 30_000)  # the same list every time
        assert domains.documents(mirror, name, 60_000)[:len(docs)] == docs  # a larger cap extends it
    assert any("def " in d for d in domains.documents(mirror, "humaneval", 30_000))
    assert not any("<<" in d for d in domains.documents(mirror, "gsm8k", 30_000))
    assert all("\nAnswer: " in d for d in domains.documents(mirror, "arc", 30_000))
    assert domains.documents(mirror, "hh_rlhf", 30_000)[0].startswith("Human: ")
    mmlu = "\n\n".join(domains.documents(mirror, "mmlu", 30_000))
    assert mmlu.count("\nA. ") > 20 and "moral" in mmlu and "molecule" in mmlu  # round-robin over subjects
    with pytest.raises(ValueError, match="unknown held-out set"):
        domains.documents(mirror, "nope")


def test_ablation_driver_compares_seed_means_with_nanochats(tmp_path):
    """quality_ablations.py --nanochat-seeds: finished rows and nanochat runs are read back (nothing
    trains), and each row's mean over its seeds is set against nanochat's mean over its seeds."""
    import json
    import subprocess

    from benchmarks.domains import OUT_OF_DOMAIN

    sets = ["gutenberg", *OUT_OF_DOMAIN]
    def scores(base: float) -> dict:
        return {"domains": {s: base + i for i, s in enumerate(sets)}, "final_bpb": base}
    work = tmp_path / "work"
    for seed, base in ((1, 2.0), (2, 2.2)):   # picochat's recipe: mean 2.1 + i
        (work / f"recipe@{seed}").mkdir(parents=True)
        (work / f"recipe@{seed}" / "result.json").write_text(json.dumps({"picochat": scores(base)}))
    nano = scores(2.05)                        # nanochat: 2.05 + i, one seed
    nano["domains"]["chitchat"] = 2.0          # ... but better than picochat's mean on dialogue
    (work / "nanochat@42").mkdir()
    (work / "nanochat@42" / "nanochat_scores.json").write_text(json.dumps(nano))
    checkout = tmp_path / "nanochat" / "scripts"
    checkout.mkdir(parents=True)
    (checkout / "base_train.py").write_text("")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality_ablations.py"), "--mirror", str(tmp_path),
           "--only", "recipe", "--seeds", "1,2", "--nanochat", str(checkout.parent), "--nanochat-seeds", "42",
           "--work", str(work)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| recipe | 1, 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "+0.0500"                                   # in domain: 2.1 - 2.05
    chit = 2 + sets.index("chitchat")
    assert cells[chit] == f"**{2.1 + sets.index('chitchat') - 2.0:+.4f}**"
    assert cells[-1] == "wikitext2, chitchat, humaneval, gsm8k, shakespeare"
    bad = subprocess.run(cmd[:-6] + ["--nanochat-seeds", "1", "--nanochat", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode != 0 and "needs --nanochat DIR" in bad.stderr and "Traceback" not in bad.stderr


def test_ood_tokens_splits_bpb_into_never_seen_targets_and_the_rest():
    spec = importlib.util.spec_from_file_location("ood_tokens_bench", ROOT / "benchmarks" / "ood_tokens.py")
    ood = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ood)
    quality = load_quality()
    tok = quality.NanochatTokenizerAdapter(ByteTokenizerNanochatStyle())
    model = BigramModel(ByteTokenizerNanochatStyle.vocab)
    docs = ["ab\nc", "a\nb"]
    seen = set(b"abc")  # the newline never occurred in "training"
    logp = torch.log_softmax(model.table, dim=-1)
    nats = {"all": 0.0, "unseen": 0.0}
    for doc in docs:
        ids = [256] + list(doc.encode("utf-8"))
        for a, b in zip(ids[:-1], ids[1:]):
            nats["all"] -= logp[a, b].item()
            if b not in seen:
                nats["unseen"] -= logp[a, b].item()
    per_bit = 1 / (math.log(2) * sum(len(d) for d in docs))
    r = ood.split_bpb(model, tok, docs, seen, chr, seq_len=2)
    assert r["unseen_n"] == 2 and r["commonest"] == "'\\n' x2"
    assert math.isclose(r["bpb"], nats["all"] * per_bit, rel_tol=1e-5)
    assert math.isclose(r["unseen_bpb"], nats["unseen"] * per_bit, rel_tol=1e-5)
    assert math.isclose(r["unseen_bpb"] + r["rest_bpb"], r["bpb"], rel_tol=1e-9)
    assert math.isclose(r["unseen_nats"], nats["unseen"] / 2, rel_tol=1e-5)
