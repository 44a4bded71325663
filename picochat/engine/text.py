"""Turning a stream of generated token ids into text pieces, safely, one token at a time.

Two things make streaming text harder than decoding the finished reply:
- A token may end in the middle of a UTF-8 character (byte-level BPE splits anywhere), so the
  bytes are fed through an incremental UTF-8 decoder that holds back an incomplete character.
- A stop string ("\\nUser:") may arrive split over several tokens. Text that could still be the
  start of a stop string is held back until it either completes the stop string (then it is
  dropped and the row stops) or cannot any more (then it is released). This is why a client
  never sees part of a stop string, as the OpenAI API promises.

Pieces are labelled by segment ("text", "python", "python_output"; see engine/tools.py), so a
page can show tool calls and their output apart from the reply. Stop strings apply to the
"text" segment only.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

Piece = tuple[str, str]  # (segment, text)


class TextStream:
    def __init__(self, stop: Sequence[str] = ()):
        self.stop = [s for s in stop if s]
        self.segment = "text"
        self.pending = ""  # "text" held back: it may be the start of a stop string
        self.stopped = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes, segment: str) -> list[Piece]:
        """The bytes of one token (b"" for a special token) and the segment they belong to."""
        if self.stopped:
            return []
        out: list[Piece] = []
        if segment != self.segment:
            out += self._flush()
            self.segment = segment
        text = self._utf8.decode(data)
        if segment != "text" or not self.stop:
            return out + ([(segment, text)] if text else [])
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            head, self.pending = self.pending[:min(hits)], ""
            return out + ([("text", head)] if head else [])
        keep = self._stop_prefix_len(self.pending)
        head = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep:]
        return out + ([("text", head)] if head else [])

    def finish(self) -> list[Piece]:
        """Whatever is still held back, at the end of the reply."""
        return [] if self.stopped else self._flush()

    def _flush(self) -> list[Piece]:
        text = self.pending + self._utf8.decode(b"", final=True)
        self.pending = ""
        return [(self.segment, text)] if text else []

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best


def merge_pieces(pieces: Sequence[Piece]) -> list[dict[str, str]]:
    """Pieces -> message parts [{"type": segment, "text": ...}], joining neighbours of one segment."""
    parts: list[dict[str, str]] = []
    for segment, text in pieces:
        if parts and parts[-1]["type"] == segment:
            parts[-1]["text"] += text
        else:
            parts.append({"type": segment, "text": text})
    return parts
