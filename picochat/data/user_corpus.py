"""The user's own text as a pretraining corpus: `--data PATH` (a file, a folder or a glob).

Formats, by file name:
- `.txt`: UTF-8 text. A blank line (empty or whitespace only) ends a document, so put one
  between documents (a paragraph is a document if paragraphs are separated by blank lines). A
  document that grows past `MAX_TXT_DOC_CHARS` ends at the next line break anyway, so a file
  with no blank lines still streams as documents of bounded size.
- `.jsonl`, `.jsonl.gz`: one JSON object per line; the document is the string in field
  `--text-field` (default "text"). Blank lines and empty strings are skipped.
- `.parquet`: the string column `--text-field`.

A folder is read recursively; a folder or a glob takes the files with those endings (names
starting with '.' are skipped, other files are listed in a note) in sorted path order, so every
rank and every run sees the same order.

Chunks (what the loader shards across ranks and its resume cursor points into, see
data/sources.py), each re-readable on its own without rescanning the file:
- a plain file (.txt, .jsonl) is cut into 1 MiB byte ranges; a chunk holds the lines that
  *start* inside its range, so it is found by seeking, with no index (data/line_chunks.py). A
  .txt document never spans two chunks (the chunk boundary also ends a document);
- a .jsonl.gz file has no byte offsets to seek to, so its chunks are ranges of *compressed*
  input (~256 KiB): the lines whose first byte the decompressor produced from that range.
  Reading goes forward from the last chunk read (a rank's chunks come in increasing order),
  and restarts from the top only to go back (a resume, a new epoch);
- a .parquet file: one chunk per row group.
Memory holds one chunk at a time (plus, per file, its size or row-group count).

Validation split: `--val-data PATH` names it explicitly (then every document of --data trains);
otherwise one document in `HOLDOUT_EVERY` (100) is held out by a hash of its text: blake2b of
the UTF-8 text, as an integer, mod 100 == 0. The rule needs no state and no second pass, keeps
identical documents on the same side, and is the same in the tokenizer trainer, base training
and `eval bpb`.

Bad input is a UserError naming the file (and line, row or byte offset). Eagerly, before any
training: the path must match files, every extension must be known, and the first chunk of
every .txt/.jsonl/.jsonl.gz file is read and checked (so a wrong --text-field, a non-JSON file
or a non-UTF-8 file fails at once), a parquet file's schema must have a string column
--text-field (and its row count is read), and each split must hold at least one document. A
bad line further into a file fails when the stream reaches it, with its file and line.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import re
import threading
from bisect import bisect_right
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from picochat.common.errors import UserError
from picochat.common.log import print0
from picochat.data import line_chunks as lc
from picochat.data.line_chunks import GzipLines, Span, plain_chunk

MAX_TXT_DOC_CHARS = 4000         # a .txt document without a blank line is cut at a line break past this
HOLDOUT_EVERY = 100              # 1 in 100 documents (by text hash) is the validation split
SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
SPLITS = ("train", "val")


def file_kind(path: Path) -> str | None:
    """'txt', 'jsonl', 'jsonl.gz' or 'parquet' from the file name; None for anything else."""
    name = path.name.lower()
    return next((s[1:] for s in (".jsonl.gz", ".jsonl", ".txt", ".parquet") if name.endswith(s)), None)


def held_out(text: str) -> bool:
    """True for the documents of the hash-held-out validation split (see the module docstring)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HOLDOUT_EVERY == 0


# ---------------------------------------------------------------------------- finding files


def _walk(folder: Path) -> list[Path]:
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return sorted(out)


def resolve_files(spec: str, *, flag: str = "--data", log=print0) -> list[Path]:
    """The data files a path spec names: a file, a folder (recursive) or a glob, sorted."""
    if not spec.strip():
        raise UserError(f"{flag} is empty; give a file, a folder or a glob of .txt/.jsonl/.jsonl.gz/.parquet files")
    path = Path(spec).expanduser()
    if path.is_file():
        if file_kind(path) is None:
            raise UserError(f"{flag} {path} has an unsupported extension; use {', '.join(SUFFIXES)}")
        return [path]
    if path.is_dir():
        found, where = _walk(path), f"folder {path}"
    elif glob.has_magic(spec):
        found = sorted(p for p in map(Path, glob.glob(os.path.expanduser(spec), recursive=True)) if p.is_file())
        where = f"glob '{spec}'"
        if not found:
            raise UserError(f"{flag} '{spec}' matches no files; check the pattern (quote it so the shell "
                            "does not expand it)")
    else:
        raise UserError(f"{flag} {path} does not exist; give a file, a folder or a glob")
    files = [p for p in found if file_kind(p) is not None]
    others = [p for p in found if file_kind(p) is None]
    if not files:
        exts = sorted({p.suffix or p.name for p in others})
        what = f"only files ending in {', '.join(exts)}" if others else "no files"
        raise UserError(f"{flag} {where} has {what}; the data files must end in {', '.join(SUFFIXES)}")
    if others:
        log(f"  note: {flag} {where}: ignoring {len(others)} files with other extensions "
            f"(e.g. {others[0]})")
    return files


# ---------------------------------------------------------------------------- lines -> documents


def _decode(span: Span) -> str:
    try:
        text = span.data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(span, e.start) from None
    return text[1:] if span.offset == 0 and text.startswith("\ufeff") else text  # a byte-order mark


def _not_utf8(span: Span, pos: int) -> UserError:
    return UserError(f"{span.where(pos)} is not UTF-8 text (byte offset {span.offset + pos}: "
                     f"{span.data[pos:pos + 4]!r}); re-encode the file as UTF-8")


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _jsonl_docs(span: Span, field: str) -> list[str]:
    docs = []
    pos = 0
    for line in span.data.split(b"\n"):
        here, pos = pos, pos + len(line) + 1
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except UnicodeDecodeError as e:
            raise _not_utf8(span, here + e.start) from None
        except (ValueError, RecursionError) as e:  # RecursionError: nested thousands of levels deep
            raise UserError(f"{span.where(here)} is not valid JSON ({getattr(e, 'msg', e)}); each line must be "
                            "one JSON object") from None
        if not isinstance(obj, dict):
            raise UserError(f"{span.where(here)} is {_json_type(obj)}, not a JSON object with a '{field}' field")
        if field not in obj:
            keys = ", ".join(list(obj)[:8]) or "none"
            raise UserError(f"{span.where(here)} has no '{field}' field (its fields: {keys}); choose the text "
                            "field with --text-field")
        value = obj[field]
        if not isinstance(value, str):
            raise UserError(f"{span.where(here)}: field '{field}' is {_json_type(value)}, not a string")
        if value:
            docs.append(value)
    return docs


_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")  # a line end followed by whitespace-only lines


def _txt_docs(span: Span) -> list[str]:
    """Blank-line-separated blocks; a block longer than MAX_TXT_DOC_CHARS is cut at line breaks."""
    text = "\n" + _decode(span).replace("\r\n", "\n") + "\n"  # so blank lines at either end split too
    docs = []
    for block in _BLANK_LINES.split(text):
        block = block.strip("\n")
        if len(block) <= MAX_TXT_DOC_CHARS:
            if block:
                docs.append(block)
            continue
        piece: list[str] = []
        size = 0
        for line in block.split("\n"):
            if piece and size + len(line) > MAX_TXT_DOC_CHARS:
                docs.append("\n".join(piece))
                piece, size = [], 0
            piece.append(line)
            size += len(line) + 1
        docs.append("\n".join(piece))
    return docs


def _parquet_docs(path: Path, group: int, field: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        values = pf.read_row_group(group, columns=[field]).column(field).to_pylist()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} row group {group}: column '{field}' holds bytes that are not UTF-8 ({e.reason}); "
                        "re-write the file with UTF-8 text") from None
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path} row group {group} cannot be read ({e}); re-create the file") from None
    for i, v in enumerate(values):
        if not isinstance(v, str):
            row = sum(pf.metadata.row_group(g).num_rows for g in range(group)) + i
            raise UserError(f"{path} row {row}: column '{field}' is {'null' if v is None else type(v).__name__}, "
                            "not a string")
    return [v for v in values if v]


# ---------------------------------------------------------------------------- files -> chunks


class DataFile:
    """One file of the user's data: how many chunks it has and how to read one."""

    def __init__(self, path: Path, field: str):
        self.path, self.field, self.kind = path, field, file_kind(path)
        try:
            self.size = path.stat().st_size
        except OSError as e:
            raise UserError(f"cannot read {path} ({e.strerror or e})") from None
        self.gzip = GzipLines(path) if self.kind == "jsonl.gz" else None
        if self.kind == "parquet":
            self.num_chunks = self._check_parquet()
        elif self.kind == "jsonl.gz":
            self.num_chunks = -(-self.size // (lc.GZIP_BLOCK * lc.GZIP_BLOCKS_PER_CHUNK))
        else:
            self.num_chunks = -(-self.size // lc.CHUNK_BYTES)

    def _check_parquet(self) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
            schema = pf.schema_arrow
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise UserError(f"{self.path} is not a readable parquet file ({e})") from None
        if self.field not in schema.names:
            raise UserError(f"{self.path} has no column '{self.field}' (its columns: {', '.join(schema.names)}); "
                            "choose the text column with --text-field")
        kind = schema.field(self.field).type
        if pa.types.is_dictionary(kind):  # e.g. a pandas categorical column
            kind = kind.value_type
        is_view = getattr(pa.types, "is_string_view", lambda t: False)  # pyarrow >= 16
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)):
            raise UserError(f"{self.path}: column '{self.field}' is {kind}, not a string column; choose the "
                            "text column with --text-field")
        self.num_rows = pf.metadata.num_rows
        return pf.num_row_groups

    def docs(self, k: int) -> list[str]:
        """The documents of this file's chunk k (all of them; the split is applied by the corpus)."""
        try:
            return self._docs(k)
        except OSError as e:  # unreadable, or moved/deleted while training
            raise UserError(f"cannot read {self.path} ({e.strerror or e}); check that the file is still there "
                            "and readable") from None

    def _docs(self, k: int) -> list[str]:
        if self.kind == "parquet":
            return _parquet_docs(self.path, k, self.field)
        if self.gzip is not None:
            return _jsonl_docs(self.gzip.chunk(k), self.field)
        span = plain_chunk(self.path, k * lc.CHUNK_BYTES, (k + 1) * lc.CHUNK_BYTES)
        return _txt_docs(span) if self.kind == "txt" else _jsonl_docs(span, self.field)

    def fork(self) -> DataFile:
        """The same file with its own gzip reader (see UserData.corpus)."""
        other = copy.copy(self)
        other.gzip = GzipLines(self.path) if self.gzip is not None else None
        return other

    def has_text(self) -> bool:
        """Reads chunks until one holds a document (chunk 0 for any file with text at its top). A
        parquet file is judged by its row count: its schema is already checked, and reading a row
        group of each of a thousand large shards would take minutes."""
        if self.kind == "parquet":
            return self.num_rows > 0
        try:
            return any(self.docs(k) for k in range(self.num_chunks))
        finally:
            if self.gzip is not None:
                self.gzip.close()  # checking thousands of files must not leave thousands open


class UserData:
    """The files a --data spec names, checked (see the module docstring), as one list of chunks."""

    def __init__(self, spec: str, text_field: str = "text", *, flag: str = "--data", log=print0,
                 exclude: frozenset[Path] = frozenset()):
        if not text_field:
            raise UserError("--text-field is empty; name the JSON field or parquet column that holds the text")
        self.spec, self.flag = spec, flag
        paths = resolve_files(spec, flag=flag, log=log)
        kept = [p for p in paths if p.resolve() not in exclude]
        if len(kept) < len(paths):  # e.g. --data corpus/ --val-data corpus/val.jsonl: never train on val
            if not kept:
                raise UserError(f"every file of {flag} '{spec}' is also in --val-data; give training text apart "
                                "from the held-out text")
            log(f"  note: {flag}: leaving out {len(paths) - len(kept)} files that are --val-data")
        files = [DataFile(p, text_field) for p in kept]
        empty = [f for f in files if not f.has_text()]
        if len(empty) == len(files):
            what = f"file {files[0].path} has" if len(files) == 1 else f"{len(files)} files of '{spec}' have"
            raise UserError(f"{flag}: the {what} no text; give a file with at least one document")
        if empty:
            log(f"  note: {flag}: skipping {len(empty)} files with no text (e.g. {empty[0].path})")
        self.files = [f for f in files if f not in empty]
        self._last_file = 0
        self.ends: list[int] = []
        for f in self.files:
            self.ends.append((self.ends[-1] if self.ends else 0) + f.num_chunks)
        listing = "\n".join(f"{f.path.resolve()}\t{f.size}" for f in self.files)
        self.fingerprint = hashlib.blake2b(listing.encode(), digest_size=6).hexdigest()

    def num_chunks(self) -> int:
        return self.ends[-1]

    def docs(self, index: int) -> list[str]:
        if not 0 <= index < self.num_chunks():
            raise IndexError(f"chunk {index} is out of range for {self.num_chunks()} chunks")
        i = bisect_right(self.ends, index)
        last, self._last_file = self._last_file, i
        if last != i and self.files[last].gzip is not None:
            # a stream moves through the files in order: close the gzip reader it left, so that a
            # corpus of thousands of .jsonl.gz files does not hold thousands of open files
            self.files[last].gzip.close()
        return self.files[i].docs(index - (self.ends[i - 1] if i else 0))

    def corpus(self, split: str, *, holdout: bool) -> UserCorpus:
        """One split as a Corpus. Each corpus gets its own gzip readers: the train stream and a val
        pass interleave, and on one shared forward reader each switch would restart the file."""
        view = copy.copy(self)
        view.files = [f.fork() for f in self.files]
        return UserCorpus(view, split, holdout)


class UserCorpus:
    """One split of UserData as a Corpus (data/sources.py): the name carries the path and a
    fingerprint of the file list and sizes, so a resume cursor is refused on changed data.

    Read-ahead: the loader tokenizes a chunk right after reading it, on the same thread, so
    reading and parsing would idle the tokenizer threads. Once two calls show the stride (a
    rank reads chunks r, r+W, r+2W, ...), the next chunk is read on a background thread while
    the current one is tokenized (file reads, gzip and tokenization release the GIL). A wrong
    guess costs one wasted read, never a wrong chunk; a read error surfaces when its chunk is
    asked for."""

    def __init__(self, data: UserData, split: str, holdout: bool):
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; use 'train' or 'val'")
        self.data, self.split, self.holdout = data, split, holdout
        self.name = f"data:{absolute_spec(data.spec)}@{data.fingerprint}"
        self._prev: int | None = None
        self._ahead: tuple[int, Future] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def num_chunks(self) -> int:
        return self.data.num_chunks()

    def _read(self, index: int) -> list[str]:
        docs = self.data.docs(index)
        if not self.holdout:
            return docs
        want_val = self.split == "val"
        return [d for d in docs if held_out(d) == want_val]

    def chunk(self, index: int) -> list[str]:
        with self._lock:
            ahead, self._ahead = self._ahead, None
            step = index - self._prev if self._prev is not None else 0
            self._prev = index
            if 0 < step and index + step < self.num_chunks():
                self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="picochat-read-ahead")
                self._ahead = (index + step, self._pool.submit(self._read, index + step))
        return ahead[1].result() if ahead is not None and ahead[0] == index else self._read(index)

    def documents(self) -> Iterator[str]:
        return (doc for i in range(self.num_chunks()) for doc in self.chunk(i))

    def check_not_empty(self) -> None:
        """A UserError if this split has no document (scans only until it finds one)."""
        if next(iter(self.documents()), None) is not None:
            return
        if self.holdout and self.split == "val":
            raise UserError(f"the validation split of --data '{self.data.spec}' is empty: 1 in {HOLDOUT_EVERY} "
                            "documents is held out by a hash of its text and none was picked (too few "
                            "documents); pass held-out text with --val-data")
        raise UserError(f"the {self.split} split of {self.data.flag} '{self.data.spec}' has no documents")


def _check_flags(data: str, text_field: str, val_data: str) -> None:
    """--val-data and --text-field describe --data; given without it they would be silently ignored."""
    if not data and val_data:
        raise UserError("--val-data is held-out text for --data; pass --data too (a named --source has its "
                        "own validation split)")
    if not data and text_field != "text":
        raise UserError("--text-field names the text of --data files; pass --data too")


def _val_paths(val_data: str) -> frozenset[Path]:
    """The resolved files of --val-data (left out of --data when they are also in it)."""
    if not val_data:
        return frozenset()
    return frozenset(p.resolve() for p in resolve_files(val_data, flag="--val-data", log=lambda *a: None))


def open_text_corpora(source: str, *, data: str = "", text_field: str = "text", val_data: str = "",
                      home: str = "", mirror: str = "", log=print0) -> dict:
    """{"train": corpus, "val": corpus} of the pretraining text: the user's files when `data` is set
    (opened once for both splits, each checked to hold documents), else the named source."""
    _check_flags(data, text_field, val_data)
    if not data:
        from picochat.data.corpus import open_corpus

        return {split: open_corpus(source, split, home=home, mirror=mirror) for split in SPLITS}
    train_data = UserData(data, text_field, log=log, exclude=_val_paths(val_data))
    corpora = {"train": train_data.corpus("train", holdout=not val_data),
               "val": UserData(val_data, text_field, flag="--val-data", log=log).corpus("val", holdout=False)
               if val_data else train_data.corpus("val", holdout=True)}
    for corpus in corpora.values():
        corpus.check_not_empty()
    return corpora


def open_text_corpus(source: str, split: str, *, data: str = "", text_field: str = "text", val_data: str = "",
                     home: str = "", mirror: str = "", log=print0):
    """One split of the pretraining text: the user's files when `data` is set, else the named source."""
    _check_flags(data, text_field, val_data)
    if data:
        if split == "val" and val_data:
            corpus = UserData(val_data, text_field, flag="--val-data", log=log).corpus("val", holdout=False)
        else:
            corpus = UserData(data, text_field, log=log, exclude=_val_paths(val_data)).corpus(
                split, holdout=not val_data)
        corpus.check_not_empty()
        return corpus
    from picochat.data.corpus import open_corpus

    return open_corpus(source, split, home=home, mirror=mirror)


def iter_text(source: str, split: str, **kw) -> Iterator[str]:
    """Every document of one split, in the loader's order (see `open_text_corpus`)."""
    corpus = open_text_corpus(source, split, **kw)  # fails here, not at the first next()
    return (doc for i in range(corpus.num_chunks()) for doc in corpus.chunk(i))


def absolute_spec(spec: str) -> str:
    """A --data spec as an absolute path (or absolute glob), so a run's config names it from anywhere."""
    return os.path.abspath(os.path.expanduser(spec)) if spec else spec
