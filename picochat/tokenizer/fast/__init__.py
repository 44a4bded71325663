"""Native BPE trainer (C++ core in core.cpp, bindings in binding.cpp), with a pure-Python fallback.

`train(texts, num_merges, pattern)` returns exactly `bpe.train`'s merges. If the extension was
not built (no compiler when the package was installed), it warns once and runs the reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from picochat.tokenizer import bpe

try:
    from picochat.tokenizer.fast import _core  # type: ignore[attr-defined]
except ImportError as _e:  # the extension is optional (setup.py: optional=True)
    _core = None
    _IMPORT_ERROR = str(_e)

_warned = False


def available() -> bool:
    """Whether the compiled core was built and imports."""
    return _core is not None


def train(texts: Iterable[str], num_merges: int, pattern: str = bpe.SPLIT_PATTERN) -> list[tuple[int, int]]:
    global _warned
    if _core is None:
        if not _warned:
            warnings.warn(f"picochat: native BPE core unavailable ({_IMPORT_ERROR}); using the slow "
                          "pure-Python trainer (reinstall picochat with a C++ compiler to fix)", stacklevel=2)
            _warned = True
        return bpe.train(texts, num_merges, pattern)
    raise NotImplementedError
