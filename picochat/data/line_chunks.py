"""Whole lines of a text file, chunk by chunk, each chunk re-readable on its own.

The user's .txt and .jsonl files (data/user_corpus.py) are read through this module:
- a plain file is cut into byte ranges of `CHUNK_BYTES`, and chunk k is the lines that *start*
  in [k*CHUNK_BYTES, (k+1)*CHUNK_BYTES) (the rule of Hadoop's TextInputFormat): reading it
  seeks to the range, skips the partial line there and reads on past the range end to finish
  its last line. The file needs no index, only its size;
- a gzip file has no offsets to seek to, so its chunks are ranges of *compressed* input: the
  decompressor is fed `GZIP_BLOCK`-byte blocks and chunk k is the lines whose first byte came
  out of blocks [k*GZIP_BLOCKS_PER_CHUNK, (k+1)*GZIP_BLOCKS_PER_CHUNK): a pure function of the
  file, known without decompressing it first. The reader keeps its place, so a stream that
  reads chunks in increasing order decompresses the file once; going back restarts it.
A chunk comes back as one `Span` of bytes (parsing a block at once is ~3x cheaper than line by
line) that can name the file and line of any byte in it, for error messages.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from picochat.common.errors import UserError

CHUNK_BYTES = 1 << 20            # byte range of one chunk of a plain file
GZIP_BLOCK = 1 << 16             # compressed bytes fed to the decompressor at a time
GZIP_BLOCKS_PER_CHUNK = 4        # ~256 KiB compressed (~1 MiB of text) per chunk
MAX_LINE_BYTES = 64 << 20        # a longer line is refused: it would have to sit in memory whole


@dataclass
class Span:
    """Whole lines of one file, read as one block (parsing a block at once is ~3x cheaper than
    line by line), and where they are, for error messages."""

    path: Path
    offset: int      # byte offset of data[0] (in the decompressed stream for .gz)
    data: bytes      # the lines, line endings included
    first_line: int = 0  # 1-based number of the first line when known (gzip); 0: count on demand

    def where(self, pos: int) -> str:
        """'FILE line N' for the byte data[pos]."""
        if self.first_line:
            number = self.first_line + self.data.count(b"\n", 0, pos)
        else:
            number = _line_number(self.path, self.offset + pos)
        return f"{self.path} line {number}"


def _line_number(path: Path, offset: int) -> int:
    """1 + the newlines before `offset` (only computed for an error message)."""
    n = 1
    with open(path, "rb") as f:
        while offset > 0:
            block = f.read(min(offset, 1 << 20))
            if not block:
                break
            n += block.count(b"\n")
            offset -= len(block)
    return n


def _too_long(path: Path, offset: int) -> UserError:
    return UserError(f"{path}: the line at byte offset {offset} is longer than {MAX_LINE_BYTES >> 20} MiB; "
                     "split it into shorter documents")


def plain_chunk(path: Path, start: int, end: int) -> Span:
    """The lines of a plain file that start in bytes [start, end)."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":  # mid-line: that line belongs to the chunk it started in
                while (part := f.readline(1 << 20)) and not part.endswith(b"\n"):
                    pass
        first = f.tell()
        if first >= end:
            return Span(path, first, b"")
        parts = [f.read(end - first)]
        size = 0
        while not parts[-1].endswith(b"\n") and (part := f.readline(1 << 20)):  # finish the last line
            parts.append(part)
            size += len(part)
            if size > MAX_LINE_BYTES:
                raise _too_long(path, end)
    return Span(path, first, b"".join(parts))


class GzipLines:
    """Forward reader of a gzip file's lines, each tagged with the compressed block it started in.

    Chunk k of the file is the lines whose start block b has b // GZIP_BLOCKS_PER_CHUNK == k. The
    reader keeps its place, so reading chunks in increasing order decompresses the file once.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lines: Iterator[tuple[int, int, int, bytes]] | None = None
        self._peek: tuple[int, int, int, bytes] | None = None
        self._last_block = -1  # start block of the last line handed out
        self._lock = threading.Lock()

    def _stream(self) -> Iterator[tuple[int, int, int, bytes]]:
        """(start block, byte offset, number of the first line, whole lines with their endings),
        in order: per compressed block, the line finished there that started in an earlier block,
        then every line that starts in it (in one piece: a block's lines share their start block)."""
        d = zlib.decompressobj(wbits=31)
        carry, carry_block, carry_off, pos, number, block = b"", 0, 0, 0, 1, 0
        with open(self.path, "rb") as f:
            while raw := f.read(GZIP_BLOCK):
                try:
                    out = d.decompress(raw)
                    while d.eof and d.unused_data:  # a multi-member gzip: the next member follows
                        rest, d = d.unused_data, zlib.decompressobj(wbits=31)
                        out += d.decompress(rest)
                except zlib.error as e:
                    raise UserError(f"{self.path} is not a valid gzip file ({e}) near compressed byte "
                                    f"{block * GZIP_BLOCK}; re-create it") from None
                start, last = 0, out.rfind(b"\n") + 1  # out[:last] ends at a line end
                if carry and last:  # the carried line ends in this block
                    start = out.find(b"\n") + 1
                    yield carry_block, carry_off, number, carry + out[:start]
                    carry, number = b"", number + 1
                if start < last:
                    yield block, pos + start, number, out[start:last]
                    number += out.count(b"\n", start, last)
                if last < len(out):
                    if not carry:
                        carry_block, carry_off = block, pos + max(start, last)
                    carry += out[max(start, last):]
                    if len(carry) > MAX_LINE_BYTES:
                        raise _too_long(self.path, carry_off)
                pos += len(out)
                block += 1
        if not d.eof:
            raise UserError(f"{self.path} is a truncated gzip file (it ends mid-stream); re-create or re-copy it")
        if carry:
            yield carry_block, carry_off, number, carry

    def close(self) -> None:
        """Drop the reader's place (and its open file); the next chunk starts from the top."""
        with self._lock:
            getattr(self._lines, "close", lambda: None)()
            self._lines, self._peek, self._last_block = None, None, -1

    def chunk(self, k: int) -> Span:
        lo, hi = k * GZIP_BLOCKS_PER_CHUNK, (k + 1) * GZIP_BLOCKS_PER_CHUNK
        with self._lock:
            if self._lines is None or self._last_block >= lo:  # going back: start over
                self._lines, self._peek, self._last_block = self._stream(), None, -1
            lines: list[bytes] = []
            offset = number = 0
            while True:
                item = self._peek if self._peek is not None else next(self._lines, None)
                self._peek = None
                if item is None:  # exhausted: later chunks are empty until a call goes back
                    self._lines = iter(())
                    break
                if item[0] >= hi:
                    self._peek = item
                    break
                self._last_block = item[0]
                if item[0] >= lo:
                    if not lines:
                        offset, number = item[1], item[2]
                    lines.append(item[3])
            return Span(self.path, offset, b"".join(lines), number)
