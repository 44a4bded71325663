"""Ablation rows for the pretraining-quality benchmark: picochat's base stage with one idea
switched off (or one alternative switched on), each at the same token budget as quality.py.

Every row is `benchmarks/quality.py --skip-anchor` with extra `picochat train base` flags, scored
by the same common evaluator; the first row is the unchanged recipe, so every other row reads as a
difference from it measured under the same conditions. `--jobs 2` runs two rows at a time with
one torch thread each (bpb does not depend on the thread count beyond float rounding; wall times
then mean nothing, and none are reported).

    python benchmarks/quality_ablations.py --mirror ../shared/data --anchor-bpb 2.10 --jobs 2
    python benchmarks/quality_ablations.py --mirror ../shared/data --only softcap,warmdown --steps 16  # quick

Out of domain (issue #26): each row's final model is also scored, by the same evaluator, on the
held-out sets of other kinds in benchmarks/domains.py (encyclopedic prose, casual dialogue, Python
code, math word problems, verse drama), each document alone from BOS. `--seeds 1337,1` runs every
row from each seed (the data order does not change), so a difference can be read against what
the seed alone moves. `--nanochat DIR --nanochat-seeds 42,1,2` also trains nanochat's side from
each of those init seeds (quality.py --nanochat-only --nanochat-seed S) and prints every row's mean
over its seeds minus nanochat's mean over its own: the comparison issue #26's must-show asks for,
with the seed noise of both sides averaged down.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.domains import OUT_OF_DOMAIN  # noqa: E402

# name -> (what it tests, extra flags for `picochat train base`)
ABLATIONS: dict[str, tuple[str, list[str]]] = {
    "recipe": ("picochat's recipe as it is", []),
    "softcap": ("no logit soft-cap (c = 15 -> off)", ["--softcap=0"]),
    "warmdown": ("no warmdown: constant learning rate to the end (WSD's decay off)", ["--warmdown-frac=0"]),
    "grad-clip": ("no gradient-norm clipping (1.0 -> off)", ["--grad-clip=0"]),
    "nanochat-lrs": ("nanochat's schedule and AdamW rates: warmdown 0.65 to 5%, embedding 0.3, head 0.008",
                     ["--warmdown-frac=0.65", "--final-lr-frac=0.05", "--embedding-lr=0.3",
                      "--unembedding-lr=0.008"]),
    # weight decay 0.1 joined the recipe after these rows (run then as --weight-decay=0.1) showed a gain
    "weight-decay": ("no weight decay on the Muon matrices (0.1 -> 0)", ["--weight-decay=0"]),
    # nanochat's base_train scales every learning rate by sqrt(B / 524288): 0.177 at 16,384 tokens/step
    "batch-lr-scaling": ("nanochat's batch-size rule: every learning rate x sqrt(16384/524288) = 0.177",
                         ["--matrix-lr=0.003536", "--embedding-lr=0.03536", "--unembedding-lr=0.000707"]),
    # the same rule one parameter group at a time: which group's rate carries the effect
    "head-lr": ("the output head's rate alone x 0.177 (0.004 -> 0.000707)", ["--unembedding-lr=0.000707"]),
    "embedding-lr": ("the token embedding's rate alone x 0.177 (0.2 -> 0.03536)", ["--embedding-lr=0.03536"]),
    "matrix-lr": ("the Muon matrices' rate alone x 0.177 (0.02 -> 0.003536)", ["--matrix-lr=0.003536"]),
    "strong-weight-decay": ("three times the Muon matrices' weight decay (0.1 -> 0.3; nanochat's scaled decay at this "
                            "batch and horizon is ~1.0 at its 5.7x lower rate, about the same lr x decay)",
                            ["--weight-decay=0.3"]),
    # issue #26: the two single changes that each moved dialogue and verse down, together
    "decay-and-warmdown": ("strong-weight-decay and long-warmdown together (Muon decay 0.3, warmdown over 65%)",
                           ["--weight-decay=0.3", "--warmdown-frac=0.65"]),
    "adamw-decay": ("decoupled weight decay 0.01 on the output head and embedding (nanochat: 0.01 / 0.001)",
                    ["--adamw-weight-decay=0.01"]),
    # issue #26: picochat's dialogue/verse scores worsen during the peak-rate phase and recover in the warmdown
    "long-warmdown": ("nanochat's warmdown length alone: decay over the last 65% of the steps (not 40%)",
                      ["--warmdown-frac=0.65"]),
    "linear-decay": ("no constant phase: the rate decays linearly from the first step to 0 (warmdown over 100%)",
                     ["--warmdown-frac=1.0"]),
    "long-warmup": ("nanochat's 40-step warmup (31% of the 128 steps; none in the recipe)", ["--warmup-frac=0.3125"]),
    # issue #23: the two architecture options nanochat has (model/gpt.py). Value embeddings joined the
    # recipe (the GPU presets' model; quality.py passes it) after the rows run as --value-embeds showed
    # a gain on every set from two seeds; this row now takes them out again
    "no-value-embeddings": ("no value embeddings (the recipe's per-head-gated token embedding in V, ResFormer)",
                            ["--no-value-embeds"]),
    "sliding-window": ("sliding-window attention SSSL: 3 of 4 layers see the last 128 of 512 tokens",
                       ["--window-pattern=SSSL", "--window-len=128"]),
    # issue #26: beta2 sets how big a rare token's embedding steps are (optim/groups.py)
    "nanochat-adam-betas": ("nanochat's AdamW beta2: 0.995 for the embedding, 0.96 for the head (0.95 both)",
                            ["--embedding-beta2=0.995", "--unembedding-beta2=0.96"]),
    # issue #26: the Muon nanochat runs (its optim.py): picochat's Muon plus three refinements (optim/muon.py)
    "nanochat-muon": ("nanochat's Muon: rows equilibrated before orthogonalising (MuonEq), per-neuron "
                      "second-moment normalisation (NorMuon), cautious weight decay",
                      ["--muon-equilibrate", "--muon-variance-reduction", "--cautious-weight-decay"]),
    "normuon": ("per-neuron second-moment normalisation of Muon's update alone (NorMuon)",
                ["--muon-variance-reduction"]),
    # issue #26: the parts of nanochat's model (its gpt.py, always on there) that picochat's lacks
    "residual-scalars": ("learned per-layer weights on the stream and the token embedding (nanochat's "
                         "resid/x0 lambdas)", ["--residual-scalars"]),
    "smear": ("a gated share of the previous token's embedding added to each position (nanochat's smear)",
              ["--smear"]),
    "backout": ("a learned share of the middle layer subtracted before the head (nanochat's backout)", ["--backout"]),
    # issue #26: nanochat's init (its gpt.py init_weights): a smaller embedding and a 0.4x MLP input matrix
    "nanochat-init": ("nanochat's init: token embedding std 0.8 (1.0), the MLP's input matrix at 0.4x the "
                      "other hidden matrices' scale", ["--init-embedding-std=0.8", "--init-mlp-scale=0.4"]),
    "nanochat-init-betas": ("nanochat-init and nanochat-adam-betas together (the betas' gain on code against the "
                            "init's loss there)", ["--init-embedding-std=0.8", "--init-mlp-scale=0.4",
                                                   "--embedding-beta2=0.995", "--unembedding-beta2=0.96"]),
    "init-mlp": ("the MLP's input matrix alone at nanochat's 0.4x init scale", ["--init-mlp-scale=0.4"]),
    "init-mlp-0.7": ("the MLP's input matrix alone at 0.7x init scale (halfway to nanochat's 0.4x)",
                     ["--init-mlp-scale=0.7"]),
    "init-embedding": ("the token embedding alone at nanochat's init std 0.8 (1.0)", ["--init-embedding-std=0.8"]),
    # issue #26: the output head's AdamW epsilon (optim/groups.py: head_eps). 1/(64 x batch tokens) joined the
    # recipe after the rows head-eps-1e-6 and head-eps (run then as --unembedding-eps=9.5367431640625e-07, the
    # value the rule gives at 16,384 tokens per step) beat it on every set as three-seed means; no-head-eps is the
    # old recipe
    "head-eps-1e-6": ("the output head's AdamW epsilon at 1e-6", ["--unembedding-eps=1e-6"]),
    "no-head-eps": ("the output head's AdamW epsilon at 1e-10, as the embedding's (the recipe: 1/(64 x tokens per "
                    "step), 9.5e-7 here)", ["--unembedding-eps=1e-10"]),
    "nanochat-arch": ("the rest of nanochat's model at once: residual scalars, smear and backout",
                      ["--residual-scalars", "--smear", "--backout"]),
}


def run_quality(out: Path, result_file: str, side_args: list[str], args, key: str | None = None) -> dict:
    """One quality.py run in `out` at the driver's budget, or its result read back if it finished
    before; {} if it failed (or, with --report-only, has not run). The scores are `result_file`
    (under `key` when given)."""
    result = out / result_file
    if not result.exists():
        if args.report_only:
            return {}
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), *side_args, "--mirror", args.mirror,
               "--steps", str(args.steps), "--work", str(out), "--ood-chars", str(args.ood_chars),
               "--curve-every", "0", "--core-per-task", "0"]
        if args.val_docs:  # a smaller budget for a loaded machine: score fewer validation documents
            cmd += ["--val-docs", str(args.val_docs)]
        env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if args.jobs > 1 else {})}
        print(f"[{out.name}] $ {' '.join(cmd)}", flush=True)
        # Output to a file, not a pipe: a run outlives this driver if it is stopped (and can be rerun).
        with open(out / "log.txt", "w") as log:
            proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0 or not result.exists():
            print(f"[{out.name}] failed ({proc.returncode}); see {out / 'log.txt'}", flush=True)
            return {}
    scores = json.loads(result.read_text())
    scores = scores[key] if key else scores
    print(f"[{out.name}] " + ", ".join(f"{k} {v:.4f}" for k, v in scores["domains"].items()), flush=True)
    return scores


def run_row(name: str, seed: int, args, work: Path) -> dict:
    """Train and score one row from one seed (a finished row in --work is read back, not rerun)."""
    out = work / f"{name}@{seed}"
    flags = [*ABLATIONS[name][1], f"--seed={seed}"]
    return run_quality(out, "result.json", ["--skip-anchor", "--png", str(out / "curve.png"), "--json",
                                            str(out / "result.json"), *(f"--picochat-arg={f}" for f in flags)], args,
                       key="picochat")


def run_nanochat(seed: int, args, work: Path) -> dict:
    """nanochat's side from one init seed, scored on every set (read back if already done)."""
    return run_quality(work / f"nanochat@{seed}", "nanochat_scores.json",
                       ["--nanochat", args.nanochat, "--nanochat-only", "--nanochat-seed", str(seed)], args)


def mean_over(results: list[dict], sets: list[str]) -> dict[str, float] | None:
    done = [r["domains"] for r in results if r.get("domains")]
    return {s: sum(d[s] for d in done) / len(done) for s in sets} if done else None


def against_nanochat(names: list[str], seeds: list[int], results: dict, nano: dict[int, dict]) -> str:
    """Every row's mean over its seeds minus nanochat's mean over its seeds, set by set."""
    sets = ["gutenberg", *OUT_OF_DOMAIN]
    ref = mean_over(list(nano.values()), sets)
    if ref is None:
        return "(no nanochat seed finished)"
    done_nano = [sd for sd, r in nano.items() if r.get("domains")]
    lines = [f"nanochat, mean over seeds {', '.join(map(str, done_nano))}: "
             + ", ".join(f"{s} {ref[s]:.4f}" for s in sets), "",
             "| row (mean over seeds) | seeds | " + " | ".join(sets) + " | behind nanochat on |",
             "|---|---|" + "---|" * (len(sets) + 1)]
    for name in names:
        runs = [(sd, results.get((name, sd), {})) for sd in seeds]
        mine = mean_over([r for _, r in runs], sets)
        if mine is None:
            continue
        diff = {s: mine[s] - ref[s] for s in sets}
        behind = [s for s in OUT_OF_DOMAIN if diff[s] > 0]
        lines.append(f"| {name} | {', '.join(str(sd) for sd, r in runs if r.get('domains'))} | "
                     + " | ".join(f"**{diff[s]:+.4f}**" if s in behind else f"{diff[s]:+.4f}" for s in sets)
                     + f" | {', '.join(behind) or 'none'} |")
    return "\n".join(lines)


def table(names: list[str], seeds: list[int], results: dict) -> str:
    """Each row's bpb on every set (mean over the seeds it has run from) and its difference from the
    recipe's, seed by seed (each seed's row against the recipe from the same seed), worst
    out-of-domain change last. A row missing a seed (a stopped driver) shows the seeds it has."""
    sets = ["gutenberg", *OUT_OF_DOMAIN]
    lines = ["| row | change | flags | seeds | " + " | ".join(f"{s} (vs recipe)" for s in sets)
             + " | worst OOD change |", "|---|---|---|---|" + "---|" * (len(sets) + 1)]
    for name in names:
        what, flags = ABLATIONS[name]
        done = [sd for sd in seeds if results.get((name, sd), {}).get("domains")
                and results.get(("recipe", sd), {}).get("domains")]
        cells, worst = [], None
        for s in sets:
            if not done:
                cells.append("-")
                continue
            vals = [results[(name, sd)]["domains"][s] for sd in done]
            diffs = [v - results[("recipe", sd)]["domains"][s] for v, sd in zip(vals, done)]
            vs_recipe = "" if name == "recipe" else " (" + " / ".join(f"{d:+.4f}" for d in diffs) + ")"
            cells.append(f"{sum(vals) / len(vals):.4f}{vs_recipe}")
            if s != "gutenberg" and name != "recipe":
                worst = max(worst if worst is not None else -1e9, max(diffs))
        worst_cell = f"{worst:+.4f}" if worst is not None else "-"
        lines.append(f"| {name} | {what} | {' '.join(f'`{f}`' for f in flags) or '-'} | "
                     f"{', '.join(map(str, done)) or '-'} | " + " | ".join(cells) + f" | {worst_cell} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", default=os.environ.get("PICOCHAT_MIRROR", ""), help="dataset mirror (../shared/data)")
    ap.add_argument("--steps", type=int, default=128, help="optimizer steps per row (quality.py's budget)")
    ap.add_argument("--only", default="", help="comma-separated rows (default: all): " + ", ".join(ABLATIONS))
    ap.add_argument("--seeds", default="1337", help="comma-separated seeds; every row runs from each")
    ap.add_argument("--jobs", type=int, default=1, help="rows run at a time (each with one thread if > 1)")
    ap.add_argument("--work", default="", help="working directory (default: a fresh temporary one); "
                    "rerunning with the same one skips finished rows and retrains the rest")
    ap.add_argument("--val-docs", type=int, default=0, help="in-domain validation documents scored (0 = all)")
    ap.add_argument("--ood-chars", type=int, default=200_000, help="characters of each out-of-domain set scored")
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""),
                    help="a karpathy/nanochat checkout (git clone https://github.com/karpathy/nanochat), "
                         "for --nanochat-seeds")
    ap.add_argument("--nanochat-seeds", default="", help="comma-separated init seeds for nanochat's side "
                    "(42 is its own); each row is then also compared with nanochat's mean")
    ap.add_argument("--report-only", action="store_true", help="train nothing: tabulate the rows and nanochat "
                    "runs already finished in --work (a row from only some seeds shows those)")
    args = ap.parse_args()
    if not args.mirror:
        sys.exit("give --mirror DIR (the dataset mirror, e.g. ../shared/data) or set PICOCHAT_MIRROR")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ABLATIONS)
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        sys.exit(f"unknown ablation {', '.join(unknown)}; choose from {', '.join(ABLATIONS)}")
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        nano_seeds = [int(x) for x in args.nanochat_seeds.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"--seeds and --nanochat-seeds take comma-separated integers, not {args.seeds!r} / "
                 f"{args.nanochat_seeds!r}")
    if nano_seeds and not (args.nanochat and Path(args.nanochat, "scripts", "base_train.py").is_file()):
        sys.exit("--nanochat-seeds needs --nanochat DIR (or NANOCHAT_DIR), a karpathy/nanochat checkout: "
                 "git clone https://github.com/karpathy/nanochat")
    if "recipe" not in names:
        names.insert(0, "recipe")  # every row is read against the recipe measured the same way
    args.mirror = str(Path(args.mirror).resolve())
    work = Path(args.work or tempfile.mkdtemp(prefix="picochat_ablations_")).resolve()
    print(f"working directory: {work}")
    jobs = [(n, sd) for sd in seeds for n in names]  # every row from the first seed before any second
    if nano_seeds:
        args.nanochat = str(Path(args.nanochat).resolve())
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        nano_runs = pool.map(lambda sd: run_nanochat(sd, args, work), nano_seeds)
        results = dict(zip(jobs, pool.map(lambda j: run_row(*j, args, work), jobs)))
        nano = dict(zip(nano_seeds, nano_runs))
    print("\n" + table(names, seeds, results))
    if nano_seeds:
        print("\n" + against_nanochat(names, seeds, results, nano))


if __name__ == "__main__":
    main()
