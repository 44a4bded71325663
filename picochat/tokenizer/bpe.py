"""Byte-level BPE, the reference implementation: the spec that the native core must match.

Training (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units";
byte-level as in GPT-2, Radford et al. 2019):

1. Split each document into chunks with a regex (`SPLIT_PATTERN`), so merges never cross
   word/number/punctuation boundaries, and count the unique chunks. Merges are learned over
   the unique chunks weighted by their counts: a 60 MB corpus has only ~10^5 unique chunks.
2. Start from the chunk's UTF-8 bytes: token ids 0..255 *are* the bytes.
3. Repeat: take the most frequent adjacent pair (a, b), give it the next id (merge i -> id
   256 + i), replace it in every chunk where it occurs, and update the pair counts of only
   those chunks (incrementally, never recounting everything).

Tie-break (deterministic; the native core and the tests rely on it): the pair with the highest
count wins; among equal counts the lowest (left_id, right_id) pair wins (plain tuple order).
Pairs that occur once still count: training continues with count-1 pairs, and stops early only
when no adjacent pair is left at all (then there are fewer merges than asked for). These are
rustbpe's semantics, so on the same chunks our merges equal its merges.

Text that is not valid Unicode (lone surrogates in a Python str) is cleaned exactly the way
tiktoken's encoder cleans it before encoding: a lone surrogate becomes U+FFFD (see
`clean_text`). Training sees the same bytes that encoding will see.

Encoding (`encode_chunk`) follows tiktoken's rule, because tiktoken does our encoding: within a
chunk, repeatedly merge the adjacent pair of parts whose concatenated bytes have the lowest
rank (token id); the leftmost pair wins a tie; a chunk that is itself a token is one token.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

import regex

# GPT-4's split pattern (cl100k_base), with numbers split into runs of at most 2 digits instead
# of 3 (nanochat found that better for a 32k vocab, where number tokens are expensive).
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPLIT_PATTERN = GPT4_SPLIT_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}{1,2}")

Pair = tuple[int, int]


def clean_text(text: str) -> str:
    """Replace lone surrogates by U+FFFD, as tiktoken does; valid text is returned unchanged.

    (A high+low surrogate pair written as two code points becomes the one character it encodes,
    also as in tiktoken.)
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def count_chunks(texts: Iterable[str], pattern: str = SPLIT_PATTERN) -> Counter[bytes]:
    """Split every text with the pattern and count the unique chunks (as UTF-8 bytes)."""
    compiled = regex.compile(pattern)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(compiled.findall(clean_text(text)))
    return Counter({chunk.encode("utf-8"): n for chunk, n in counts.items()})


def merge_word(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair` in `ids`, scanning left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_from_counts(chunk_counts: dict[bytes, int], num_merges: int) -> list[Pair]:
    """Learn up to `num_merges` merges over unique chunks weighted by count. Returns the pairs;
    merge i created token id 256 + i."""
    words = [list(chunk) for chunk in chunk_counts]
    counts = list(chunk_counts.values())
    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> the words it may occur in
    for w, ids in enumerate(words):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += counts[w]
            where[pair].add(w)
    # A max-heap on (count, then lowest pair) via negated counts. Entries go stale when a
    # count drops; a stale entry is re-pushed with its current count when it reaches the top.
    # A count only ever *rises* in the merge step that creates the pair (a new pair always
    # contains the new id), and then it is pushed fresh, so the top entry, once current, is
    # the true best pair.
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        current = pair_counts.get(pair, 0)
        if current != -neg:
            if current > 0:
                heapq.heappush(heap, (-current, pair))
            continue
        new_id = 256 + len(merges)
        merges.append(pair)
        delta: dict[Pair, int] = defaultdict(int)
        for w in sorted(where.pop(pair)):
            old = words[w]
            new = merge_word(old, pair, new_id)
            if len(new) == len(old):
                continue  # stale position: the pair is no longer in this word
            for p in zip(old, old[1:]):
                delta[p] -= counts[w]
            for p in zip(new, new[1:]):
                delta[p] += counts[w]
                if new_id in p:
                    where[p].add(w)
            words[w] = new
        for p, d in delta.items():
            if d == 0:
                continue
            pair_counts[p] += d
            if pair_counts[p] == 0:
                del pair_counts[p]
            elif d > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    return merges


def train(texts: Iterable[str], num_merges: int, pattern: str = SPLIT_PATTERN) -> list[Pair]:
    """Count the chunks of `texts`, then learn up to `num_merges` merges (see the module doc).

    Known answer (the example from Wikipedia's "Byte pair encoding" page; a=97 b=98 c=99 d=100):
    "aa" is the most frequent pair; then (97, 98) "ab" beats (256, 97) "aa"+"a" at count 2 by
    the lower pair; once every count is 1 the lowest pair keeps winning, until one token is left.

    >>> train(["aaabdaaabac"], 10)
    [(97, 97), (97, 98), (256, 257), (97, 99), (100, 258), (258, 260), (261, 259)]
    """
    return train_from_counts(count_chunks(texts, pattern), num_merges)


def vocab_bytes(merges: list[Pair]) -> list[bytes]:
    """The bytes of every token id: 0..255 are single bytes, id 256 + i = its merge's pair."""
    vocab = [bytes([b]) for b in range(256)]
    for left, right in merges:
        vocab.append(vocab[left] + vocab[right])
    return vocab


def encode_chunk(chunk: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Encode one chunk by tiktoken's rule (see the module doc). `ranks` maps bytes -> id."""
    if chunk in ranks:
        return [ranks[chunk]]
    parts = [chunk[i:i + 1] for i in range(len(chunk))]
    while len(parts) > 1:
        best, best_rank = -1, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return [ranks[p] for p in parts]


def encode(text: str, merges: list[Pair], pattern: str = SPLIT_PATTERN) -> list[int]:
    """Encode ordinary text (no special tokens) with the reference rule; slow, for tests.

    Where two merges produced the same bytes, the earlier id is the token (tiktoken keeps one
    rank per byte string)."""
    ranks: dict[bytes, int] = {}
    for i, b in enumerate(vocab_bytes(merges)):
        ranks.setdefault(b, i)
    ids: list[int] = []
    for chunk in regex.findall(pattern, clean_text(text)):
        ids.extend(encode_chunk(chunk.encode("utf-8"), ranks))
    return ids
