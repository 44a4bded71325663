"""Bits per byte: the model's compression of held-out text, comparable across tokenizers.

Per-token loss depends on how text is cut into tokens (a bigger vocabulary has fewer, harder
tokens); dividing the total loss by the *bytes* of text instead of the number of tokens removes
that dependence (as in Gao et al. 2020, The Pile, arXiv:2101.00027, section 4.1).

Exactly what is counted, for each document `doc`:
- its tokens are `[bos] + tokenizer.encode(doc)` (ordinary text only, so no special token is
  ever a target; the BOS is context, never predicted);
- every one of the n = len(encode(doc)) text tokens is predicted exactly once, and the sum of
  their next-token negative log-likelihoods (nats) is the document's loss;
- a document longer than `seq_len` inputs is cut into consecutive, non-overlapping windows:
  window k feeds tokens[k*L : k*L + L] and is scored on tokens[k*L + 1 : k*L + L + 1]
  (L = seq_len). Context therefore restarts at each window (no overlap, no BOS re-inserted):
  cheaper than a sliding window and slightly pessimistic for long documents;
- its size is len(doc.encode("utf-8")) bytes.

bits per byte = total nats / (ln 2 x total bytes), summed over all documents (not a mean of
per-document ratios, which would over-weight short documents).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DocScore:
    nats: float  # summed next-token NLL over the document's text tokens
    num_bytes: int  # UTF-8 bytes of the document
    num_tokens: int  # text tokens scored (BOS excluded)

    @property
    def bpb(self) -> float:
        return self.nats / (math.log(2) * self.num_bytes) if self.num_bytes else float("nan")


def windows(ids: list[int], seq_len: int) -> list[tuple[list[int], list[int]]]:
    """(inputs, targets) pairs covering ids[1:] once: inputs ids[kL:kL+L], targets shifted by one."""
    out = []
    for start in range(0, len(ids) - 1, seq_len):
        chunk = ids[start:start + seq_len + 1]
        out.append((chunk[:-1], chunk[1:]))
    return out


@torch.no_grad()
def window_losses(model: torch.nn.Module, tokenizer, documents: list[str], *, seq_len: int,
                  device: torch.device | str = "cpu",
                  batch_size: int = 8) -> Iterator[tuple[int, list[int], list[float]]]:
    """(document index, target ids, their NLLs in nats) for every window of every document, in
    order: each document's text tokens once, as the module docstring says."""
    jobs: list[tuple[int, list[int], list[int]]] = []  # (document index, inputs, targets)
    for i, doc in enumerate(documents):
        jobs.extend((i, x, y) for x, y in windows(tokenizer.encode(doc, prepend=tokenizer.bos_id), seq_len))
    for b in range(0, len(jobs), batch_size):
        batch = jobs[b:b + batch_size]
        width = max(len(x) for _, x, _ in batch)
        inputs = torch.full((len(batch), width), tokenizer.bos_id, dtype=torch.long)
        targets = torch.full((len(batch), width), -1, dtype=torch.long)  # -1: padding, not scored
        for r, (_, x, y) in enumerate(batch):
            inputs[r, :len(x)] = torch.tensor(x)
            targets[r, :len(y)] = torch.tensor(y)
        logits = model(inputs.to(device)).float()
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.to(device).view(-1),
                              ignore_index=-1, reduction="none").view(len(batch), width)
        for r, (i, _, y) in enumerate(batch):
            yield i, y, nll[r, :len(y)].tolist()


def score_documents(model: torch.nn.Module, tokenizer, documents: list[str], *, seq_len: int,
                    device: torch.device | str = "cpu", batch_size: int = 8) -> list[DocScore]:
    """Per-document nats, bytes and token counts (see the module docstring for the exact rules)."""
    scores = [DocScore(0.0, len(d.encode("utf-8", "surrogatepass")), 0) for d in documents]
    for i, y, nll in window_losses(model, tokenizer, documents, seq_len=seq_len, device=device,
                                   batch_size=batch_size):
        scores[i].nats += sum(nll)
        scores[i].num_tokens += len(y)
    return scores


def aggregate(scores: list[DocScore]) -> float:
    total_bytes = sum(s.num_bytes for s in scores)
    if total_bytes == 0:
        raise ValueError("bits per byte needs at least one non-empty document")
    return sum(s.nats for s in scores) / (math.log(2) * total_bytes)


def bits_per_byte(model: torch.nn.Module, tokenizer, documents: list[str], *, seq_len: int,
                  device: torch.device | str = "cpu", batch_size: int = 8) -> float:
    """Total nats / (ln 2 x total UTF-8 bytes) over `documents`; see the module docstring."""
    return aggregate(score_documents(model, tokenizer, documents, seq_len=seq_len, device=device,
                                     batch_size=batch_size))
