"""The Tokenizer: train (native core or reference), save/load one JSON file, encode with tiktoken.

Ids: 0..255 are the bytes, merge i is id 256 + i, and the special tokens (`SPECIAL_TOKENS`, in
this order) come right after the last merge. `vocab_size` counts the special tokens, so training
to `vocab_size` learns `vocab_size - 256 - len(SPECIAL_TOKENS)` merges.

Encoding goes through a `tiktoken.Encoding` built from our merges (rank of a token = its id), as
nanochat does: tiktoken is fast, multi-threaded, and its rule is the one `bpe.encode_chunk`
spells out. Text that looks like a special token (e.g. "<|bos|>") is encoded as ordinary text;
special ids only come from `prepend`/`append` or from `special_id`.

Round trip: `decode(encode(s)) == s` for every valid Unicode string. A string with lone
surrogates (not valid Unicode, e.g. from `"\\ud800"`) is first cleaned as tiktoken cleans it,
each lone surrogate becoming U+FFFD, so it decodes to `bpe.clean_text(s)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import tiktoken

from picochat.common.errors import UserError
from picochat.common.io import atomic_write_json
from picochat.tokenizer import bpe

SPLIT_PATTERN = bpe.SPLIT_PATTERN
SPECIAL_TOKENS = (
    "<|bos|>",
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>",
    "<|output_start|>", "<|output_end|>",
)
FORMAT = "picochat-bpe-v1"


class Tokenizer:
    """Byte-level BPE with special tokens; see the module docstring for the id layout."""

    def __init__(self, merges: list[tuple[int, int]], pattern: str = SPLIT_PATTERN) -> None:
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self._bytes = bpe.vocab_bytes(self.merges)
        n = len(self._bytes)
        self.special_tokens = {name: n + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.vocab_size: int = n + len(SPECIAL_TOKENS)
        self.bos_id: int = self.special_tokens["<|bos|>"]
        # tiktoken keeps one rank per byte string. If two merges made the same bytes (rare: the
        # same string reached by two different splits), the earlier id is the token; the later
        # id is never produced by encode, and decode handles it through our own table.
        ranks: dict[bytes, int] = {}
        for i, b in enumerate(self._bytes):
            ranks.setdefault(b, i)
        self._complete = len(ranks) == n
        self.enc = tiktoken.Encoding(name="picochat", pat_str=pattern, mergeable_ranks=ranks,
                                     special_tokens=self.special_tokens)

    # --- training and files ------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, pattern: str = SPLIT_PATTERN,
              native: bool = True) -> Tokenizer:
        """Learn `vocab_size - 256 - 9` merges from the documents in `texts` (special tokens
        included in vocab_size). `native=False` forces the pure-Python reference trainer."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("Tokenizer.train wants an iterable of documents, not one string")
        num_merges = vocab_size - 256 - len(SPECIAL_TOKENS)
        if num_merges < 0:
            raise UserError(f"vocab_size {vocab_size} is too small: it must be at least "
                            f"{256 + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
        if native:
            from picochat.tokenizer import fast
            merges = fast.train(texts, num_merges, pattern)
        else:
            merges = bpe.train(texts, num_merges, pattern)
        return cls(merges, pattern)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "pattern": self.pattern, "merges": [list(m) for m in self.merges],
                "special_tokens": self.special_tokens, "vocab_size": self.vocab_size}

    def save(self, path: str | Path) -> None:
        """Write one JSON file (merges, split pattern, special tokens) atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by `save`; a missing or corrupt file is a UserError."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"tokenizer file '{path}' does not exist; run `picochat tokenizer train` "
                            "first") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"tokenizer file '{path}' is unreadable or corrupt ({e}); delete it and "
                            "run `picochat tokenizer train` again") from None
        try:
            tok = cls._from_dict(data)
        except (KeyError, TypeError, ValueError, AssertionError) as e:
            raise UserError(f"tokenizer file '{path}' is not a valid {FORMAT} file ({e!r}); delete it "
                            "and run `picochat tokenizer train` again") from None
        return tok

    @classmethod
    def _from_dict(cls, data: dict) -> Tokenizer:
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}")
        merges = [tuple(m) for m in data["merges"]]
        for i, (a, b) in enumerate(merges):
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ValueError(f"merge {i} refers to a token that does not exist yet")
        tok = cls(merges, data["pattern"])
        if data["special_tokens"] != tok.special_tokens or data["vocab_size"] != tok.vocab_size:
            raise ValueError("special tokens or vocab_size disagree with the merges")
        return tok

    # --- ids ---------------------------------------------------------------------------------

    def special_id(self, name: str) -> int:
        """The id of a special token, e.g. special_id("<|assistant_end|>")."""
        try:
            return self.special_tokens[name]
        except KeyError:
            raise ValueError(f"unknown special token {name!r}; known: {', '.join(SPECIAL_TOKENS)}") from None

    def token_bytes(self) -> list[int]:
        """UTF-8 byte length of each id (0 for special tokens), for bits-per-byte metrics."""
        return [len(b) for b in self._bytes] + [0] * len(SPECIAL_TOKENS)

    def id_to_bytes(self, token_id: int) -> bytes:
        """The bytes of an ordinary token (b"" for a special token)."""
        return self._bytes[token_id] if token_id < len(self._bytes) else b""

    # --- encode / decode ---------------------------------------------------------------------

    def encode(self, text: str, prepend: int | None = None, append: int | None = None) -> list[int]:
        """Ordinary text -> ids, optionally with one id before and/or after (e.g. bos_id)."""
        ids = self.enc.encode_ordinary(text)
        if prepend is not None:
            ids.insert(0, prepend)
        if append is not None:
            ids.append(append)
        return ids

    def encode_batch(self, texts: list[str], num_threads: int = 8,
                     prepend: int | None = None) -> list[list[int]]:
        """Encode many texts on tiktoken's thread pool; optionally prepend one id to each."""
        batch = self.enc.encode_ordinary_batch(texts, num_threads=num_threads)
        if prepend is not None:
            for ids in batch:
                ids.insert(0, prepend)
        return batch

    def decode(self, ids: list[int]) -> str:
        """Ids -> text (special tokens as their names); invalid UTF-8 becomes U+FFFD."""
        if self._complete:
            try:
                return self.enc.decode(ids)
            except KeyError:
                pass  # an id outside the vocabulary: let the loop below say which
        out: list[bytes] = []
        names = {v: k.encode() for k, v in self.special_tokens.items()}
        for i in ids:
            if 0 <= i < len(self._bytes):
                out.append(self._bytes[i])
            elif i in names:
                out.append(names[i])
            else:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return b"".join(out).decode("utf-8", errors="replace")
