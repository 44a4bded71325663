"""A small deterministic training run through the real Trainer, for the resume and DDP tests.

usage: python toy_train.py OUT_DIR [--kill-at-batch N] [--steps N] [--global-batch N] [--parallel ddp|fsdp]
                             [--fused-adamw] [--compile] [--compile-optim] [--fp8-cpu tensorwise|rowwise]
Works under torchrun: each rank takes its share of the rows of every global batch.
"""

import argparse
import os
import signal

import torch

from picochat.common.device import close_distributed, init_distributed
from picochat.config import TrainConfig
from picochat.model.gpt import GPT, GPTConfig
from picochat.train.trainer import Batch, Trainer

VOCAB, T = 64, 16


class CountingStage:
    """Rows are runs of consecutive ids (mod VOCAB) from a random start: learnable, deterministic."""

    name = "toy"

    def __init__(self, global_batch: int, micro: int, rank: int, world: int, kill_at: int):
        self.global_batch, self.micro, self.rank, self.world = global_batch, micro, rank, world
        self.accum = global_batch // (micro * world)
        self.kill_at = kill_at

    def _rows(self, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(1000 + step)
        start = torch.randint(0, VOCAB, (self.global_batch, 1), generator=g)
        rows = (start + torch.arange(T + 1)) % VOCAB
        rows[:, 8] = torch.randint(0, VOCAB, (self.global_batch,), generator=g)  # some noise
        return rows

    def _batch(self, i: int) -> Batch:
        """Micro-batch i: this rank's chunk of the global batch of step i // accum, so that any
        world size sees the same global batch per optimizer step."""
        step, m = divmod(i, self.accum)
        chunk = (m * self.world + self.rank) * self.micro
        rows = self._rows(step)[chunk:chunk + self.micro]
        return Batch(rows[:, :-1], rows[:, 1:], None, i + 1)

    def batches(self, cursor):
        i = cursor or 0
        while True:
            if i == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # die mid-step, like a crash
            yield self._batch(i)
            i += 1

    def val_batches(self):
        return (self._batch(10_000 * self.accum + j) for j in range(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--kill-at-batch", type=int, default=-1)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--parallel", default="ddp")
    ap.add_argument("--fused-adamw", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-optim", action="store_true")
    ap.add_argument("--fp8-cpu", default="", help="fp8 Linears on CPU (this torch's CPU _scaled_mm), converted "
                                                  "before the trainer wraps the model, as on a GPU")
    args = ap.parse_args()
    torch.set_num_threads(1)
    info, device = init_distributed("cpu")
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, head_dim=32, vocab_size=VOCAB, seq_len=T))
    if args.fp8_cpu:
        from picochat.model.fp8 import convert_blocks_to_fp8

        convert_blocks_to_fp8(model, args.fp8_cpu)
    micro = 2  # rows per device per micro-step -> gradient accumulation
    cfg = TrainConfig(device_batch_size=micro, total_batch_tokens=args.global_batch * T, num_steps=args.steps,
                      save_every=3, eval_every=6, eval_tokens=10_000, log_every=1, matrix_lr=0.05,
                      embedding_lr=0.3, unembedding_lr=0.01, warmdown_frac=0.5,
                      parallel=args.parallel, fused_adamw=args.fused_adamw,
                      compile=args.compile, compile_optim=args.compile_optim)
    stage = CountingStage(args.global_batch, micro, info.rank, info.world_size, args.kill_at_batch)
    trainer = Trainer(model, cfg, args.out, num_steps=args.steps, device=device, dist_info=info,
                      token_bytes=torch.ones(VOCAB, dtype=torch.long))
    trainer.fit(stage)
    close_distributed()


if __name__ == "__main__":
    main()
