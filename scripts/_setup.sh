# Sourced by demo.sh / test.sh: create .venv if missing, install torch, then picochat.
# torch==2.13.0 is installed first because any other request pulls a multi-GB CUDA build on
# CPU-only machines; an already-installed torch (e.g. a GPU machine's) is kept as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
    pip install -q "torch==2.13.0"
fi
