"""Native BPE trainer (C++: core.hpp, splitter.cpp, merges.cpp; bindings: binding.cpp).

`train(texts, num_merges, pattern)` returns exactly `bpe.train`'s merges (tests/test_bpe.py).
Policy lives here, the work in C++: documents are fed in batches of ~`BATCH_CHARS` characters;
each batch is split and counted on background threads (GIL released) while Python reads the
next one. For the built-in pattern family (GPT-4's with \\p{N}{1,k}) the C++ scanner splits; for
any other pattern Python's `regex` splits and C++ runs only the merge loop.

If the extension was not built (no compiler when the package was installed), `train` warns once
and runs the pure-Python reference instead.
"""

from __future__ import annotations

import os
import warnings
from array import array
from collections.abc import Iterable
from functools import lru_cache

from picochat.tokenizer import bpe

try:
    from picochat.tokenizer.fast import _core  # type: ignore[attr-defined]

    _IMPORT_ERROR = ""
except ImportError as _e:  # the extension is optional (setup.py: optional=True)
    _core = None
    _IMPORT_ERROR = str(_e)

BATCH_CHARS = 1_000_000
MAX_THREADS = 8
_warned = False


def available() -> bool:
    """Whether the compiled core was built and imports."""
    return _core is not None


def builtin_digits(pattern: str) -> int:
    """k if `pattern` is GPT-4's split pattern with \\p{N}{1,k} (which the C++ scanner
    implements), else 0."""
    for k in range(1, 10):
        if pattern == bpe.GPT4_SPLIT_PATTERN.replace(r"\p{N}{1,3}", rf"\p{{N}}{{1,{k}}}"):
            return k
    return 0


@lru_cache(maxsize=1)
def class_ranges() -> list[tuple[int, int, int]]:
    r"""(first, last + 1, bit) code point ranges of \p{L} (bit 0), \p{N} (1), \s (2) and the
    case-folded contraction letters s d m t l v e r (3..10), computed by the `regex` module
    itself, so the C++ scanner classifies characters exactly as bpe.py's regex does."""
    import regex

    classes = [r"\p{L}+", r"\p{N}+", r"\s+"] + [f"(?i:{c})+" for c in "sdmtlver"]
    ranges = []
    for block in range(0, 0x110000, 0x10000):  # 64k code points at a time: little memory
        chars = array("I", range(block, block + 0x10000)).tobytes().decode("utf-32-le", "surrogatepass")
        for bit, cls in enumerate(classes):
            ranges += [(block + m.start(), block + m.end(), bit) for m in regex.finditer(cls, chars)]
    return ranges


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        warnings.warn(f"picochat: native BPE core unavailable ({_IMPORT_ERROR}); using the slow pure-Python "
                      "trainer (reinstall picochat where a C++ compiler is available to fix this)", stacklevel=3)
        _warned = True


def train(texts: Iterable[str], num_merges: int, pattern: str = bpe.SPLIT_PATTERN,
          n_threads: int = 0) -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges from `texts`, exactly as `bpe.train` does. n_threads=0:
    one counting thread per CPU core, at most MAX_THREADS (each thread keeps its own map of
    unique chunks until the end, so memory grows with the thread count; Python's reading of the
    documents is the bottleneck long before that)."""
    if _core is None:
        _warn_fallback()
        return bpe.train(texts, num_merges, pattern)
    digits = builtin_digits(pattern)
    n_threads = n_threads or min(os.cpu_count() or 1, MAX_THREADS)
    counter = _core.Counter(class_ranges(), digits, n_threads)
    if digits:
        batch: list[str] = []
        size = 0
        for text in texts:
            batch.append(text)
            size += len(text)
            if size >= BATCH_CHARS:
                _feed(counter, batch)
                batch, size = [], 0
        _feed(counter, batch)
    else:
        counter.add_counted(list(bpe.count_chunks(texts, pattern).items()))
    return [tuple(m) for m in counter.train(num_merges)]


def _feed(counter, batch: list[str]) -> None:
    bad = counter.feed(batch)
    if bad:  # lone surrogates: clean them the way tiktoken (and bpe.py) does
        counter.feed([bpe.clean_text(batch[i]) for i in bad])
