#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run with a time budget (GPU time is scarce; the CI box
# has none). In order of importance, each under its own time limit, each logged to OUTDIR:
#   step-d20    benchmarks/train_step.py at d20 (seq 2048, batch 32, bf16, compiled): picochat vs
#               nanochat tokens/s, step time, MFU and peak memory, side by side in one process
#   cuda-tests  the CUDA-only tests (pinned async copies, fused AdamW, compiled Muon == eager)
#   demo        `picochat speedrun --preset demo` on the GPU: every stage, eval and the report
#   step-d12    the same benchmark at d12, if time is left
#   quality-d12 benchmarks/quality.py at d12 in bf16 (issue #15): nanochat's base_train and picochat's
#               base stage on the same Gutenberg text, 96 steps of 524,288 tokens, time to reach
#               nanochat's final val bpb; needs the dataset mirror (PICOCHAT_MIRROR) and nanochat's
#               tokenizer dependency rustbpe. Not in the default list: it takes ~5-6 minutes.
#   fp8-tests   tests/test_fp8.py's CUDA tests (issue #23): the real FP8 kernels (cuBLAS tensorwise,
#               CUTLASS/cuBLAS rowwise) against an fp32 reference of the same fp8 operands, and a
#               compiled fp8 GPT that trains, for both recipes. Not in the default list (~1 minute).
#   fp8-step    benchmarks/fp8_step.py at d24 (seq 2048, batch 16, compiled): picochat bf16 vs picochat
#               fp8 tensorwise and rowwise (and torchao's tensorwise where torchao is installed), and
#               nanochat's --fp8 (NANOCHAT_DIR); tokens/s, MFU, peak memory and the ratios, interleaved
#               rounds, all variants held at once (~40 GB resident + one step's activations). Not in
#               the default list (~4-6 minutes: four or five d24 compiles).
#
#   NANOCHAT_DIR=/path/to/nanochat bash benchmarks/gpu_check.sh [OUTDIR] [BUDGET_SECONDS]
#   CHECKS="quality-d12" NANOCHAT_DIR=... PICOCHAT_MIRROR=... bash benchmarks/gpu_check.sh OUTDIR 540
#   CHECKS="fp8-tests fp8-step" NANOCHAT_DIR=... bash benchmarks/gpu_check.sh OUTDIR 480
#
# Runs from the repository root with whatever python3 holds a CUDA torch (PYTHON overrides it);
# the package is used in place (PYTHONPATH), with the native tokenizer core built in place.
set -u
out=${1:-benchmarks/out/gpu}
budget=${2:-540}
py=${PYTHON:-python3}
start=$SECONDS
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ ! -f "${NANOCHAT_DIR:-}/nanochat/gpt.py" ]; then
    echo "benchmark anchor missing: clone https://github.com/karpathy/nanochat and set NANOCHAT_DIR" >&2
    exit 2
fi

checks=" ${CHECKS:-step-d20 cuda-tests demo step-d12} "
check() {  # check NAME LIMIT CMD...: run CMD under min(LIMIT, what is left of the budget)
    local name=$1 limit=$2 left
    shift 2
    [[ $checks == *" $name "* ]] || return 0
    left=$((budget - (SECONDS - start)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 30 ]; then echo "=== $name skipped: budget spent"; return; fi
    echo "=== $name (limit ${limit}s, $(date -u +%FT%TZ))"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    echo "=== $name rc=$rc after $((SECONDS - start))s"
}

keep() {  # keep NAME FILE...: copy what check NAME left behind into OUTDIR; a missing file is said, not hidden
    local name=$1 file
    shift
    [[ $checks == *" $name "* ]] || return 0
    for file in "$@"; do
        if [ -f "$file" ]; then cp "$file" "$out/"; else echo "=== $name: $file is missing (see $out/$name.log)"; fi
    done
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    "$py" setup.py -q build_ext --inplace >/dev/null 2>&1 && echo "native tokenizer core built" \
        || echo "native tokenizer core did not build: the pure-Python trainer is used"
} 2>&1 | tee "$out/machine.log"

bench=("$py" benchmarks/train_step.py --nanochat "$NANOCHAT_DIR" --seq-len 2048 --batch 32 --compile
       --vocab 32768 --steps 5 --rounds 3)
check step-d20 300 "${bench[@]}" --depth 20
check cuda-tests 90 "$py" -m pytest -q -p no:cacheprovider tests/test_distributed.py -k cuda
check demo 200 "$py" -m picochat speedrun --preset demo --home /tmp/picochat_gpu_check --run gpu
# The report's path comes from the run layout, not written out here (it was once copied from a
# path that no longer existed, and `2>/dev/null` hid it).
keep demo "$("$py" -c "from picochat.common.paths import stage_dir
print(stage_dir('gpu', 'report', '/tmp/picochat_gpu_check') / 'report.md')")"
check step-d12 150 "${bench[@]}" --depth 12
check quality-d12 500 "$py" benchmarks/quality.py --nanochat "$NANOCHAT_DIR" --mirror "${PICOCHAT_MIRROR:-../shared/data}" \
    --device cuda --depth 12 --head-dim 128 --vocab 32768 --seq-len 2048 --batch-tokens 524288 --device-batch 32 \
    --steps 96 --eval-every 4 --eval-tokens 262144 --work /tmp/picochat_quality_d12 \
    --png "$out/quality_d12.png" --json "$out/quality_d12.json" --record "$out/quality_d12.md"
keep quality-d12 /tmp/picochat_quality_d12/{picochat,nanochat}_{tokenizer,base}.log
check fp8-tests 120 "$py" -m pytest -q -p no:cacheprovider tests/test_fp8.py -k cuda
fp8_variants=bf16,tensorwise,rowwise  # plus torchao's conversion of the same layers where torchao is installed
"$py" -c "import torchao.float8" 2>/dev/null && fp8_variants=$fp8_variants,torchao-tensorwise
check fp8-step 360 "$py" benchmarks/fp8_step.py --nanochat "$NANOCHAT_DIR" --variants "$fp8_variants" --depth 24 \
    --batch 16 --seq-len 2048 --vocab 32768 --compile --steps 5 --rounds 3
echo "gpu_check done in $((SECONDS - start))s"
