"""Rendered conversations -> fixed-shape training batches with the assistant-only loss mask.

Mid-training and SFT both train on conversations from a task mixture (tasks/). Each example is
rendered by `tokenizer/chat.py` into (ids, mask), mask = 1 exactly on the tokens the assistant
writes, and rows of seq_len+1 tokens are filled BOS-aligned (every row starts at a conversation
start) by best fit: repeatedly the longest pending conversation that still fits (the oldest
among equals). When none fits:
  - crop=True (mid-training): crop the shortest pending conversation into the gap or pad the
    gap, whichever throws away fewer tokens (the policy of data/loader.py for documents);
  - crop=False (SFT): always pad, so every conversation is seen whole. nanochat's current SFT
    loader does the same ("bestfit-pad"); its older one padded each batch to its longest
    conversation, which wastes far more on short chats.
A conversation longer than a row is truncated to the row (counted as truncated). Targets are the
next ids where the next token's mask is 1 and -1 elsewhere (user turns, tool outputs, padding),
so the trainer's default loss is the mean NLL over assistant tokens.

Distributed: every rank packs the same global stream (rendering is cheap next to a training
step) and keeps rows [rank*B, (rank+1)*B) of each group of world_size*B rows. Ranks thus train
on disjoint conversations, and the cursor is the same on every rank, so the one cursor the
trainer checkpoints resumes all of them.

Exact resume: the cursor is {epoch, next example, pending example indices, stats}; resuming
re-renders the pending examples in order, and the packer is deterministic, so the next batch is
bit-identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from picochat.common.errors import UserError
from picochat.tasks.common import Subset, Task
from picochat.tokenizer.chat import render_conversation
from picochat.train.trainer import Batch

CURSOR_VERSION = 1
STATS = ("read", "skipped", "packed", "tokens", "loss_tokens", "truncated", "cropped", "padded", "rows")


@dataclass
class _Pending:
    index: int       # the example's index in the task
    ids: list[int]
    mask: list[int]


def fingerprint(task: Task) -> str:
    """A short id of a task's content (name, size, first and last example), so that a cursor is
    not resumed on a different mixture."""
    text = json.dumps([task.name, len(task), task[0]["messages"], task[len(task) - 1]["messages"]], sort_keys=True)
    return f"{task.name}-{zlib.crc32(text.encode()):08x}"


def epoch_order(n: int, epoch: int) -> np.ndarray:
    """The order of the examples in an epoch: as the task gives them first (a TaskMixture is
    already shuffled), then a fresh seeded shuffle per epoch, so repeats do not come in lockstep."""
    return np.arange(n) if epoch == 0 else np.random.default_rng(epoch).permutation(n)


class ChatPacker:
    """The packing state: a buffer of rendered conversations and the read position in the task."""

    def __init__(self, task: Task, tokenizer: Any, seq_len: int, *, crop: bool, infinite: bool,
                 buffer_size: int = 64, cursor: dict | None = None):
        if len(task) == 0:
            raise UserError(f"task {task.name} has no examples to train on")
        self.task, self.tokenizer, self.capacity = task, tokenizer, seq_len + 1
        self.crop, self.infinite, self.buffer_size = crop, infinite, buffer_size
        self.buffer: list[_Pending] = []
        if cursor is None:
            self.epoch, self.next = 0, 0
            self.stats = dict.fromkeys(STATS, 0)
        else:
            self.epoch, self.next, self.stats = cursor["epoch"], cursor["next"], dict(cursor["stats"])
            self.buffer = [self._render(i) for i in cursor["pending"]]
        self._order = epoch_order(len(task), self.epoch)

    def cursor(self) -> dict:
        return {"version": CURSOR_VERSION, "task": fingerprint(self.task), "examples": len(self.task),
                "seq_len": self.capacity - 1, "crop": self.crop, "epoch": self.epoch, "next": self.next,
                "pending": [p.index for p in self.buffer], "stats": dict(self.stats)}

    def _render(self, index: int) -> _Pending:
        ids, mask = render_conversation(self.tokenizer, self.task[index])
        return _Pending(index, ids, mask)

    def _refill(self) -> None:
        while len(self.buffer) < self.buffer_size:
            if self.next == len(self.task):
                if not self.infinite:
                    return
                self.epoch, self.next = self.epoch + 1, 0
                self._order = epoch_order(len(self.task), self.epoch)
            p = self._render(int(self._order[self.next]))
            self.next += 1
            self.stats["read"] += 1
            if not any(p.mask[1:self.capacity]):  # nothing to learn within a row: skip it
                self.stats["skipped"] += 1
                continue
            self.buffer.append(p)

    def _pop(self, space: int) -> _Pending | None:
        """The longest pending conversation of at most `space` tokens (oldest among equals)."""
        best = -1
        for k, p in enumerate(self.buffer):
            if len(p.ids) <= space and (best < 0 or len(p.ids) > len(self.buffer[best].ids)):
                best = k
        return self.buffer.pop(best) if best >= 0 else None

    def row(self) -> tuple[list[int], list[int]] | None:
        """One row of up to seq_len+1 (ids, mask); None when a finite task is used up."""
        ids: list[int] = []
        mask: list[int] = []
        while len(ids) < self.capacity:
            self._refill()
            if not self.buffer:
                break
            space = self.capacity - len(ids)
            p = self._pop(space)
            if p is None:
                shortest = min(range(len(self.buffer)), key=lambda k: (len(self.buffer[k].ids), k))
                overflow = len(self.buffer[shortest].ids) - space
                # a crop must leave the fragment something to learn; else padding is no worse
                if ids and (not self.crop or overflow > space or not any(self.buffer[shortest].mask[1:space])):
                    break  # pad the gap
                p = self.buffer.pop(shortest)
                self.stats["cropped" if ids else "truncated"] += overflow
            self.stats["tokens"] += len(p.ids)
            self.stats["packed"] += 1
            ids += p.ids[:space]
            mask += p.mask[:space]
        if not ids:
            return None
        self.stats["padded"] += self.capacity - len(ids)
        self.stats["loss_tokens"] += sum(mask[1:])
        self.stats["rows"] += 1
        return ids, mask


def rows_to_batch(rows: list[tuple[list[int], list[int]]], batch_size: int, capacity: int, pad_id: int,
                  cursor: Any = None) -> Batch:
    """(ids, mask) rows -> Batch: inputs = ids[:-1]; targets = ids[1:] where mask[1:] is 1, else -1.
    Missing rows (the end of a finite task) are all padding."""
    full = torch.full((batch_size, capacity), pad_id, dtype=torch.long)
    keep = torch.zeros((batch_size, capacity), dtype=torch.bool)
    for r, (ids, mask) in enumerate(rows):
        full[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        keep[r, :len(mask)] = torch.tensor(mask, dtype=torch.bool)
    targets = full[:, 1:].clone()
    targets[~keep[:, 1:]] = -1
    return Batch(full[:, :-1].contiguous(), targets, None, cursor)


def check_cursor(cursor: dict, task: Task, seq_len: int, crop: bool) -> dict:
    """A cursor saved by this packer for this task and row length, else a UserError."""
    want = {"version": CURSOR_VERSION, "task": fingerprint(task), "examples": len(task), "seq_len": seq_len,
            "crop": crop}
    for key, value in want.items():
        if cursor.get(key) != value:
            raise UserError(f"the checkpoint's data cursor has {key}={cursor.get(key)!r} but this run has "
                            f"{value!r}; resume with the same mixture and sequence length, or start the stage over")
    return cursor


def chat_batches(task: Task, tokenizer: Any, batch_size: int, seq_len: int, *, crop: bool,
                 infinite: bool = True, rank: int = 0, world_size: int = 1, cursor: dict | None = None,
                 buffer_size: int = 64) -> Iterator[Batch]:
    """Batches of packed conversations (see the module docstring): inputs/targets are CPU int64
    (batch_size, seq_len), targets -1 where there is no loss; batch.cursor resumes right after it.
    infinite=True wraps around epochs; False makes one pass, the last batch padded with rows that
    have no targets (every rank yields the same number of batches)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if cursor is not None:
        cursor = check_cursor(cursor, task, seq_len, crop)
    packer = ChatPacker(task, tokenizer, seq_len, crop=crop, infinite=infinite,
                        buffer_size=buffer_size, cursor=cursor)
    pad_id = tokenizer.bos_id
    while True:
        group = []
        for _ in range(batch_size * world_size):
            row = packer.row()
            if row is None:
                break
            group.append(row)
        if not group:
            return
        mine = group[rank * batch_size:(rank + 1) * batch_size]
        yield rows_to_batch(mine, batch_size, seq_len + 1, pad_id, packer.cursor())
        if len(group) < batch_size * world_size:
            return


def waste_fraction(cursor: dict) -> float:
    """Tokens lost to packing (truncated + cropped + padding) / (conversation tokens + padding)."""
    s = cursor["stats"]
    total = s["tokens"] + s["padded"]
    return (s["truncated"] + s["cropped"] + s["padded"]) / total if total else 0.0


def estimate_rows(task: Task, tokenizer: Any, seq_len: int, *, crop: bool, sample: int = 2000) -> int:
    """Rows one pass over the task fills: pack its first `sample` examples and scale up."""
    n = min(sample, len(task))
    rows = sum(1 for _ in iter(ChatPacker(Subset(task, 0, n), tokenizer, seq_len, crop=crop,
                                          infinite=False).row, None))
    return max(1, round(rows * len(task) / n))
