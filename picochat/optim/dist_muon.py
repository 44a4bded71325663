"""Muon across ranks: each rank orthogonalises its share of the matrices, then all ranks swap.

Orthogonalisation (5 Newton–Schulz-style iterations, 3 matmuls each) is Muon's expensive part,
and plain data parallelism would have every rank repeat it for every matrix. Here, within each
stack of same-shape matrices, matrix i belongs to rank i mod W (round robin); each rank
orthogonalises only its own, and one all-gather per stack hands every rank all the updates
(the idea of DistMuon in modded-nanogpt and nanochat). The cheap elementwise momentum update
still runs on every rank, so the optimizer state stays laid out exactly as single-process
Muon's: checkpoints do not depend on the world size, and the result equals Muon's (test).

Works on both layouts the trainer uses (train/parallel.py):
  - DDP: parameters and (already all-reduced) gradients are whole tensors on every rank.
  - FSDP2: parameters, gradients and momentum buffers are DTensors sharded on dim 0. The update
    needs the whole matrix (orthogonalisation is not row-separable), so one all-gather per stack
    assembles the full momentum updates first; after the swap each rank keeps its own rows.
    (An all-to-all that sends each matrix only to its owner would move 1/W of those bytes; the
    all-gather is the simple, correct version.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Shard

from picochat.optim.muon import Muon

# all_gather_into_tensor was renamed all_gather_single (torch 2.13); same call.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _local(t: Tensor) -> Tensor:
    """The rows of `t` this rank holds: the local shard of a DTensor, else `t` itself (same storage)."""
    return t.to_local() if isinstance(t, DTensor) else t


def _rows_per_rank(rows: int, world: int) -> int:
    """FSDP2 shards dim 0 like torch.chunk: ceil(rows / W) rows per rank, the last ranks get fewer."""
    return -(-rows // world)


class DistMuon(Muon):
    """Muon whose orthogonalisation is shared round-robin across the default process group.

    Same arguments as Muon. With one rank it computes exactly what Muon does.
    """

    def _step_stack(self, params: list[Tensor], group: dict) -> None:
        world, rank = dist.get_world_size(), dist.get_rank()
        update = self._nesterov_update([_local(p.grad) for p in params],
                                       [_local(b) for b in self._buffers(params)], group["momentum"])
        sharded = isinstance(params[0], DTensor)
        if sharded:
            update = self._gather_rows(update, params[0], world)
        n_mat = len(params)
        mine = self._orthogonalize(self._equilibrate(update[rank::world]), group["ns_steps"])
        # On CUDA the orthogonalisation runs in bf16, so sending bf16 halves the bytes at no real
        # cost in accuracy (eager: exactly the values computed; compiled: to bf16 precision).
        comm_dtype = torch.bfloat16 if mine.is_cuda else mine.dtype
        per_rank = -(-n_mat // world)
        send = mine.new_zeros((per_rank, *mine.shape[1:]), dtype=comm_dtype)
        send[:len(mine)] = mine
        recv = send.new_empty((world * per_rank, *mine.shape[1:]))
        _all_gather(recv, send)
        # recv[r * per_rank + j] is rank r's j-th matrix, i.e. matrix j * W + r of the stack.
        full = recv.view(world, per_rank, *mine.shape[1:]).transpose(0, 1).flatten(0, 1)[:n_mat]
        # Every rank now holds every whole update, so the per-row statistics are the same everywhere.
        full = self._reduce_variance(params, full.to(update.dtype))
        if sharded:
            mesh_rank = params[0].device_mesh.get_local_rank()
            rows = _rows_per_rank(params[0].shape[0], world)
            full = full[:, mesh_rank * rows:(mesh_rank + 1) * rows]
        self._apply([_local(p) for p in params], full, group, self._shape_scale(params[0].shape))

    @staticmethod
    def _gather_rows(update: Tensor, param: DTensor, world: int) -> Tensor:
        """(N, local rows, n) shards of every rank -> (N, m, n) whole matrices, in one all-gather."""
        assert param.placements == (Shard(0),) and param.device_mesh.size() == dist.get_world_size(), \
            "DistMuon expects FSDP2 sharding on dim 0 over the whole world (train/parallel.py)"
        m = param.shape[0]
        rows = _rows_per_rank(m, world)
        padded = update.new_zeros((update.size(0), rows, update.size(2)))
        padded[:, :update.size(1)] = update
        gathered = padded.new_empty((world * padded.size(0), *padded.shape[1:]))  # rank-major
        _all_gather(gathered, padded)
        whole = gathered.view(world, *padded.shape).permute(1, 0, 2, 3)  # (N, W, rows, n)
        return whole.reshape(update.size(0), world * rows, update.size(2))[:, :m]
