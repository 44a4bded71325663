#!/usr/bin/env bash
# The whole pipeline on the embedded offline corpus, on whatever machine this is (~15 min on 2 CPU cores).
source "$(dirname "$0")/_setup.sh"
pip install -q -e .
picochat speedrun --preset demo "$@"
