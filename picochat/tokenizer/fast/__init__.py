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
from collections.abc import Iterable
from functools import lru_cache

from picochat.tokenizer import bpe

try:
    from picochat.tokenizer.fast import _core  # type: ignore[attr-defined]

    _IMPORT_ERROR = ""
except ImportError as _e:  # the extension is optional (setup.py: optional=True)
    _core = None
    _IMPORT_ERROR = str(_e)

BATCH_CHARS = 4_000_000
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
def class_table() -> bytes:
    """One uint16 per code point: \\p{L}, \\p{N}, \\s and the case-folded contraction letters,
    computed by the `regex` module itself, so the scanner classifies exactly as bpe.py does."""
    import numpy as np
    import regex

    every_char = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    table = np.zeros(0x110000, dtype=np.uint16)
    classes = [r"\p{L}+", r"\p{N}+", r"\s+"] + [f"(?i:{c})+" for c in "sdmtlver"]
    for bit, cls in enumerate(classes):
        for m in regex.finditer(cls, every_char):
            table[m.start():m.end()] |= 1 << bit
    return table.astype("<u2").tobytes()


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        warnings.warn(f"picochat: native BPE core unavailable ({_IMPORT_ERROR}); using the slow pure-Python "
                      "trainer (reinstall picochat where a C++ compiler is available to fix this)", stacklevel=3)
        _warned = True


def train(texts: Iterable[str], num_merges: int, pattern: str = bpe.SPLIT_PATTERN,
          n_threads: int = 0) -> list[tuple[int, int]]:
    """Learn up to `num_merges` merges from `texts`, exactly as `bpe.train` does. n_threads=0:
    one counting thread per CPU core."""
    if _core is None:
        _warn_fallback()
        return bpe.train(texts, num_merges, pattern)
    digits = builtin_digits(pattern)
    n_threads = n_threads or os.cpu_count() or 1
    counter = _core.Counter(class_table(), digits, n_threads)
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
