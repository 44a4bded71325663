"""Run nanochat's base_train from another seed: `python nanochat_seeded.py SEED [base_train flags]`,
from a nanochat checkout as the working directory.

nanochat's base_train has no seed flag: `nanochat.common.compute_init` always calls
torch.manual_seed(42) before the model is built, and its data loader draws no random numbers, so
the seed only sets the initial weights (as picochat's `--seed` does). To measure how much the
seed alone moves nanochat's scores (issue #26: the out-of-domain gaps are seed-sized), this
wrapper reseeds torch's global generator right after compute_init and then runs base_train
unchanged. Nothing of nanochat is copied or edited; quality.py uses it for `--nanochat-seed`.
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].lstrip("-").isdigit():
        sys.exit("usage: python nanochat_seeded.py SEED [base_train flags], run from a nanochat checkout")
    seed = int(sys.argv[1])
    sys.path.insert(0, os.getcwd())  # the checkout: `nanochat` and `scripts` import from here
    import nanochat.common as common
    import torch

    original = common.compute_init

    def compute_init_reseeded(*args, **kwargs):
        out = original(*args, **kwargs)
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed(seed)
        return out

    # base_train does `from nanochat.common import compute_init` when it runs, so it picks this up.
    common.compute_init = compute_init_reseeded
    sys.argv = ["scripts.base_train", *sys.argv[2:]]
    runpy.run_module("scripts.base_train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
