#!/usr/bin/env bash
# Install picochat with its test extras and run the whole test suite (slow end-to-end tests included).
# Pass pytest arguments through, e.g. `bash scripts/test.sh -m "not slow" -x`.
source "$(dirname "$0")/_setup.sh"
pip install -q -e ".[test]"
# The native tokenizer core is optional for users (a pure-Python fallback exists), but the tests
# that hold it equal to the reference skip without it: under CI a failed build must fail the run.
if [ "${CI:-}" = "true" ] && ! python -c "import sys; from picochat.tokenizer import fast; sys.exit(not fast.available())"; then
    echo "test.sh: the native tokenizer core (picochat/tokenizer/fast/_core) did not build; see the pip output above" >&2
    exit 1
fi
ruff check picochat tests benchmarks scripts
# The chat-page test drives Debian's Chromium through playwright (never `playwright install`).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null || echo "test.sh: could not install chromium; the page test will skip"
fi
export PICOCHAT_MIRROR="${PICOCHAT_MIRROR:-$(cd .. && pwd)/shared/data}"
python -m pytest -q "$@"
