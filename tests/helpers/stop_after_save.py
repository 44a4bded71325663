"""Run a picochat command that ends abruptly (SIGKILL, like a crash or a lost node) right after
the training checkpoint of step N is on disk. Every rank that reaches that save dies there.

usage: [torchrun ...] stop_after_save.py [--] N [--node] picochat-arguments...
  --node: the torchrun agent that started this process dies first: the whole "node" is lost, and
          the ranks of the other nodes fail in their next collective
  (torchrun would take picochat's `--run` for its own `--run-path`: a `--` keeps them apart)
"""

import os
import signal
import sys

from picochat import cli
from picochat.train.trainer import Trainer


def main() -> None:
    argv = sys.argv[1:]
    argv = argv[1:] if argv[:1] == ["--"] else argv
    stop_step, args = int(argv[0]), argv[1:]
    whole_node = args[:1] == ["--node"]
    args = args[1:] if whole_node else args
    save = Trainer._save

    def save_then_die(self: Trainer) -> None:
        save(self)  # ends in a barrier: the checkpoint is complete on disk for every rank
        if self.step >= stop_step:
            print(f"stop_after_save: rank {self.dist.rank} killed after the step-{self.step} checkpoint", flush=True)
            sys.stderr.flush()
            if whole_node:
                os.kill(os.getppid(), signal.SIGKILL)  # the agent (torchrun runs workers as its children)
            os.kill(os.getpid(), signal.SIGKILL)

    Trainer._save = save_then_die
    cli.main(args)


if __name__ == "__main__":
    main()
