#!/usr/bin/env bash
# Install picochat with its test extras and run the whole test suite (slow end-to-end tests included).
# Pass pytest arguments through, e.g. `bash scripts/test.sh -m "not slow" -x`.
source "$(dirname "$0")/_setup.sh"
pip install -q -e ".[test]"
export PICOCHAT_MIRROR="${PICOCHAT_MIRROR:-$(cd .. && pwd)/shared/data}"
python -m pytest -q "$@"
