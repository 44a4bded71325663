"""Pretraining corpora: one split of a source as an ordered list of independently readable chunks.

Built on the registry (data/sources.py) and the one download path (data/download.py); this
module imports both, and neither imports it, so the registry never depends on the downloader.
"""

from __future__ import annotations

import functools
import gzip
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from picochat.common.errors import UserError
from picochat.data import synthetic
from picochat.data.download import fetch_split
from picochat.data.sources import SPLITS, Source, get_source, local_folders, pretrain_sources


class Corpus(Protocol):
    """One split of a pretraining source, as an ordered list of independently readable chunks."""

    name: str
    split: str

    def num_chunks(self) -> int: ...

    def chunk(self, index: int) -> list[str]: ...


@dataclass
class SyntheticCorpus:
    name: str
    split: str

    def num_chunks(self) -> int:
        return synthetic.NUM_CHUNKS[self.split]

    def chunk(self, index: int) -> list[str]:
        return synthetic.chunk(self.split, index)


def cut_passages(book: str, max_chars: int = 1000) -> list[str]:
    """Cut a book into passages of at most `max_chars`, at paragraph (else sentence) boundaries.

    Hard line wraps inside a paragraph are undone, so the model sees prose, not 70-column lines.
    """
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", book)]
    pieces: list[str] = []
    for p in paragraphs:
        if not p:
            continue
        while len(p) > max_chars:  # an overlong paragraph: cut after the last sentence end that fits
            cut = max(p.rfind(". ", 0, max_chars), p.rfind("? ", 0, max_chars), p.rfind("! ", 0, max_chars))
            cut = cut + 1 if cut > max_chars // 4 else max_chars
            pieces.append(p[:cut].strip())
            p = p[cut:].strip()
        pieces.append(p)
    docs, cur = [], ""
    for piece in pieces:
        if cur and len(cur) + 2 + len(piece) > max_chars:
            docs.append(cur)
            cur = piece
        else:
            cur = f"{cur}\n\n{piece}" if cur else piece
    if cur:
        docs.append(cur)
    return docs


@functools.lru_cache(maxsize=4)
def _gutenberg_docs(path: str) -> tuple[str, ...]:
    docs: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            docs.extend(cut_passages(json.loads(line)["text"]))
    # books arrive one after another; shuffle passages once (fixed seed) so batches mix books
    random.Random(0).shuffle(docs)
    return tuple(docs)


@dataclass
class ListCorpus:
    """A corpus held in memory as one list of documents, cut into chunks of `per_chunk`."""

    name: str
    split: str
    docs: tuple[str, ...]
    per_chunk: int = 64

    def num_chunks(self) -> int:
        return -(-len(self.docs) // self.per_chunk)

    def chunk(self, index: int) -> list[str]:
        return list(self.docs[index * self.per_chunk:(index + 1) * self.per_chunk])


@dataclass
class ParquetCorpus:
    """Parquet shards read one row group at a time (a row group is one chunk)."""

    name: str
    split: str
    paths: list[Path]
    column: str = "text"
    _groups: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import pyarrow.parquet as pq

        for i, path in enumerate(self.paths):
            try:
                meta = pq.ParquetFile(path)
            except Exception as e:  # pyarrow raises several types for a damaged file
                raise UserError(f"{path} is not a readable parquet file ({e}); delete it and run "
                                f"`picochat data download {self.name}` again") from None
            if self.column not in meta.schema_arrow.names:
                raise UserError(f"{path} has no text column '{self.column}' (its columns: "
                                f"{', '.join(meta.schema_arrow.names)}); it is not a {self.name} shard")
            self._groups.extend((i, g) for g in range(meta.num_row_groups))

    def num_chunks(self) -> int:
        return len(self._groups)

    def chunk(self, index: int) -> list[str]:
        import pyarrow.parquet as pq

        file_idx, group = self._groups[index]
        table = pq.ParquetFile(self.paths[file_idx]).read_row_group(group, columns=[self.column])
        return table.column(self.column).to_pylist()


def _sharded_corpus(src: Source, split: str, home: str, mirror: str) -> ParquetCorpus:
    """A sharded parquet source read from the first folder that has its shards; the last shard of
    the source (not of the folder) is the validation split, so a partial download never turns a
    training shard into validation data."""
    folders = local_folders(src, home, mirror)
    val_file = src.shard_file(src.num_shards - 1)
    for folder in folders:
        shards = sorted(p for p in folder.glob("shard_?????.parquet") if src.is_shard(p.name)) \
            if folder.is_dir() else []
        if not shards:
            continue
        train = [p for p in shards if p.name != val_file]
        paths = train if split == "train" else [p for p in shards if p.name == val_file]
        if paths:
            return ParquetCorpus(src.name, split, paths, src.text_column)
    what = "training shards" if split == "train" else f"the validation shard {val_file}"
    raise UserError(f"no {src.name} {what} found in {' or '.join(map(str, folders))}; run "
                    f"`picochat data download {src.name} --shards 0-7` (it also fetches the validation shard)")


def open_corpus(source: str, split: str = "train", *, home: str = "", mirror: str = "") -> Corpus:
    """The chunked corpus of one split of a pretraining source (see `Corpus`)."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; use 'train' or 'val'")
    src = get_source(source)
    if src.kind != "pretrain":
        raise UserError(f"'{source}' is a {src.kind} dataset, not pretraining text; use one of "
                        f"{', '.join(pretrain_sources())}")
    if source == "synthetic":
        return SyntheticCorpus(source, split)
    if src.num_shards:
        return _sharded_corpus(src, split, home, mirror)
    [path] = fetch_split(source, split, home=home, mirror=mirror)
    return ListCorpus(source, split, _gutenberg_docs(str(path)))


def iter_documents(source: str, split: str = "train", *, home: str = "", mirror: str = "") -> Iterator[str]:
    """Every document of one split of a source, in the loader's order (one pass)."""
    corpus = open_corpus(source, split, home=home, mirror=mirror)  # fails here, not at first next()
    return (doc for i in range(corpus.num_chunks()) for doc in corpus.chunk(i))
