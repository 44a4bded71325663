"""Pretraining quality per token: nanochat's base_train vs picochat's base stage, same text and budget.

Both sides train at the same shape (by default depth 4, width 256, 4 heads x 64, vocab 8192,
sequence 512, 16,384 tokens per step, 128 steps; `--depth`, `--head-dim`, `--vocab`, ... change it)
on the same documents: the Gutenberg mirror's books cut into passages of at most 1,000
characters, in picochat's loader order (`picochat.data.corpus.iter_documents`). nanochat reads
them from parquet shards that this script writes into a temporary NANOCHAT_BASE_DIR (its loader
takes the last shard as validation).

Each side trains its own BPE tokenizer at the same vocabulary size on the same text: bits per
byte divides by UTF-8 bytes, not tokens, so it compares models across tokenizers. Both final
models are then scored by ONE evaluator, `picochat.eval.bpb.score_documents` (per validation
document from BOS, special tokens never targets); nanochat's model and tokenizer go through a
small adapter. The curves are each side's own periodic validation bpb (their own evaluators,
over `--eval-tokens` of the validation stream: nanochat's stream is the `--val-docs` it was given,
picochat's the whole split, so they differ when --val-docs cuts it; the final row never does).
`--train-docs` (for quick checks) only shortens nanochat's parquet shards; picochat's loader reads
the same documents in the same order, so both see the same text while steps x tokens fit in them.
nanochat runs with `--window-pattern L` (full attention in every layer, as picochat): its
sliding windows need FlashAttention 3, and on PyTorch SDPA (CPU, or no FA3) base_train itself
warns that they are slow and recommends L. It also makes the FLOPs per token equal. Both sides
run torch.compile'd models (nanochat always compiles; picochat gets `--compile`).
Timing: "train time" sums every training step (evals excluded; nanochat's first step includes
its torch.compile, which is fast when inductor's cache is warm); "wall" is the whole side,
tokenizer training and data loading included. Each curve point also carries the training seconds
spent to reach it, first step (compilation) excluded, and the run ends with the time picochat
takes to reach nanochat's final own-curve bpb (interpolated between points) against nanochat's.
The common evaluator runs in fp32 on the run's device. On a GPU (the d12 comparison):

    python benchmarks/quality.py --nanochat DIR --mirror DIR --device cuda --depth 12 --head-dim 128 \
        --vocab 32768 --seq-len 2048 --batch-tokens 524288 --device-batch 32 --steps 96 --eval-every 4 \
        --eval-tokens 262144

    python benchmarks/quality.py --nanochat ../nanochat --mirror ../shared/data            # full: 128 steps
    python benchmarks/quality.py --nanochat ../nanochat --mirror ../shared/data \\
        --steps 2 --eval-every 1 --train-docs 2000 --tok-chars 2000000 --val-docs 50       # smoke test
    python benchmarks/quality.py --mirror ../shared/data --skip-anchor --anchor-bpb 2.045   # picochat only
    python benchmarks/quality.py --mirror ../shared/data --skip-anchor --anchor-bpb X \
        --picochat-arg=--softcap=0 --png benchmarks/out/ablation.png                      # an ablation row

Out of domain (issue #26): every final model is also scored on five held-out sets of other kinds
(benchmarks/domains.py: encyclopedic prose, dialogue, Python, math word problems, verse; --ood-chars
each) and, with --core-per-task, on CORE-18. Both runs keep their weights every --curve-every
steps (picochat `--snapshot-every`, nanochat `--save-every`); each snapshot is scored on smaller
cuts of every set, and the report gives both sides' out-of-domain bpb where their in-domain bpb
is equal (linear between snapshots), plus a second PNG (<png>_domains.png). On a shared machine
the sides can be trained and scored in separate invocations with one --work: `--nanochat-only`
stops after nanochat's side, and `--reuse` scores a side already trained, or reads back the
scores an earlier invocation kept (<side>_scores.json), then writes the joint report.

nanochat is karpathy/nanochat (a git checkout; the PyPI package of that name is unrelated).
Its base_train imports wandb only to log to it; when wandb is not installed a do-nothing module
is put on the subprocess's path (base_train runs with --run dummy, which never calls it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import domains  # noqa: E402
from picochat.common.io import atomic_write_text  # noqa: E402
from picochat.config import get_preset  # noqa: E402
from picochat.data.corpus import iter_documents  # noqa: E402
from picochat.eval.bpb import bits_per_byte  # noqa: E402
from picochat.eval.core import bundle_dir, evaluate_core  # noqa: E402
from picochat.model import artifact  # noqa: E402
from picochat.run_layout import load_tokenizer  # noqa: E402

RUN = "quality"


@dataclass
class SideResult:
    """One trained model: its curve (step, val bpb by its own trainer) and the common-evaluator score."""

    name: str
    curve: list[tuple[int, float]] = field(default_factory=list)
    curve_s: list[float] = field(default_factory=list)  # training seconds at each curve point, first step excluded
    first_step_s: float = 0.0  # the first step alone: torch.compile's tracing and autotuning live here
    final_bpb: float = float("nan")  # picochat.eval.bpb over the validation documents
    params: int = 0
    flops_per_token: float = 0.0
    train_s: float = 0.0  # time in training steps, every step included (evals excluded)
    wall_s: float = 0.0  # the whole subprocess: tokenizer, data, compile, evals, training
    tokens: int = 0
    steps: int = 0
    domains: dict[str, float] = field(default_factory=dict)  # final model: bpb per held-out set, in domain first
    # (step, {set: bpb}) at each snapshot along the run, the in-domain set cut to --curve-val-docs
    domain_curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    core: dict = field(default_factory=dict)  # CORE-18 of the final model: {"score", "centered", "examples"}

    @property
    def tok_s(self) -> float:
        return self.tokens / self.train_s if self.train_s else float("nan")

    @property
    def steady_tok_s(self) -> float:
        """Tokens per second of every step but the first (which carries torch.compile's work)."""
        if self.steps < 2 or self.train_s <= self.first_step_s:
            return float("nan")
        return self.tokens * (self.steps - 1) / self.steps / (self.train_s - self.first_step_s)


class NanochatTokenizerAdapter:
    """The two things picochat's evaluator asks of a tokenizer, answered by nanochat's."""

    def __init__(self, tok):
        self.tok = tok
        self.bos_id = tok.get_bos_token_id()

    def encode(self, text: str, prepend: int | None = None) -> list[int]:
        return self.tok.encode(text, prepend=prepend)


def shape_args(args) -> dict:
    return dict(depth=args.depth, aspect_ratio=64, head_dim=args.head_dim, vocab=args.vocab, seq_len=args.seq_len,
                batch_tokens=args.batch_tokens, device_batch=args.device_batch or args.batch_tokens // args.seq_len)


def run_logged(cmd: list[str], log: Path, env: dict | None = None, cwd: str | None = None) -> str:
    """Run a command, its output written to `log` line by line (a killed run keeps what it printed);
    fail loudly with the log's tail."""
    print("$ " + " ".join(cmd), flush=True)
    lines = []
    with open(log, "w") as f, subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            f.write(line)
            f.flush()
            lines.append(line)
    if proc.returncode != 0:
        tail = "".join(lines[-30:])
        sys.exit(f"command failed ({proc.returncode}); last lines of {log}:\n{tail}")
    return "".join(lines)


# ---------------------------------------------------------------------------------------------- picochat

def train_picochat(args, work: Path) -> SideResult:
    s = shape_args(args)
    home = str(work / "picochat_home")
    common = ["--run", RUN, "--home", home, "--mirror", args.mirror, "--preset", "demo", "--device", args.device]
    t0 = time.perf_counter()
    stage = Path(home) / "runs" / RUN / "base"
    if args.reuse and artifact.is_complete(stage):
        print(f"picochat: reusing the finished model in {stage}", flush=True)
    else:
        train_picochat_side(args, common, s, work)
    res = SideResult("picochat", wall_s=time.perf_counter() - t0 if not args.reuse else float("nan"))
    records = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    res.first_step_s = next(r["elapsed"] for r in records if r["step"] == 1)
    for rec in records:
        if "val_bpb" in rec:
            res.curve.append((rec["step"], rec["val_bpb"]))
            res.curve_s.append(rec["elapsed"] - res.first_step_s)
    model, meta = artifact.load_model(stage, "cpu")
    res.params, res.flops_per_token = meta["num_params"], meta["flops_per_token"]
    res.train_s, res.tokens, res.steps = meta["final"]["elapsed"], meta["final"]["tokens"], meta["final"]["step"]
    tokenizer = load_tokenizer(RUN, home)
    snapshots = {step: (lambda p=path: artifact.load_snapshot(p))
                 for step, path in artifact.list_snapshots(stage).items()}
    score_side(res, model, tokenizer, snapshots, args)
    return res


def recipe_model_flags() -> list[str]:
    """The GPU presets' model options (d20's), as flags: the recipe measured here is theirs, at the
    benchmark's small shape, not the demo's (which leaves value embeddings off for its export)."""
    model = get_preset("d20").model
    return ["--value-embeds"] if model.value_embeds else []


def train_picochat_side(args, common: list[str], s: dict, work: Path) -> None:
    """`picochat tokenizer train` and `picochat train base` at the benchmark's shape."""
    py = [sys.executable, "-m", "picochat"]
    # the GPU presets' fast path (nanochat compiles its optimizer steps too); a CPU gains nothing from them
    gpu_flags = ["--compile-optim", "--fused-adamw"] if args.device == "cuda" else []
    run_logged(py + ["tokenizer", "train", *common, "--source", "gutenberg", "--vocab-size", str(s["vocab"]),
                     "--max-chars", str(args.tok_chars)], work / "picochat_tokenizer.log")
    run_logged(py + ["train", "base", *common, "--source", "gutenberg", "--depth", str(s["depth"]),
                     "--aspect-ratio", "64", "--head-dim", str(s["head_dim"]), "--vocab-size", str(s["vocab"]),
                     "--seq-len", str(s["seq_len"]),
                     "--device-batch-size", str(s["device_batch"]), "--total-batch-tokens", str(s["batch_tokens"]),
                     "--num-steps", str(args.steps), "--eval-every", str(args.eval_every),
                     "--eval-tokens", str(args.eval_tokens), "--save-every", "0", "--log-every", "1", "--compile",
                     "--snapshot-every", str(args.curve_every),
                     *gpu_flags, *recipe_model_flags(), *args.picochat_arg],  # a row's own flags last
               work / "picochat_base.log")


def common_bpb(model: torch.nn.Module, tokenizer, args, texts: list[str] | None = None) -> float:
    """The one evaluator, in fp32 on the run's device (bf16 rounding would differ between the two models)."""
    model = model.float().to(args.device).eval()
    return bits_per_byte(model, tokenizer, args.val_texts if texts is None else texts, seq_len=args.seq_len,
                         device=args.device, batch_size=64 if args.device == "cuda" else 8)


def domain_scores(model: torch.nn.Module, tokenizer, args, sets: dict[str, list[str]]) -> dict[str, float]:
    """bpb on each set of documents (the in-domain one first, then benchmarks/domains.py's)."""
    return {name: common_bpb(model, tokenizer, args, docs) for name, docs in sets.items()}


def score_side(res: SideResult, model: torch.nn.Module, tokenizer, snapshots: dict, args) -> None:
    """Everything the common evaluator says about one side: the final model in domain (all validation
    documents), out of domain and on CORE-18; then each snapshot along the run, and the final model
    again, on smaller cuts of every set (--curve-val-docs, --curve-ood-chars)."""
    cache = args.work_dir / f"{res.name}_scores.json"
    if args.reuse and cache.exists():  # scored by an earlier invocation with the same --work
        saved = json.loads(cache.read_text())
        res.domains, res.core = saved["domains"], saved["core"]
        res.final_bpb, res.domain_curve = res.domains["gutenberg"], [tuple(p) for p in saved["domain_curve"]]
        print(f"{res.name}: reusing the scores in {cache}", flush=True)
        if res.core or not args.core_per_task:
            return
        score_core(res, model, tokenizer, args)  # the bpb scores are kept; CORE-18 was not run then
    else:
        score_all(res, model, tokenizer, snapshots, args)
    atomic_write_text(cache, json.dumps({"domains": res.domains, "core": res.core, "domain_curve": res.domain_curve}))


def score_all(res: SideResult, model: torch.nn.Module, tokenizer, snapshots: dict, args) -> None:
    res.domains = domain_scores(model, tokenizer, args, {"gutenberg": args.val_texts, **args.ood_texts})
    res.final_bpb = res.domains["gutenberg"]
    print(f"{res.name} final: " + ", ".join(f"{k} {v:.4f}" for k, v in res.domains.items()), flush=True)
    if args.core_per_task:
        score_core(res, model, tokenizer, args)
    if not snapshots:
        return
    curve_sets = {"gutenberg": args.val_texts[:args.curve_val_docs] if args.curve_val_docs else args.val_texts,
                  **{name: domains.cap(docs, args.curve_ood_chars) for name, docs in args.ood_texts.items()}}
    for step, load in sorted({**snapshots, res.steps: lambda: model}.items()):
        scores = domain_scores(load(), tokenizer, args, curve_sets)
        res.domain_curve.append((step, scores))
        print(f"{res.name} step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)


def score_core(res: SideResult, model: torch.nn.Module, tokenizer, args) -> None:
    """CORE-18 of the final model, --core-per-task examples of each task (the same scorer for both)."""
    core = evaluate_core(model.float().to(args.device).eval(), tokenizer, bundle_dir(args.mirror),
                         max_per_task=args.core_per_task, device=args.device, log=None)
    res.core = {"name": core.name, "score": core.score, "centered": core.centered, "examples": core.examples}
    print(f"{res.name} {core.name} ({args.core_per_task} per task): {core.score:.4f}", flush=True)


# ---------------------------------------------------------------------------------------------- nanochat

def write_nanochat_data(args, base: Path) -> None:
    """Train docs in picochat's loader order as parquet shards; the val docs as the last shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = base / "base_data_climbmix"
    data.mkdir(parents=True, exist_ok=True)
    train = args.train_texts
    per_shard = max(1, -(-len(train) // 4))  # a few shards, each written in row groups of 1024 docs
    shards = [train[i:i + per_shard] for i in range(0, len(train), per_shard)] + [args.val_texts]
    for k, docs in enumerate(shards):
        pq.write_table(pa.table({"text": docs}), data / f"shard_{k:05d}.parquet", row_group_size=1024)
    print(f"nanochat data: {len(train):,} train docs in {len(shards) - 1} shards, "
          f"{len(args.val_texts):,} val docs in the last; {data}")


def nanochat_env(base: Path, work: Path) -> dict:
    env = {**os.environ, "NANOCHAT_BASE_DIR": str(base), "WANDB_MODE": "disabled"}
    try:
        import wandb  # noqa: F401
    except ImportError:  # base_train imports it unconditionally; --run dummy never uses it
        stub = work / "stub"
        stub.mkdir(exist_ok=True)
        (stub / "wandb.py").write_text("def init(*a, **k):\n    raise RuntimeError('wandb stub')\n")
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(stub), env.get("PYTHONPATH", "")] if p)
    return env


def train_nanochat(args, work: Path) -> SideResult:
    s = shape_args(args)
    base = work / "nanochat_base"
    ckpt_dir = base / "base_checkpoints" / "quality"
    t0 = time.perf_counter()
    if args.reuse and (ckpt_dir / f"model_{args.steps:06d}.pt").exists():
        print(f"nanochat: reusing the finished model in {ckpt_dir}", flush=True)
        out = (work / "nanochat_base.log").read_text()
    else:
        out = run_nanochat_side(args, base, work)
    res = SideResult("nanochat", wall_s=time.perf_counter() - t0 if not args.reuse else float("nan"),
                     tokens=args.steps * s["batch_tokens"], steps=args.steps)
    res.curve = [(int(m[1]), float(m[2])) for m in re.finditer(r"Step (\d+) \| Validation bpb: ([0-9.]+)", out)]
    # Every step's dt, the first (torch.compile) included, as picochat's elapsed counts every step.
    # (nanochat's own "Total training time" leaves out steps 0-10, so it reads 0 on short runs.)
    # "step 00003/..." is printed after step 3's update; "Step 00004 | Validation" evaluates after it.
    dt = {int(m[1]): float(m[2]) / 1000 for m in re.finditer(r"step (\d+)/\d+ .*?\| dt: ([0-9.]+)ms", out)}
    res.train_s, res.first_step_s = sum(dt.values()), dt.get(0, 0.0)
    res.curve_s = [sum(t for k, t in dt.items() if 0 < k < step) for step, _ in res.curve]
    model, tok, _ = load_nanochat_model(args.nanochat, base)
    res.params = sum(p.numel() for p in model.parameters())
    res.flops_per_token = float(model.estimate_flops())
    steps = sorted(int(p.stem.split("_")[1]) for p in ckpt_dir.glob("model_*.pt"))
    snapshots = {s: (lambda s=s: load_nanochat_model(args.nanochat, base, step=s)[0])
                 for s in steps if s != args.steps and args.curve_every and s % args.curve_every == 0}
    score_side(res, model, NanochatTokenizerAdapter(tok), snapshots, args)
    return res


def load_nanochat_model(checkout: str, base: Path, step: int | None = None):
    """nanochat's (model, tokenizer, meta) from a run's NANOCHAT_BASE_DIR, in fp32 on the CPU (the last
    checkpoint, or `step`'s)."""
    os.environ["NANOCHAT_BASE_DIR"] = str(base)  # read by nanochat.common.get_base_dir at call time
    os.environ["NANOCHAT_DTYPE"] = "float32"  # score in fp32 (its default on a GPU is bf16 everywhere)
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    from nanochat.checkpoint_manager import load_model

    return load_model("base", torch.device("cpu"), phase="eval", model_tag="quality", step=step)


def run_nanochat_side(args, base: Path, work: Path) -> str:
    """nanochat's tok_train and base_train on the benchmark's documents; base_train's output."""
    s = shape_args(args)
    write_nanochat_data(args, base)
    env = nanochat_env(base, work)
    run_logged([sys.executable, "-m", "scripts.tok_train", "--vocab-size", str(s["vocab"]),
                "--max-chars", str(args.tok_chars)], work / "nanochat_tokenizer.log", env, args.nanochat)
    # --nanochat-seed: base_train through benchmarks/nanochat_seeded.py, which only reseeds the init
    launch = ([sys.executable, str(Path(__file__).resolve().parent / "nanochat_seeded.py"), str(args.nanochat_seed)]
              if args.nanochat_seed is not None else [sys.executable, "-m", "scripts.base_train"])
    return run_logged([*launch, "--run", "dummy", "--device-type", args.device,
                       "--depth", str(s["depth"]), "--aspect-ratio", "64", "--head-dim", str(s["head_dim"]),
                       "--max-seq-len", str(s["seq_len"]),
                       "--device-batch-size", str(s["device_batch"]), "--total-batch-size", str(s["batch_tokens"]),
                       "--num-iterations", str(args.steps), "--eval-every", str(args.eval_every),
                       "--eval-tokens", str(args.eval_tokens), "--core-metric-every", "-1", "--sample-every", "-1",
                       "--model-tag", "quality", "--window-pattern", "L", "--save-every", str(args.curve_every or -1),
                       *args.nanochat_arg],
                      work / "nanochat_base.log", env, args.nanochat)


# ---------------------------------------------------------------------------------------------- report

def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b and b == b and a == a else "n/a"


def time_to_reach(side: SideResult, target: float) -> tuple[float, float] | None:
    """(training seconds, step) at which `side`'s curve first reaches `target` bpb, or None.

    Linear interpolation between the two eval points that bracket the target; the seconds leave
    out the first step (compilation), so a cold and a warm compiler cache compare the same.
    """
    prev = None
    for (step, bpb), t in zip(side.curve, side.curve_s):
        if bpb <= target:
            if prev is None:
                return t, float(step)
            s0, b0, t0 = prev
            f = (b0 - target) / (b0 - bpb)
            return t0 + f * (t - t0), s0 + f * (step - s0)
        prev = (step, bpb, t)
    return None


def time_to_target_lines(ours: SideResult, ref: SideResult) -> list[str]:
    """How long picochat takes to reach the validation bpb nanochat ends at (both own-evaluator curves)."""
    if not (ref.curve and ours.curve and ref.curve_s):
        return []
    target, ref_s = ref.curve[-1][1], ref.curve_s[-1]
    lines = [f"Time to nanochat's final val bpb {target:.4f} (own-evaluator curves; training seconds, first "
             f"step excluded). Own-evaluator finals vs the common evaluator: nanochat {target:.4f} vs "
             f"{ref.final_bpb:.4f}, picochat {ours.curve[-1][1]:.4f} vs {ours.final_bpb:.4f}."]
    for label, goal in (("own-curve target", target), ("common-evaluator target", ref.final_bpb)):
        hit = time_to_reach(ours, goal)
        if hit is None:
            lines.append(f"- {label} {goal:.4f}: picochat did not reach it in {ours.curve[-1][0]} steps; "
                         f"nanochat took {ref_s:.1f} s")
            continue
        speedup = f"{ref_s / hit[0]:.2f}x less time" if hit[0] > 0 else "below it at its first eval point"
        lines.append(f"- {label} {goal:.4f}: picochat {hit[0]:.1f} s (step {hit[1]:.1f} of {ours.curve[-1][0]}) "
                     f"vs nanochat {ref_s:.1f} s (step {ref.curve[-1][0]}): {speedup}")
    return lines


def domain_lines(ours: SideResult, ref: SideResult | None) -> list[str]:
    """Final bpb on every held-out set, each document alone from BOS (the same evaluator)."""
    if len(ours.domains) < 2:
        return []
    lines = ["", "| held-out set | kind | picochat | nanochat | picochat - nanochat |", "|---|---|---|---|---|"]
    for name, bpb in ours.domains.items():
        kind = "in domain (Gutenberg validation books)" if name == "gutenberg" else domains.KINDS[name]
        other = ref.domains.get(name) if ref else None
        diff = f"**{bpb - other:+.4f}**" if other is not None else "-"
        lines.append(f"| {name} | {kind} | {bpb:.4f} | {other:.4f} | {diff} |" if other is not None
                     else f"| {name} | {kind} | {bpb:.4f} | - | - |")
    if ours.core:  # downstream: centered accuracy, higher is better (a row of its own, not bpb)
        per_task = max(ours.core["examples"].values())
        theirs = ref.core["score"] if ref and ref.core else None
        cells = f"{theirs:.4f} | **{ours.core['score'] - theirs:+.4f}** |" if theirs is not None else "- | - |"
        lines.append(f"| {ours.core['name']} | downstream, centered accuracy (higher is better; {per_task} examples "
                     f"per task at most) | {ours.core['score']:.4f} | {cells}")
    return lines


def at_in_domain(curve: list[tuple[int, dict[str, float]]], level: float, name: str) -> float | None:
    """`name`'s bpb where the run's in-domain bpb passes `level` (linear between snapshots)."""
    for (_, a), (_, b) in zip(curve, curve[1:]):
        g0, g1 = a["gutenberg"], b["gutenberg"]
        if min(g0, g1) <= level <= max(g0, g1) and g0 != g1:
            f = (level - g0) / (g1 - g0)
            return a[name] + f * (b[name] - a[name])
    return None


def equal_quality_lines(ours: SideResult, ref: SideResult | None) -> list[str]:
    """Out-of-domain bpb of both runs where their in-domain bpb is equal: three levels across the
    range both curves cover (in-domain here is the first --curve-val-docs validation documents)."""
    if not (ref and len(ours.domain_curve) > 1 and len(ref.domain_curve) > 1):
        return []
    span = [[pt["gutenberg"] for _, pt in side.domain_curve] for side in (ours, ref)]
    lo, hi = max(min(s) for s in span), min(max(s) for s in span)
    if lo > hi:
        return ["", f"At equal in-domain bpb: the curves do not overlap (picochat {min(span[0]):.4f}-"
                    f"{max(span[0]):.4f}, nanochat {min(span[1]):.4f}-{max(span[1]):.4f}); snapshot more often."]
    names = [n for n in ours.domain_curve[0][1] if n != "gutenberg"]
    lines = ["", "At equal in-domain bpb (snapshots every --curve-every steps, linear between them): "
                 "out-of-domain bpb, picochat - nanochat", "",
             "| in-domain bpb | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for level in (hi, (lo + hi) / 2, lo):
        cells = []
        for n in names:
            a, b = at_in_domain(ours.domain_curve, level, n), at_in_domain(ref.domain_curve, level, n)
            cells.append(f"{a:.4f} - {b:.4f} = **{a - b:+.4f}**" if a is not None and b is not None else "-")
        lines.append(f"| {level:.4f} | " + " | ".join(cells) + " |")
    return lines


def report(ours: SideResult, ref: SideResult | None, anchor_bpb: float | None) -> str:
    """The run's results as Markdown: printed, and appended to RESULTS.md with --record."""
    lines = [f"- {side.name} curve (step: own-evaluator bpb): " + ", ".join(f"{st}: {b:.4f}" for st, b in side.curve)
             for side in (ref, ours) if side]
    lines += ["", "| | picochat | nanochat | picochat/nanochat |", "|---|---|---|---|"]
    ref_bpb = ref.final_bpb if ref else anchor_bpb
    rows = [("final val bpb, common evaluator", ours.final_bpb, ref_bpb, "{:.4f}"),
            ("params", ours.params, ref.params if ref else None, "{:,}"),
            ("FLOPs/token", ours.flops_per_token, ref.flops_per_token if ref else None, "{:.3e}"),
            ("tokens", ours.tokens, ref.tokens if ref else None, "{:,}"),
            ("train time s (every step; evals excluded)", ours.train_s, ref.train_s if ref else None, "{:.1f}"),
            ("of it the first step s (compilation)", ours.first_step_s, ref.first_step_s if ref else None,
             "{:.1f}"),
            ("tokens/s, every step", ours.tok_s, ref.tok_s if ref else None, "{:,.0f}"),
            ("tokens/s, first step excluded", ours.steady_tok_s, ref.steady_tok_s if ref else None, "{:,.0f}"),
            ("wall s (whole side)", ours.wall_s, ref.wall_s if ref else None, "{:.1f}")]
    for label, a, b, fmt in rows:
        cells = [fmt.format(a), fmt.format(b) if b is not None else "-", ratio(a, b) if b is not None else "-"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if ref_bpb is not None:
        src = "this run" if ref else "anchor --anchor-bpb"
        lines += ["", f"bpb difference picochat - nanochat ({src}): {ours.final_bpb - ref_bpb:+.4f} "
                      f"(target: <= -0.03)"]
    if ref:
        lines += [""] + time_to_target_lines(ours, ref)
    lines += domain_lines(ours, ref) + equal_quality_lines(ours, ref)
    return "\n".join(lines)


def record(text: str, args, path: Path) -> None:
    """Append this run to RESULTS.md: date, machine, the exact command, the report, the PNG."""
    if args.device == "cuda":
        machine = f"{torch.cuda.get_device_name()}, torch {torch.__version__}"
    else:
        machine = f"{os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}"
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/quality.py", *sys.argv[1:]])
    png = os.path.relpath(Path(args.png).resolve(), path.resolve().parent)
    section = (f"\n### quality.py run, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine}\n\n"
               f"    {command}\n\n{text}\n\n![curves]({png})\n")
    atomic_write_text(path, (path.read_text() if path.exists() else "") + section)
    print(f"recorded in {path}")


def plot(ours: SideResult, ref: SideResult | None, anchor_bpb: float | None, path: Path, depth: int = 4) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for side in [s for s in (ref, ours) if s and s.curve]:
        label = f"{side.name} (common evaluator, final: {side.final_bpb:.3f})"
        axes[0].plot(*zip(*side.curve), marker="o", label=label)
        if len(side.curve_s) == len(side.curve):
            axes[1].plot(side.curve_s, [b for _, b in side.curve], marker="o", label=label)
    for ax in axes:
        if ref is None and anchor_bpb is not None:
            ax.axhline(anchor_bpb, ls="--", color="gray", label=f"nanochat anchor {anchor_bpb:.3f}")
        ax.legend()
    axes[0].set(xlabel="step", ylabel="validation bits per byte (own evaluator)",
                title=f"Gutenberg pretraining, depth {depth}")
    axes[1].set(xlabel="training seconds (first step, i.e. compilation, excluded)", title="the same, against time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def plot_domains(ours: SideResult, ref: SideResult | None, path: Path) -> None:
    """Final bpb per held-out set (both sides), then each out-of-domain set against in-domain bpb
    along the run: a curve lower at the same x transfers better."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [s for s in (ref, ours) if s and s.domains]
    names = list(ours.domains)
    # The along-the-run panels only when snapshots were scored (--curve-every); else the bars alone.
    curves = any(side.domain_curve for side in sides)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8)) if curves else plt.subplots(1, 1, figsize=(8, 4.5))
    axes = axes.ravel() if curves else [axes]
    width = 0.8 / len(sides)
    for k, side in enumerate(sides):
        core = f" (CORE-18 {side.core['score']:.4f})" if side.core else ""  # the downstream view, in the legend
        axes[0].bar([i + k * width for i in range(len(names))], [side.domains[n] for n in names], width,
                    label=side.name + core)
    axes[0].set_xticks([i + width * (len(sides) - 1) / 2 for i in range(len(names))], names, rotation=20)
    axes[0].set(ylabel="bits per byte (final model)", title="every held-out set")
    axes[0].legend()
    for ax, name in zip(axes[1:], [n for n in names if n != "gutenberg"]):
        for side in sides:
            if side.domain_curve:
                pts = [(pt["gutenberg"], pt[name]) for _, pt in side.domain_curve]
                ax.plot(*zip(*pts), marker="o", label=side.name)
        ax.invert_xaxis()  # training moves right: in-domain bpb falls
        ax.set(xlabel="in-domain bpb (Gutenberg)", ylabel=f"{name} bpb", title=f"{name}: {domains.KINDS[name]}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""), help="karpathy/nanochat checkout")
    ap.add_argument("--mirror", default=os.environ.get("PICOCHAT_MIRROR", ""), help="dataset mirror (../shared/data)")
    ap.add_argument("--steps", type=int, default=128, help="optimizer steps on both sides")
    ap.add_argument("--depth", type=int, default=4, help="both models' depth (width = 64 x depth)")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=8192, help="both tokenizers' vocabulary size")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-tokens", type=int, default=16384, help="tokens per optimizer step")
    ap.add_argument("--device-batch", type=int, default=0,
                    help="sequences per micro-step on both sides (default: the whole step in one; "
                         "smaller ones accumulate gradients, e.g. 32 for d12 at 524,288 tokens on a GPU)")
    ap.add_argument("--eval-every", type=int, default=16, help="steps between curve points (own evaluators)")
    ap.add_argument("--eval-tokens", type=int, default=65536, help="validation tokens per curve point")
    ap.add_argument("--tok-chars", type=int, default=20_000_000, help="characters of train text per tokenizer")
    ap.add_argument("--train-docs", type=int, default=0, help="train documents given to nanochat (0 = all)")
    ap.add_argument("--val-docs", type=int, default=0, help="validation documents scored (0 = all)")
    ap.add_argument("--ood-chars", type=int, default=200_000, help="characters of each out-of-domain set scored "
                    f"({', '.join(domains.OUT_OF_DOMAIN)}; benchmarks/domains.py); 0 = none")
    ap.add_argument("--curve-every", type=int, default=16, help="steps between weight snapshots, each scored on "
                    "every set afterwards (the comparison at equal in-domain bpb); 0 = none")
    ap.add_argument("--curve-val-docs", type=int, default=500, help="in-domain documents scored at each snapshot")
    ap.add_argument("--core-per-task", type=int, default=100, help="CORE-18 examples per task for each final "
                    "model (the mirror's 18 of CORE's 22 tasks); 0 = skip")
    ap.add_argument("--curve-ood-chars", type=int, default=50_000, help="characters of each out-of-domain set "
                    "scored at each snapshot (the final models get --ood-chars)")
    ap.add_argument("--reuse", action="store_true", help="a side whose finished model is already in --work is "
                    "scored, not retrained (its timings come from its log; its wall time is not known)")
    ap.add_argument("--nanochat-only", action="store_true", help="train and score nanochat's side, then stop "
                    "(with --reuse, a later run of both sides picks it up)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda, both sides")
    ap.add_argument("--work", default="", help="working directory (default: a fresh temporary one)")
    ap.add_argument("--png", default="benchmarks/quality.png", help="where to write the curves")
    ap.add_argument("--json", default="", help="also write the results here (used by quality_ablations.py)")
    ap.add_argument("--record", default="", help="append the run (command, machine, date, table) to this "
                    "Markdown file, e.g. benchmarks/RESULTS.md")
    ap.add_argument("--skip-anchor", action="store_true", help="do not train nanochat; compare to --anchor-bpb")
    ap.add_argument("--anchor-bpb", type=float, default=None, help="nanochat's recorded final val bpb")
    ap.add_argument("--nanochat-seed", type=int, default=None,
                    help="initialise nanochat's model from this seed (its base_train always uses 42; "
                         "benchmarks/nanochat_seeded.py reseeds it), to measure what the seed alone moves")
    ap.add_argument("--nanochat-arg", action="append", default=[], help="extra flag for base_train (repeatable)")
    ap.add_argument("--picochat-arg", action="append", default=[],
                    help="extra flag for `picochat train base` (repeatable; ablations: --picochat-arg=--softcap=0)")
    args = ap.parse_args(argv)
    if not args.mirror:
        sys.exit("give --mirror DIR (the dataset mirror, e.g. ../shared/data) or set PICOCHAT_MIRROR")
    if not args.skip_anchor and not (args.nanochat and os.path.isdir(args.nanochat)):
        sys.exit("give --nanochat DIR (a karpathy/nanochat checkout) or set NANOCHAT_DIR, or use --skip-anchor")
    if args.batch_tokens % args.seq_len:
        sys.exit("--batch-tokens must be a multiple of --seq-len")
    if args.device_batch and (args.batch_tokens // args.seq_len) % args.device_batch:
        sys.exit("--device-batch must divide the sequences per step (--batch-tokens / --seq-len)")
    args.mirror = str(Path(args.mirror).resolve())
    args.nanochat = str(Path(args.nanochat).resolve()) if args.nanochat else ""
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="picochat_quality_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"working directory: {work}")
    val = list(iter_documents("gutenberg", "val", mirror=args.mirror))
    args.val_texts = val[:args.val_docs] if args.val_docs else val
    args.ood_texts = {name: domains.documents(args.mirror, name, args.ood_chars)
                      for name in (domains.OUT_OF_DOMAIN if args.ood_chars else ())}
    args.work_dir = work
    ref = None
    if not args.skip_anchor:
        train = iter_documents("gutenberg", "train", mirror=args.mirror)
        args.train_texts = [d for _, d in zip(range(args.train_docs), train)] if args.train_docs else list(train)
        ref = train_nanochat(args, work)
    if args.nanochat_only:
        return
    ours = train_picochat(args, work)
    text = report(ours, ref, args.anchor_bpb)
    print("\n" + text)
    if args.record:
        record(text, args, Path(args.record))
    plot(ours, ref, args.anchor_bpb, Path(args.png), args.depth)
    if len(ours.domains) > 1:
        plot_domains(ours, ref, Path(args.png).with_name(Path(args.png).stem + "_domains.png"))
    if args.json:
        sides = {s.name: {**asdict(s), "tok_s": s.tok_s} for s in (ours, ref) if s}
        Path(args.json).write_text(json.dumps({**sides, "anchor_bpb": args.anchor_bpb,
                                               "picochat_args": args.picochat_arg}, indent=1))


if __name__ == "__main__":
    main()
