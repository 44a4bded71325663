"""Verified, resumable, parallel downloads, from the dataset's home or from a mirror.

Every file is downloaded into `<file>.part` beside its destination and renamed into place only
after it has been verified (size, parquet footer, sha256 where the registry knows it) and
fsynced, the same temp + fsync + rename discipline as `common.io.atomic_write`. The `.part`
file is kept across failures so that the next attempt asks the server only for the missing
bytes (HTTP Range). Readers only ever look at final names, so nothing half-written is read.

A mirror (`--mirror` / PICOCHAT_MIRROR) is either a folder laid out like ../shared/data
(`<mirror>/<source folder>/<file>`), read in place, or a URL with the same layout.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import http.client
import os
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from picochat.common.errors import UserError
from picochat.common.paths import data_dir, mirror_location
from picochat.data.sources import Source, get_source

BLOCK = 1 << 20
TRANSIENT = (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException, urllib.error.URLError)


class _Retry(Exception):
    """A failure worth another attempt (dropped connection, 5xx, short file)."""


def parquet_ok(path: Path) -> bool:
    """Cheap completeness check: parquet starts and ends with b'PAR1' and its footer fits the file."""
    size = path.stat().st_size
    if size < 12:
        return False
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(-8, os.SEEK_END)
        footer_len, magic = struct.unpack("<I4s", f.read(8))
    return head == b"PAR1" and magic == b"PAR1" and footer_len <= size - 12


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, sha256: str | None = None) -> str | None:
    """None if `path` looks complete and correct, else a short reason."""
    if path.suffix == ".parquet" and not parquet_ok(path):
        return "its parquet footer is missing or damaged (truncated file?)"
    if sha256 and sha256_of(path) != sha256:
        return "its sha256 does not match the registry"
    return None


def _request(url: str, start: int, timeout: float):
    headers = {"User-Agent": "picochat", **({"Range": f"bytes={start}-"} if start else {})}
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # our partial file is already complete (or bigger than the file): start over
            return None
        if e.code >= 500 or e.code == 429:
            raise _Retry(f"HTTP {e.code}") from None
        raise UserError(f"{url} answered HTTP {e.code} ({e.reason}); check the shard/file name, "
                        "or the mirror (--mirror / PICOCHAT_MIRROR)") from None


def _attempt(url: str, part: Path, timeout: float, progress: Callable[[int, int], None]) -> None:
    """One HTTP request that appends to `part` from where it ends; raises _Retry if incomplete."""
    start = part.stat().st_size if part.exists() else 0
    resp = _request(url, start, timeout)
    if resp is None:
        part.unlink()
        raise _Retry("range not satisfiable")
    with resp:
        if start and resp.status != 206:  # server ignored Range: take the whole body again
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        progress(0, total or 0)
        with open(part, "r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            got = start
            while block := resp.read(BLOCK):
                f.write(block)
                got += len(block)
                progress(len(block), 0)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and got != total:
        raise _Retry(f"got {got} of {total} bytes")


def download_file(url: str, dest: Path, *, sha256: str | None = None, retries: int = 5, backoff: float = 1.0,
                  timeout: float = 60.0, progress: Callable[[int, int], None] | None = None) -> Path:
    """Download `url` to `dest`: resume, retry with exponential backoff, verify, then rename into place.

    `progress(bytes_added, total_bytes_learned)` is called as data arrives (for a progress bar).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    report = progress or (lambda n, total: None)
    seen_total = False

    def progress(added: int, total: int) -> None:  # count a file's size once, however many attempts
        nonlocal seen_total
        report(added, 0 if seen_total else total)
        seen_total = seen_total or bool(total)

    if part.exists():
        report(part.stat().st_size, 0)  # bytes already here from an earlier run
    for attempt in range(retries + 1):
        try:
            _attempt(url, part, timeout, progress)
            problem = verify(part, sha256)
            if problem is None:
                os.replace(part, dest)
                _fsync_dir(dest.parent)
                return dest
            part.unlink()  # complete but wrong: a retry must start from zero
            last = f"the downloaded file failed verification: {problem}"
        except (_Retry, *TRANSIENT) as e:
            last = str(e) or type(e).__name__
        if attempt < retries:
            time.sleep(backoff * 2 ** attempt)
    raise UserError(f"could not download {url} after {retries + 1} attempts ({last}); run the same command "
                    "again to resume, or use a mirror (--mirror / PICOCHAT_MIRROR)")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _locate(src: Source, file: str, home: str, mirror: str) -> tuple[Path | None, Path, str | None]:
    """(path in a mirror folder if there, destination in data_dir, URL to download from)."""
    mirror = mirror_location(mirror)
    dest = data_dir(home) / src.mirror_dir / file
    if mirror and "://" not in mirror:
        in_mirror = Path(mirror) / src.mirror_dir / file
        return (in_mirror if in_mirror.is_file() else None), dest, None
    if mirror:
        return None, dest, f"{mirror.rstrip('/')}/{src.mirror_dir}/{file}"
    return None, dest, src.url_for(file)


def _sha_for(src: Source, file: str) -> str | None:
    return src.files[file].sha256 if file in src.files else None


_LOCAL_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("local_only", default=False)


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within this block `fetch` finds files (mirror or earlier downloads) but never downloads:
    the speedrun's dry-run sizes what is here and falls back to documented sizes for the rest."""
    token = _LOCAL_ONLY.set(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


def fetch(name: str, file: str, *, home: str = "", mirror: str = "", retries: int = 5, backoff: float = 1.0,
          progress: Callable[[int, int], None] | None = None) -> Path:
    """A verified local path to `file` of source `name`: the mirror folder's copy, else a download.

    An earlier download that no longer verifies (truncated, damaged) is fetched again.
    """
    src = get_source(name)
    in_mirror, dest, url = _locate(src, file, home, mirror)
    if in_mirror is not None:
        return in_mirror
    sha = _sha_for(src, file)
    if dest.is_file():
        if verify(dest, sha) is None:
            return dest
        dest.unlink()  # damaged: fetch it again
    if _LOCAL_ONLY.get():
        raise UserError(f"{name}/{file} is not here (nothing is downloaded while planning)")
    if url is None:
        where = (f"is not in the mirror folder {mirror_location(mirror)}" if mirror_location(mirror)
                 else "has no public download URL")
        raise UserError(f"{name}/{file} {where}; point --mirror or PICOCHAT_MIRROR at a folder or URL "
                        f"that has {src.mirror_dir}/{file}")
    return download_file(url, dest, sha256=sha, retries=retries, backoff=backoff, progress=progress)


def parse_shards(spec: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in spec.split(","))):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise UserError(f"--shards '{spec}' is not a list of shard numbers or ranges like 0-23,40") from None
    return sorted(set(out))


class _Bar:
    """One aggregate progress bar (bytes, rate, ETA) shared by the download threads."""

    def __init__(self, enabled: bool, files: int) -> None:
        import threading

        from tqdm import tqdm

        self.lock = threading.Lock()
        self.bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
                        desc=f"{files} file(s)")

    def __call__(self, added: int, total: int) -> None:
        with self.lock:
            if total:
                self.bar.total += total
                self.bar.refresh()
            if added:
                self.bar.update(added)


def download_shards(name: str, shards: list[int], *, home: str = "", mirror: str = "", workers: int = 8,
                    retries: int = 5, backoff: float = 1.0, progress: bool = True) -> list[Path]:
    """Fetch shards of a sharded source in parallel (plus its last shard, the validation split)."""
    src = get_source(name)
    if not src.num_shards:
        raise UserError(f"'{name}' is not a sharded source; use `picochat data prepare {name}`")
    wanted = sorted(set(shards) | {src.num_shards - 1})
    files = [src.shard_file(i) for i in wanted]
    bar = _Bar(progress, len(files))
    job = lambda f: fetch(name, f, home=home, mirror=mirror, retries=retries, backoff=backoff, progress=bar)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(job, f) for f in files]
        paths, errors = [], []
        for f, fut in zip(files, futures):
            try:
                paths.append(fut.result())
            except UserError as e:
                errors.append(f"{f}: {e}")
    bar.bar.close()
    if errors:
        raise UserError(f"{len(errors)} of {len(files)} shard(s) failed; first: {errors[0]}")
    return paths
