"""Format checks for downloaded files: is this file what its source says it is?

Every file a source registers carries one of these declarations, and `download.py` runs its check
on every file it hands out (freshly downloaded, already on disk, or in a mirror folder), so a
renamed column upstream, a truncated transfer or an HTML error page saved under a data file's
name is caught at the door with one sentence, not deep inside a training stage.

- `Parquet`: required columns with their Arrow types (read from the footer only, so the check is
  cheap on a 100 MB shard); several accepted layouts when a publisher has changed one.
- `Jsonl`: the first rows parse and carry the required fields (gzip read transparently).
- `Lines`: a plain word list (one token a line; CRLF allowed).
- `BundleZip`: a zip archive under one top folder, with the files its index (a YAML manifest)
  names, and no member that could escape the folder it is unpacked into: absolute paths, `..`
  parts, drive letters and symlinks are refused, since the archive comes from the network.
"""

from __future__ import annotations

import gzip
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

# Expected Arrow types, as small values: "string", "int", "float", "bool", ("list", T) and
# ("struct", {field: T}) (a struct may have more fields than required).
ArrowType = Any
STRING, INT = "string", "int"


def list_of(item: ArrowType) -> ArrowType:
    return ("list", item)


def struct(**fields: ArrowType) -> ArrowType:
    return ("struct", fields)


def describe_type(expected: ArrowType) -> str:
    if isinstance(expected, str):
        return expected
    if expected[0] == "list":
        return f"list<{describe_type(expected[1])}>"
    return "struct<" + ", ".join(f"{k}: {describe_type(v)}" for k, v in expected[1].items()) + ">"


def type_matches(actual, expected: ArrowType) -> bool:
    """Whether a pyarrow DataType has the expected shape (string/large_string alike, any int width)."""
    import pyarrow as pa

    if expected == STRING:
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if expected == INT:
        return pa.types.is_integer(actual)
    if expected == "float":
        return pa.types.is_floating(actual)
    if expected == "bool":
        return pa.types.is_boolean(actual)
    kind, inner = expected
    if kind == "list":
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and type_matches(actual.value_type, inner)
    if not pa.types.is_struct(actual):
        return False
    names = [actual.field(i).name for i in range(actual.num_fields)]
    return all(k in names and type_matches(actual.field(k).type, t) for k, t in inner.items())


@dataclass(frozen=True)
class Parquet:
    """A parquet file with these columns (one dict per accepted layout, the first is the current one)."""

    layouts: tuple[dict[str, ArrowType], ...]

    def problem(self, path: Path, name: str) -> str | None:
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except Exception as e:  # pyarrow raises several types for a damaged footer
            return f"is not a readable parquet file ({type(e).__name__}: {str(e)[:120]})"
        for layout in self.layouts:
            if all(c in schema.names and type_matches(schema.field(c).type, t) for c, t in layout.items()):
                return None
        want = self.layouts[0]
        for column, expected in want.items():
            if column not in schema.names:
                return f"has no column '{column}' (its columns: {', '.join(schema.names)})"
            if not type_matches(schema.field(column).type, expected):
                return (f"has column '{column}' of type {schema.field(column).type}, "
                        f"expected {describe_type(expected)}")
        return "matches none of the accepted layouts"


@dataclass(frozen=True)
class Jsonl:
    """JSON lines (optionally gzip'd): each of the first `rows` rows is an object with `fields`
    (or, with `row_type="list"`, a JSON list)."""

    fields: tuple[str, ...] = ()
    row_type: str = "object"
    rows: int = 5

    def problem(self, path: Path, name: str) -> str | None:
        opener = gzip.open if name.endswith(".gz") else open
        seen = 0
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    want = dict if self.row_type == "object" else list
                    if not isinstance(row, want):
                        return f"line {lineno} is a JSON {type(row).__name__}, expected a JSON {self.row_type}"
                    missing = [k for k in self.fields if k not in row]
                    if missing:
                        return f"line {lineno} lacks the field(s) {', '.join(missing)}"
                    seen += 1
                    if seen >= self.rows:
                        break
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
            return f"is not readable JSON lines ({type(e).__name__}: {str(e)[:120]})"
        return None if seen else "has no rows"


@dataclass(frozen=True)
class Lines:
    """A text file whose first `rows` non-empty lines (CR stripped) each match `pattern`."""

    pattern: str
    rows: int = 50

    def problem(self, path: Path, name: str) -> str | None:
        opener = gzip.open if name.endswith(".gz") else open
        seen = 0
        try:
            with opener(path, "rt", encoding="utf-8", newline="") as f:
                for lineno, line in enumerate(f, 1):
                    word = line.rstrip("\r\n")
                    if not word:
                        continue
                    if not re.fullmatch(self.pattern, word):
                        return f"line {lineno} ({word[:40]!r}) does not match {self.pattern}"
                    seen += 1
                    if seen >= self.rows:
                        break
        except (OSError, EOFError, UnicodeDecodeError) as e:
            return f"is not readable text ({type(e).__name__}: {str(e)[:120]})"
        return None if seen else "is empty"


MAX_MEMBERS = 10_000
MAX_UNPACKED = 4 << 30  # bytes: far above the CORE bundle (~0.1 GB), far below a zip bomb


def unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be unpacked (it could land outside the target folder), or None."""
    name = info.filename
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return f"member {name!r} has an absolute or Windows path"
    if ".." in PurePosixPath(name).parts:
        return f"member {name!r} climbs out of its folder with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"member {name!r} is a symbolic link"
    return None


@dataclass(frozen=True)
class BundleZip:
    """A zip with everything under `root/`, holding `required` and every file that the YAML
    manifest `index` lists under its `list_key` entries' `uri_key`, relative to `data_dir`."""

    root: str
    required: tuple[str, ...]
    index: str
    list_key: str
    uri_key: str
    data_dir: str

    def problem(self, path: Path, name: str) -> str | None:
        try:
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
                return self._layout_problem(z, infos)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return f"is not a readable zip archive ({type(e).__name__}: {str(e)[:120]})"

    def _layout_problem(self, z: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> str | None:
        if len(infos) > MAX_MEMBERS or sum(i.file_size for i in infos) > MAX_UNPACKED:
            return f"has {len(infos)} members and {sum(i.file_size for i in infos)} unpacked bytes (too many)"
        for info in infos:
            reason = unsafe_member(info)
            if reason:
                return reason
            if not info.filename.startswith(self.root + "/"):
                return f"member {info.filename!r} is outside the top folder {self.root}/"
        names = {i.filename for i in infos}
        missing = [f for f in self.required if f"{self.root}/{f}" not in names]
        if missing:
            return f"lacks {', '.join(f'{self.root}/{m}' for m in missing)}"
        import yaml

        try:
            manifest = yaml.safe_load(z.read(f"{self.root}/{self.index}"))
            uris = [entry[self.uri_key] for entry in manifest[self.list_key]]
        except (yaml.YAMLError, KeyError, TypeError) as e:
            return f"has an unreadable {self.index} ({type(e).__name__}: {str(e)[:120]})"
        absent = sorted({u for u in uris if f"{self.root}/{self.data_dir}/{u}" not in names})
        if absent:
            return f"lacks {len(absent)} file(s) that {self.index} lists, e.g. {self.data_dir}/{absent[0]}"
        return None


Format = Parquet | Jsonl | Lines | BundleZip


def format_problem(path: Path, fmt: Format | None, name: str = "") -> str | None:
    """Why `path` is not in format `fmt` (a short clause that follows the file's name), or None.
    `name` is the file's final name when `path` is a partial download (`x.jsonl.gz.part`)."""
    return None if fmt is None else fmt.problem(Path(path), name or Path(path).name)
