"""Pretraining batches: stream documents, tokenize in the background, pack rows, resume exactly.

Packing (BOS-aligned best fit, after nanochat's loader; the design is ours):
- every document is tokenized with BOS prepended, and every row starts at a document start, so
  every token can attend back to its own document's beginning, never into a stranger's tail;
- a row of seq_len+1 tokens is filled from a buffer of pending documents: repeatedly the
  longest document that still fits whole (ties: the oldest);
- when nothing fits, we either crop the shortest pending document into the gap (its tail is
  dropped: a row may not start mid-document) or pad the gap (targets -1), whichever throws away
  fewer tokens. nanochat always crops; padding a 5-token gap instead of cutting a 300-token
  document to 5 tokens keeps that document for a later row. Both losses are counted, and
  `waste_fraction(cursor)` reports (cropped + padded) / (tokens read + padded).

Sharding and order: a corpus is a list of chunks (see data/sources.py); rank r of W reads
chunks r, r+W, r+2W, ... in order, so ranks read disjoint documents whose union is exactly the
single-rank stream. Within a chunk, documents enter the buffer in slices of `SLICE_DOCS`.

Exact resume: the cursor names the next slice to read and every document still pending in
the buffer (as [chunk, index] pairs, oldest first). Resuming re-reads and re-tokenizes those
documents, restores the buffer in the same order, and continues: the packer is deterministic,
so the batches that follow are bit-identical to an uninterrupted run.

Resume on another number of ranks: a checkpoint stores every rank's cursor (the trainer gathers them).
Given those of W ranks and run on W' != W, each rank re-shards them (data/reshard.py): the new
ranks split the old buffers and the old ranks' unread chunk remainders between them (a cursor's
`leftover` segments, read before its stride), then continue on the W' stride from the furthest
point any old rank had reached. No document is read twice or skipped.

Debugging: with PICOCHAT_DOC_LOG=DIR set, every rank appends one JSON line per batch to
DIR/<split>-rank<r>-of<W>.jsonl: the [chunk, index] of each document packed into it and the
rank's row count after it (`stats.rows`, which a checkpoint's cursor also carries).
"""

from __future__ import annotations

import bisect
import json
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import torch

from picochat.common.errors import UserError
from picochat.data.corpus import Corpus, open_corpus
from picochat.data.reshard import reshard_cursors

SLICE_DOCS = 64  # documents tokenized together and added to the buffer at once
CURSOR_VERSION = 1


class _DocBuffer:
    """Pending documents, sorted by (length, arrival) so best fit is a bisect, not a scan."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []  # (length, seq)
        self.docs: dict[int, tuple[list[int], int, int]] = {}  # seq -> (ids, chunk, index)
        self.seq = 0
        self.taken: list[list[int]] | None = None  # [chunk, index] of popped documents, when logging

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, ids: list[int], chunk: int, index: int) -> None:
        bisect.insort(self.keys, (len(ids), self.seq))
        self.docs[self.seq] = (ids, chunk, index)
        self.seq += 1

    def _pop_at(self, i: int) -> list[int]:
        _, seq = self.keys.pop(i)
        ids, chunk, index = self.docs.pop(seq)
        if self.taken is not None:
            self.taken.append([chunk, index])
        return ids

    def pop_best_fit(self, space: int) -> list[int] | None:
        """The longest document of at most `space` tokens (the oldest among equals), or None."""
        i = bisect.bisect_right(self.keys, (space, float("inf"))) - 1
        if i < 0:
            return None
        return self._pop_at(bisect.bisect_left(self.keys, (self.keys[i][0], -1)))

    def shortest_len(self) -> int:
        return self.keys[0][0]

    def pop_shortest(self) -> list[int]:
        return self._pop_at(0)

    def pending(self) -> list[list[int]]:
        """[chunk, index] of every pending document, in arrival order."""
        return [[c, i] for _, c, i in (self.docs[s] for s in sorted(self.docs))]


def _slices(corpus: Corpus, rank: int, world_size: int, start: list[int], leftover: list[list[int]], *,
            infinite: bool):
    """Yield (chunk, offset, texts, position after) for this rank: first its leftover segments
    ([epoch, chunk, offset], from a re-shard), then its stride from [epoch, chunk, offset].
    A position is (leftover still unread, next stride slice)."""
    for j, (_, chunk_idx, offset) in enumerate(leftover):
        docs = corpus.chunk(chunk_idx)
        for off in range(offset, len(docs), SLICE_DOCS):
            rest = leftover[j + 1:]
            if off + SLICE_DOCS < len(docs):
                rest = [[leftover[j][0], chunk_idx, off + SLICE_DOCS], *rest]
            yield chunk_idx, off, docs[off:off + SLICE_DOCS], (rest, start)
    epoch, chunk_idx, offset = start
    n = corpus.num_chunks()
    while True:
        while chunk_idx < n:
            docs = corpus.chunk(chunk_idx)
            while offset < len(docs):
                nxt = [epoch, chunk_idx, offset + SLICE_DOCS]
                if offset + SLICE_DOCS >= len(docs):
                    nxt = [epoch, chunk_idx + world_size, 0]
                yield chunk_idx, offset, docs[offset:offset + SLICE_DOCS], ([], nxt)
                offset += SLICE_DOCS
            chunk_idx, offset = chunk_idx + world_size, 0
        if not infinite:
            return
        epoch, chunk_idx = epoch + 1, rank


class _Producer(threading.Thread):
    """Reads and tokenizes slices ahead of the packer (tokenization releases the GIL in tiktoken)."""

    def __init__(self, slices: Iterator, tokenizer: Any, prefetch: int, threads: int) -> None:
        super().__init__(daemon=True, name="picochat-loader")
        self.slices, self.tokenizer, self.threads = slices, tokenizer, threads
        self.out: queue.Queue = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            for chunk, offset, texts, nxt in self.slices:
                ids = self.tokenizer.encode_batch(texts, num_threads=self.threads, prepend=self.tokenizer.bos_id)
                if not self._put((chunk, offset, ids, nxt)):
                    return
            self._put(None)
        except BaseException as e:  # hand the failure to the consumer, which re-raises it
            self._put(e)

    def get(self) -> Any:
        item = self.out.get()
        if isinstance(item, BaseException):
            raise item
        return item


def _restore_buffer(corpus: Corpus, tokenizer: Any, pending: list[list[int]]) -> _DocBuffer:
    buf = _DocBuffer()
    by_chunk: dict[int, list[int]] = {}
    for c, i in pending:
        by_chunk.setdefault(c, []).append(i)
    ids: dict[tuple[int, int], list[int]] = {}
    for c, idxs in by_chunk.items():
        docs = corpus.chunk(c)
        for i, t in zip(idxs, tokenizer.encode_batch([docs[i] for i in idxs], prepend=tokenizer.bos_id)):
            ids[(c, i)] = t
    for c, i in pending:
        buf.add(ids[(c, i)], c, i)
    return buf


def _check_cursor(cursor: dict, corpus: Corpus, rank: int, world_size: int) -> dict:
    if "ranks" in cursor:  # every rank's cursor, as the trainer saves them: take this rank's part
        ranks = cursor["ranks"]
        if len(ranks) != world_size:  # saved on another number of ranks: split what they left
            ranks = reshard_cursors(ranks, world_size, corpus.num_chunks())
        cursor = ranks[rank]
    want = {"version": CURSOR_VERSION, "source": corpus.name, "split": corpus.split,
            "rank": rank, "world_size": world_size}
    for key, value in want.items():
        if cursor.get(key) != value:
            raise UserError(f"the data cursor has {key}={cursor.get(key)!r} but this run has {value!r}; "
                            "resume with the same data source, split and number of ranks")
    return cursor


def batches_from_corpus(corpus: Corpus, tokenizer: Any, batch_size: int, seq_len: int, *,
                        rank: int = 0, world_size: int = 1, cursor: dict | None = None,
                        buffer_size: int = 256, prefetch: int = 8, tokenizer_threads: int = 4,
                        pad_gaps: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict]]:
    """`pretrain_batches` on an already opened corpus (tests use small in-memory corpora).

    pad_gaps=False always crops into a gap, as nanochat does (kept to measure the difference).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if corpus.num_chunks() <= rank:
        raise UserError(f"{corpus.name}/{corpus.split} has {corpus.num_chunks()} chunks, too few for "
                        f"{world_size} ranks; use fewer ranks or more data")
    leftover: list[list[int]] = []
    if cursor is not None:
        cursor = _check_cursor(cursor, corpus, rank, world_size)
        buf = _restore_buffer(corpus, tokenizer, cursor["pending"])
        start, stats, leftover = cursor["next"], dict(cursor["stats"]), cursor.get("leftover", [])
    else:
        buf, start = _DocBuffer(), [0, rank, 0]
        stats = {"doc_tokens": 0, "cropped": 0, "padded": 0, "rows": 0}
    slices = _slices(corpus, rank, world_size, start, leftover, infinite=corpus.split == "train")
    producer = _Producer(slices, tokenizer, prefetch, tokenizer_threads)
    # next slice to enter the buffer, as (leftover segments, stride position); None: source exhausted
    position: tuple[list, list[int]] | None = (leftover, start)
    capacity = seq_len + 1
    doc_log = _doc_log(corpus, rank, world_size)
    if doc_log:
        buf.taken = []

    def refill() -> None:
        nonlocal position
        while position is not None and len(buf) < buffer_size:
            item = producer.get()
            if item is None:
                position = None
                return
            chunk, offset, ids, position = item
            for j, t in enumerate(ids):
                buf.add(t, chunk, offset + j)

    producer.start()
    try:
        while True:
            rows = []
            for _ in range(batch_size):
                row = _pack_row(buf, capacity, refill, stats, pad_gaps)
                if row is None:
                    break
                rows.append(row)
            if not rows:
                return
            inputs, targets = _to_tensors(rows, batch_size, capacity, tokenizer.bos_id)
            stats["rows"] += len(rows)
            if doc_log:
                _log_docs(doc_log, buf, stats["rows"])
            yield inputs, targets, _cursor(corpus, rank, world_size, position, buf, stats)
            if len(rows) < batch_size:
                return
    finally:
        producer.stop.set()


def _cursor(corpus: Corpus, rank: int, world_size: int, position: tuple[list, list[int]] | None,
            buf: _DocBuffer, stats: dict) -> dict:
    """The resume point after a batch: next slice ([epoch, chunk, offset]; past the end once a val
    pass is exhausted), the pending documents ([chunk, index], oldest first), and running counts;
    after a re-shard also the `leftover` segments still to read before `next`."""
    leftover, nxt = position if position is not None else ([], [0, 1 << 62, 0])
    cursor = {"version": CURSOR_VERSION, "source": corpus.name, "split": corpus.split, "rank": rank,
              "world_size": world_size, "next": nxt, "pending": buf.pending(), "stats": dict(stats)}
    if leftover:
        cursor["leftover"] = [list(s) for s in leftover]
    return cursor


def _doc_log(corpus: Corpus, rank: int, world_size: int) -> str:
    """The file this rank logs its packed documents to (PICOCHAT_DOC_LOG), or ''."""
    folder = os.environ.get("PICOCHAT_DOC_LOG", "")
    if not folder:
        return ""
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{corpus.split}-rank{rank}-of{world_size}.jsonl")


def _log_docs(path: str, buf: _DocBuffer, rows: int) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"rows": rows, "docs": buf.taken}) + "\n")
    buf.taken = []


def _pack_row(buf: _DocBuffer, capacity: int, refill, stats: dict, pad_gaps: bool = True) -> list[int] | None:
    """Fill one row (see the module docstring); None when the source is exhausted."""
    row: list[int] = []
    while len(row) < capacity:
        refill()
        if not buf:
            if not row:
                return None
            break
        space = capacity - len(row)
        doc = buf.pop_best_fit(space)
        if doc is not None:
            row += doc
            stats["doc_tokens"] += len(doc)
            continue
        overflow = buf.shortest_len() - space  # tokens a crop would drop
        if pad_gaps and row and overflow > space:  # padding the gap wastes less than cropping into it
            break
        doc = buf.pop_shortest()
        row += doc[:space]
        stats["doc_tokens"] += len(doc)
        stats["cropped"] += overflow
    stats["padded"] += capacity - len(row)
    return row


def _to_tensors(rows: list[list[int]], batch_size: int, capacity: int, pad_id: int):
    """Rows of up to seq_len+1 tokens -> (inputs, targets); -1 targets where there is no next token."""
    full = torch.full((batch_size, capacity), pad_id, dtype=torch.long)
    valid = torch.zeros((batch_size, capacity), dtype=torch.bool)
    for r, row in enumerate(rows):
        full[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        valid[r, :len(row)] = True
    targets = full[:, 1:].clone()
    targets[~valid[:, 1:]] = -1
    return full[:, :-1].contiguous(), targets


def pretrain_batches(source: str, split: str, tokenizer: Any, batch_size: int, seq_len: int, *,
                     rank: int = 0, world_size: int = 1, cursor: dict | None = None,
                     home: str = "", mirror: str = "", buffer_size: int = 256, tokenizer_threads: int = 4,
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict]]:
    """Packed (inputs, targets, cursor) batches of one split of a source (see the module docstring).

    inputs/targets: CPU int64 (batch_size, seq_len); targets = inputs shifted by one, -1 = no loss.
    cursor: JSON-serialisable; pass it back to continue with exactly the next batch.
    train: endless (epochs wrap; cursor["next"][0] is the epoch). val: one deterministic pass,
    the last batch padded with -1 targets.
    """
    corpus = open_corpus(source, split, home=home, mirror=mirror)
    return batches_from_corpus(corpus, tokenizer, batch_size, seq_len, rank=rank, world_size=world_size,
                               cursor=cursor, buffer_size=buffer_size, tokenizer_threads=tokenizer_threads)


def waste_fraction(cursor: dict) -> float:
    """(cropped document tails + padding) / (tokens of the documents consumed + padding)."""
    s = cursor["stats"]
    total = s["doc_tokens"] + s["padded"]
    return (s["cropped"] + s["padded"]) / total if total else 0.0
