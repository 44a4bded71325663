"""Resume a pretraining stream on a different number of ranks: re-shard the saved cursors.

Rank r of W reads chunks r, r+W, r+2W, ... of every epoch (data/loader.py), so after a stop the
work left is, for every old rank: (a) the documents pending in its packing buffer, (b) the rest
of the chunk it was reading (from `offset`), and (c) its later chunks, epoch after epoch. The new
ranks must split exactly that work between them: no document trained twice, none skipped.

The invariant, with positions ordered as (epoch, chunk):
- the *frontier* F is the furthest point any old rank has touched (a chunk it has started
  counts as touched). Nothing at or after F has been read by anyone;
- before F, what is unread is finite and explicit: every old rank's pending documents, its
  partly read chunk, and its whole chunks between its position and F (the `leftover` of the new
  cursors, as [epoch, chunk, offset] segments), plus any leftover the old cursors still carried;
- from F on, the new ranks return to the regular stride: new rank r' of W' reads the chunks
  c >= F.chunk with c % W' == r' in F's epoch, then chunks r', r'+W', ... of every later epoch.
Pending documents are dealt to the new ranks round robin (oldest first), leftover segments round
robin in (epoch, chunk) order; each new rank packs its pending documents, then its segments, then
its stride. The split is a pure function of the saved cursors and W', so every rank computes it
alone and they agree; the new cursors are ordinary cursors with two extra facts (`leftover`,
and a `next` that starts at F), and once a rank's leftover is read its cursor is the plain
regular one again. Resuming on the same number of ranks never comes here: it stays exact.
"""

from __future__ import annotations

from picochat.common.errors import UserError

_STATS = ("doc_tokens", "cropped", "padded", "rows")


def _touched_end(cursor: dict, num_chunks: int) -> tuple[int, int]:
    """Just past the last chunk this rank started, as (epoch, chunk); chunk is at most num_chunks."""
    epoch, chunk, offset = cursor["next"]
    if chunk >= num_chunks:
        return epoch, num_chunks
    return epoch, chunk + 1 if offset > 0 else chunk


def _unread_segments(cursor: dict, frontier: tuple[int, int], num_chunks: int) -> list[list[int]]:
    """This old rank's unread [epoch, chunk, offset] segments before the frontier, in its own order."""
    rank, world = cursor["rank"], cursor["world_size"]
    epoch, chunk, offset = cursor["next"]
    segments = [list(s) for s in cursor.get("leftover", [])]
    if offset > 0 and chunk < num_chunks:  # the rest of the chunk it was reading
        segments.append([epoch, chunk, offset])
        chunk += world
    end_epoch, end_chunk = frontier
    for e in range(epoch, end_epoch + 1):
        start = chunk if e == epoch else rank
        stop = num_chunks if e < end_epoch else end_chunk
        segments += [[e, c, 0] for c in range(start, stop, world)]
    return segments


def _check(cursors: list[dict]) -> None:
    world = len(cursors)
    first = cursors[0]
    for r, c in enumerate(cursors):
        same = all(c.get(k) == first.get(k) for k in ("version", "source", "split"))
        if not same or c.get("rank") != r or c.get("world_size") != world:
            raise UserError(f"the checkpoint's data cursors are inconsistent (rank {r} of {world} has "
                            f"rank={c.get('rank')!r}, world_size={c.get('world_size')!r}, "
                            f"source={c.get('source')!r}); restore the checkpoint or start the stage again")


def reshard_cursors(cursors: list[dict], world_size: int, num_chunks: int) -> list[dict]:
    """The cursors of `world_size` new ranks that together read exactly what `cursors` (every old
    rank's, in rank order) had left, each document once (see the module docstring)."""
    _check(cursors)
    frontier = max(_touched_end(c, num_chunks) for c in cursors)
    segments = sorted((s for c in cursors for s in _unread_segments(c, frontier, num_chunks)),
                      key=lambda s: (s[0], s[1]))
    # Interleave the old buffers by age (each is oldest first), so every new rank gets old documents.
    longest = max(len(c["pending"]) for c in cursors)
    pending = [c["pending"][i] for i in range(longest) for c in cursors if i < len(c["pending"])]
    stats = {k: sum(c["stats"][k] for c in cursors) for k in _STATS}
    epoch, chunk = frontier
    out = []
    for r in range(world_size):
        cursor = {key: cursors[0][key] for key in ("version", "source", "split")}
        cursor.update(rank=r, world_size=world_size, next=[epoch, chunk + (r - chunk) % world_size, 0],
                      pending=[list(p) for p in pending[r::world_size]],
                      stats=dict(stats) if r == 0 else dict.fromkeys(_STATS, 0))
        mine = segments[r::world_size]
        if mine:
            cursor["leftover"] = mine
        out.append(cursor)
    return out
