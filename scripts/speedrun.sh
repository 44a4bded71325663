#!/usr/bin/env bash
# The GPU-cluster wrapper: the whole pipeline for a preset on every GPU of this machine.
#   bash scripts/speedrun.sh                 # d20 on all visible GPUs
#   PRESET=d26 RUN=big SHARDS=0-449 bash scripts/speedrun.sh
# Multi-node: run the same `torchrun` line on each node with --nnodes N --node-rank I
# --rdzv-endpoint HOST:PORT (see README), after the tokenizer step on one node.
source "$(dirname "$0")/_setup.sh"
pip install -q -e .
PRESET="${PRESET:-d20}"
RUN="${RUN:-$PRESET}"
NPROC="${NPROC:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
echo "speedrun: preset $PRESET, run $RUN, $NPROC process(es)"
# Every dataset the preset needs, before any GPU time is spent: ClimbMix shards (~250M characters
# each, like the FineWeb-Edu ones; d20 reads up to ~240), the chat and eval tasks, the CORE bundle.
# Complete files are kept; --mirror / PICOCHAT_MIRROR reads them from a local copy instead.
picochat data download "$PRESET" --shards "${SHARDS:-0-239}"
# The tokenizer is trained once, by one process; every rank then finds it complete and skips it.
picochat tokenizer train --preset "$PRESET" --run "$RUN"
if [ "$NPROC" -gt 1 ]; then
    torchrun --standalone --nproc_per_node="$NPROC" -m picochat -- speedrun --preset "$PRESET" --run "$RUN" "$@"
else
    picochat speedrun --preset "$PRESET" --run "$RUN" "$@"
fi
