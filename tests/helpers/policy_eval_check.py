"""RL's held-out eval (eval/chat.py: evaluate_policy) of a tiny random model, in one process or under
torchrun (gloo): rank 0 prints the result as one JSON line. Every problem samples with its own seed,
so 1 and 2 ranks must print the same numbers (tests/test_distributed.py compares them).

usage: python policy_eval_check.py   |   torchrun --nproc_per_node=2 policy_eval_check.py
"""

import json

import torch

from picochat.common.device import close_distributed, init_distributed
from picochat.config import GRPOConfig
from picochat.engine.engine import Engine
from picochat.eval.chat import evaluate_policy
from picochat.model.gpt import GPT, GPTConfig
from picochat.tasks.common import Task
from picochat.tokenizer.tokenizer import Tokenizer

TEXT = "Say some digits please. Here are digits: 0 1 2 3 4 5 6 7 8 9 and 42. Hello there, how are you? " * 20


class Digits(Task):
    """Reward: the fraction of the reply's characters that are digits (a random model scores some)."""

    name = "digits"

    def __len__(self) -> int:
        return 7  # not a multiple of the world size: rank 0 gets one problem more

    def __getitem__(self, i: int) -> dict:
        return {"messages": [{"role": "user", "content": f"Say some digits please, {self._check_index(i)}."}]}

    def reward(self, example: dict, reply: str) -> float:
        return sum(ch.isdigit() for ch in reply) / len(reply) if reply else 0.0


def main() -> None:
    torch.set_num_threads(1)
    info, _ = init_distributed("cpu")
    tok = Tokenizer.train([TEXT], vocab_size=300, native=False)
    torch.manual_seed(0)
    model = GPT(GPTConfig(sequence_len=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_kv_head=2,
                          n_embd=64)).eval()
    rl = GRPOConfig(eval_problems=7, pass_k=4, max_new_tokens=8, eval_temperature=1.0, top_k=0, max_rows=8)
    result = evaluate_policy(Engine(model, tok, tool=None), Digits(), rl, seed=3, rank=info.rank,
                             world_size=info.world_size)
    if info.is_main:
        print(json.dumps(result), flush=True)
    close_distributed(0)


if __name__ == "__main__":
    main()
