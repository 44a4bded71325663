"""The user's own conversations: a chat file in the OpenAI messages shape, as a mid/SFT task.

One JSON object per line of a `.jsonl` or `.jsonl.gz` file:

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}, ...]}

An optional first system message, then user and assistant turns alternating, ending with an
assistant turn (every user turn is answered). Content is a non-empty string, or a list of
`{"type": "text", "text": ...}` parts (assistant parts may also be python / python_output tool
segments, see tokenizer/chat.py). Other keys on a line are ignored.

In a mixture it is the item `chatfile:PATH` (tasks/registry.py), e.g.
`--mixture "chatfile:data/my_chats.jsonl*2, smoltalk:train"`.

The whole file is checked when the task is built, before training starts, and the first bad
conversation stops the run with its file, line and problem (unknown role, no assistant turn,
empty content, wrong types, not JSON). We reject rather than skip: a chat file is data the user
made, so a malformed line is usually a bug in the script that wrote it, and training on the
rest would hide it; the sentence says which line to fix.

Memory holds only the byte offset and length of each line; a conversation is re-read from disk
when it is rendered. A .jsonl.gz file is decompressed once into an anonymous temporary file
(deleted when the process ends) so that lines can be re-read by offset.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from picochat.common.errors import UserError
from picochat.tasks.common import Task, permutation
from picochat.tokenizer.chat import ConversationError, validate_conversation

PREFIX = "chatfile:"


def check_conversation(obj: object) -> list[dict]:
    """The messages of one chat-file line, or a ConversationError saying what is wrong."""
    if not isinstance(obj, dict) or "messages" not in obj:
        raise ConversationError("a line must be a JSON object with a 'messages' list")
    messages = obj["messages"]
    validate_conversation(messages)  # roles, alternation, content types
    for i, m in enumerate(messages):
        text = m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
        if not text.strip():
            raise ConversationError(f"message {i} ({m['role']}) has empty content")
    if messages[-1]["role"] != "assistant":
        raise ConversationError("the conversation ends with a user turn: the assistant turn that answers "
                                "it is missing")
    return messages


class ChatFile(Task):
    """Conversations of one chat file (see the module docstring), in a seeded order."""

    eval_type = "generative"

    def __init__(self, path: str | Path, *, seed: int | None = 42):
        self.path = Path(path).expanduser()
        name = self.path.name.lower()
        if not (name.endswith(".jsonl") or name.endswith(".jsonl.gz")):
            raise UserError(f"chat file {self.path} must be .jsonl or .jsonl.gz (one JSON conversation per line)")
        if not self.path.is_file():
            raise UserError(f"chat file {self.path} does not exist; check the path after '{PREFIX}'")
        self.name = f"{PREFIX}{self.path.name}"
        self._store = tempfile.TemporaryFile() if name.endswith(".gz") else None
        offsets, lengths = self._index()
        if not offsets:
            raise UserError(f"chat file {self.path} has no conversations")
        self.offsets, self.lengths = np.array(offsets, dtype=np.int64), np.array(lengths, dtype=np.int64)
        self.order = permutation(len(self.offsets), seed)
        self._fd = self._store.fileno() if self._store else os.open(self.path, os.O_RDONLY)

    def _lines(self):
        """(line number, byte offset in the readable store, raw line) for every line of the file."""
        if self._store is None:
            with open(self.path, "rb") as f:
                offset = 0
                for number, line in enumerate(f, 1):
                    yield number, offset, line
                    offset += len(line)
            return
        try:
            with gzip.open(self.path, "rb") as f:
                for number, line in enumerate(f, 1):
                    offset = self._store.tell()
                    self._store.write(line)
                    yield number, offset, line
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"chat file {self.path} is not a readable gzip file ({e})") from None
        self._store.flush()

    def _index(self) -> tuple[list[int], list[int]]:
        offsets, lengths = [], []
        for number, offset, line in self._lines():
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{self.path} line {number} is not UTF-8 text (byte {e.start} of the line); "
                                "re-encode the file as UTF-8") from None
            try:
                check_conversation(json.loads(text))
            except (ValueError, RecursionError, ConversationError) as e:
                msg = e if isinstance(e, ConversationError) else f"not valid JSON ({getattr(e, 'msg', e)})"
                raise UserError(f"{self.path} line {number}: {msg}") from None
            offsets.append(offset)
            lengths.append(len(line))
        return offsets, lengths

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        k = int(self.order[self._check_index(i)])
        line = os.pread(self._fd, int(self.lengths[k]), int(self.offsets[k]))
        return {"messages": json.loads(line)["messages"]}

    def evaluate(self, example: dict, reply: str) -> bool:
        raise UserError(f"{self.name} is training data with no answers to score; use it in --mixture "
                        "for mid-training or SFT")

    def __del__(self) -> None:
        if getattr(self, "_store", None) is None and hasattr(self, "_fd"):
            os.close(self._fd)
