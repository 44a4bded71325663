"""Run under torchrun (2 ranks, gloo): seed FSDP2-sharded optimizers from a finished stage's
optimizer.pt and check, on rank 0, that the consolidated state equals the saved one and the
learning rates are the new stage's. Exits non-zero on a mismatch.

usage: torchrun --nproc_per_node=2 warm_start_check.py STAGE_DIR OUT_DIR
"""

import sys

import torch
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

from picochat.common.device import close_distributed, init_distributed
from picochat.config import TrainConfig
from picochat.model import artifact
from picochat.train import parallel
from picochat.train.trainer import Trainer


def main() -> None:
    start, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    info, device = init_distributed("cpu")
    model, _ = artifact.load_model(start)
    cfg = TrainConfig(device_batch_size=2, total_batch_tokens=2 * 2 * model.config.sequence_len, matrix_lr=0.003,
                      parallel="fsdp")
    trainer = Trainer(model.train(), cfg, out, num_steps=3, device=device, dist_info=info)
    problem = parallel.warm_start_optimizers(trainer.par, trainer.optimizers,
                                             lambda: artifact.load_optimizer_state(start), info)
    assert problem == "", problem
    assert all(isinstance(p, torch.distributed.tensor.DTensor) for p in trainer.raw_model.parameters())
    loaded = get_optimizer_state_dict(trainer.par.raw, trainer.optimizers, options=parallel._FULL)  # collective
    if info.is_main:
        saved = artifact.load_optimizer_state(start)["state"]
        assert loaded["state"].keys() == saved.keys()
        for name, state in saved.items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(loaded["state"][name][key]), torch.as_tensor(value)), (name, key)
        assert trainer.optimizers[1].param_groups[0]["lr"] == 0.003
        print("warm start under FSDP matches", flush=True)
    close_distributed()


if __name__ == "__main__":
    main()
