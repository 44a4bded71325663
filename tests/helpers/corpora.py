"""Real text from the data mirror for the tokenizer tests, when the mirror is present."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path


def mirror_gutenberg(n_chars: int, offset: int = 0) -> list[str] | None:
    """A slice of the Gutenberg training books from the data mirror, or None when absent."""
    mirror = os.environ.get("PICOCHAT_MIRROR", "")
    path = Path(mirror) / "pretrain" / "gutenberg_train.jsonl.gz"
    if not mirror or not path.exists():
        return None
    docs, total = [], 0
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < offset:
                continue
            text = json.loads(line)["text"][: n_chars - total]
            docs.append(text)
            total += len(text)
            if total >= n_chars:
                break
    return docs
