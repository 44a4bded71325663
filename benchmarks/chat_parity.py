"""Categorical chat-eval parity with nanochat: same letter picks, example by example.

Runs nanochat's own `run_categorical_eval` (scripts/chat_eval.py, imported from --nanochat DIR /
NANOCHAT_DIR) and picochat's `eval/chat.py` on the same model, tokenizer and conversations (the
first N examples of MMLU and ARC from the mirror, rendered by picochat's chat format), records
every letter each side hands to `task.evaluate`, and prints how many picks agree, the two
accuracies, and the CPU time of each (one pass each, same batch size, one torch thread: on a shared
machine wall time mostly measures the neighbours). The model is a small
random GPT with weights scaled up so its letter logits are not flat; parity of the scoring code
does not need a trained model.

    python benchmarks/chat_parity.py --nanochat ../nanochat --mirror ../shared/data -n 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch


class Recorder:
    """A task view that records (index, letter) for every evaluate call."""

    def __init__(self, task, n: int):
        self.task, self.n, self.picks = task, n, {}
        self.eval_type, self.name = task.eval_type, task.name

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {**self.task[i], "_index": i}

    def evaluate(self, example: dict, letter: str) -> bool:
        self.picks[example["_index"]] = letter
        return self.task.evaluate(example, letter)


class NanochatTokenizer:
    """nanochat's tokenizer interface over ours (the prompt is the conversation without its reply)."""

    def __init__(self, tok):
        self.tok = tok

    def render_for_completion(self, conversation: dict) -> list[int]:
        from picochat.tokenizer.chat import prompt_ids

        return prompt_ids(self.tok, conversation)

    def get_bos_token_id(self) -> int:
        return self.tok.bos_id

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)


class NanochatModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_device(self) -> torch.device:
        return self.model.device

    def forward(self, idx):
        return self.model(idx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanochat", default=os.environ.get("NANOCHAT_DIR", ""))
    ap.add_argument("--mirror", default=os.environ.get("PICOCHAT_MIRROR", ""))
    ap.add_argument("-n", type=int, default=200, help="examples per task")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.nanochat:
        sys.exit("give --nanochat DIR (a checkout of karpathy/nanochat) or set NANOCHAT_DIR")
    sys.path.insert(0, args.nanochat)
    from scripts.chat_eval import run_categorical_eval

    from picochat.data.corpus import iter_documents
    from picochat.eval import chat
    from picochat.model.gpt import GPT, GPTConfig
    from picochat.tasks.registry import make_task
    from picochat.tokenizer.tokenizer import Tokenizer

    texts = []
    for doc in iter_documents("gutenberg", "val", mirror=args.mirror):
        texts.append(doc)
        if sum(map(len, texts)) > 100_000:
            break
    tok = Tokenizer.train(texts, vocab_size=512)
    torch.manual_seed(0)
    model = GPT(GPTConfig(sequence_len=2048, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_kv_head=2,
                          n_embd=64)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    print(f"{'task':<15} {'n':>5} {'same picks':>11} {'nanochat acc':>13} {'picochat acc':>13} "
          f"{'nanochat cpu s':>15} {'picochat cpu s':>15} {'ratio':>6}")
    for spec in ("mmlu:test", "arc_easy:test", "arc_challenge:test"):
        task = make_task(spec, mirror=args.mirror)
        n = min(args.n, len(task))
        ref, ours = Recorder(task, n), Recorder(task, n)
        t0 = time.process_time()
        ref_acc = run_categorical_eval(ref, NanochatTokenizer(tok), NanochatModel(model), args.batch_size)
        t1 = time.process_time()
        r = chat.evaluate_categorical(model, tok, ours, list(range(n)), batch_size=args.batch_size)
        t2 = time.process_time()
        same = sum(ref.picks[i] == ours.picks[i] for i in range(n))
        print(f"{task.name:<15} {n:>5} {same:>11} {ref_acc:>13.4f} {r.accuracy:>13.4f} "
              f"{t1 - t0:>15.2f} {t2 - t1:>15.2f} {(t2 - t1) / (t1 - t0):>6.2f}")


if __name__ == "__main__":
    main()
