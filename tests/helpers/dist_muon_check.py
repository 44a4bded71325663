"""Run under torchrun: DistMuon (whole tensors, as under DDP, and FSDP2-style DTensors sharded on
dim 0) against single-process Muon on the same matrices and gradients, several steps.

usage: torchrun --nproc_per_node=2 dist_muon_check.py   (exits non-zero on a mismatch)
With a GPU per rank it runs on CUDA over NCCL (bf16 orthogonalisation and bf16 traffic), else on
CPU over gloo.
"""

import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from picochat.common.device import close_distributed
from picochat.optim.dist_muon import DistMuon
from picochat.optim.muon import Muon

# Stacks of 3 (not a multiple of the world size), a tall and a wide matrix, and 5 rows (uneven shards).
SHAPES = [(16, 8)] * 3 + [(24, 8), (8, 24), (5, 12), (5, 12)]
STEPS = 4


def grads(step: int, device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=g).to(device) for s in SHAPES]


# Plain Muon, then with nanochat's three refinements (per-row statistics need the whole matrices).
OPTIONS = [{}, dict(equilibrate_rows=True, variance_reduction=True, cautious_wd=True)]


def run(opt_cls, params: list[torch.Tensor], shard=lambda t: t, **options) -> None:
    opt = opt_cls(params, lr=0.05, momentum=0.9, weight_decay=0.1, **options)
    for step in range(STEPS):
        for p, g in zip(params, grads(step, params[0].device), strict=True):
            p.grad = shard(g)
        opt.step()


def main() -> None:
    cuda = torch.cuda.device_count() >= int(os.environ["WORLD_SIZE"])
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    tol = dict(rtol=1e-2, atol=1e-3) if cuda else dict(rtol=1e-5, atol=1e-6)  # bf16 matmuls on CUDA
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for options in OPTIONS:
        torch.manual_seed(0)
        init = [torch.randn(s).to(device) for s in SHAPES]
        ref = [torch.nn.Parameter(t.clone()) for t in init]
        run(Muon, ref, **options)

        whole = [torch.nn.Parameter(t.clone()) for t in init]
        run(DistMuon, whole, **options)
        for a, b in zip(ref, whole, strict=True):
            torch.testing.assert_close(b.data, a.data, **tol)

        sharded = [torch.nn.Parameter(distribute_tensor(t.clone(), mesh, [Shard(0)])) for t in init]
        run(DistMuon, sharded, shard=lambda g, mesh=mesh: distribute_tensor(g, mesh, [Shard(0)]), **options)
        for a, b in zip(ref, sharded, strict=True):
            torch.testing.assert_close(b.data.full_tensor(), a.data, **tol)
    if dist.get_rank() == 0:
        print("DistMuon matches Muon")
    close_distributed()  # as the CLI does (see there why gloo ranks end with os._exit)


if __name__ == "__main__":
    main()
