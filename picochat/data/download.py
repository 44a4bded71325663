"""Verified, resumable, parallel downloads, from the dataset's home or from a mirror.

Every file is downloaded into `<file>.part` beside its destination and renamed into place only
after it has been verified (size, parquet footer, sha256 where the registry knows it) and
fsynced, the same temp + fsync + rename discipline as `common.io.atomic_write`. The `.part`
file is kept across failures so that the next attempt asks the server only for the missing
bytes (HTTP Range). Readers only ever look at final names, so nothing half-written is read.

A mirror (`--mirror` / PICOCHAT_MIRROR) is either a folder laid out like ../shared/data
(`<mirror>/<source folder>/<file>`), read in place, or a URL with the same layout. Without a
mirror, files come from their registered URLs; PICOCHAT_URL_PREFIX=P fetches `https://HOST/PATH`
from `P/HOST/PATH` instead (a caching proxy, or the local fake hub of the tests).

Every file handed out passes its source's format check (formats.py) as well: a copy in a mirror
folder is checked in place (and never deleted), a downloaded one is fetched again if it fails.
A task asks for a *split* (`fetch_split`): the first of its alternative file sets already here,
else the first one that a mirror or URL serves. Archives (the CORE bundle) are unpacked by
`fetch_unpacked`, member by member into a temporary folder renamed into place.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import http.client
import os
import shutil
import socket
import struct
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from picochat.common.errors import UserError
from picochat.common.paths import data_dir, mirror_location
from picochat.data.formats import Format, format_problem, unsafe_member
from picochat.data.sources import Source, get_source

BLOCK = 1 << 20
TRANSIENT = (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException, urllib.error.URLError)


class _Retry(Exception):
    """A failure worth another attempt (dropped connection, 5xx, short file)."""


class Unavailable(UserError):
    """This place does not have the file (no URL, not in the mirror folder, HTTP 404/410): a task
    split with another alternative file set tries that one next."""


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


def verify(path: Path, sha256: str | None = None, fmt: Format | None = None, name: str = "") -> str | None:
    """None if `path` looks complete and correct, else a short reason. `name`: the final file name
    when `path` is a partial download (its suffix decides the checks)."""
    name = name or path.name
    if name.endswith(".parquet") and not parquet_ok(path):
        return "its parquet footer is missing or damaged (truncated file?)"
    if sha256 and sha256_of(path) != sha256:
        return "its sha256 does not match the registry"
    problem = format_problem(path, fmt, name)
    return f"it {problem}" if problem else None


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
        if e.code in (404, 410):
            raise Unavailable(f"{url} answered HTTP {e.code} ({e.reason}): no such file there; check the "
                              "shard/file name, or the mirror (--mirror / PICOCHAT_MIRROR)") from None
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


def download_file(url: str, dest: Path, *, sha256: str | None = None, fmt: Format | None = None, retries: int = 5,
                  backoff: float = 1.0, timeout: float = 60.0,
                  progress: Callable[[int, int], None] | None = None) -> Path:
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
            problem = verify(part, sha256, name=dest.name)
            wrong_format = format_problem(part, fmt, dest.name) if problem is None else None
            if wrong_format:  # complete and intact, but not the data we expect: another try cannot help
                part.unlink()
                raise UserError(f"the file downloaded from {url} {wrong_format}; nothing was saved (the "
                                "publisher may have changed its layout, or the mirror serves another file)")
            if problem is None:
                os.replace(part, dest)
                _fsync_dir(dest.parent)
                return dest
            part.unlink()  # complete but wrong: a retry must start from zero
            last = f"the downloaded file failed verification: {problem}"
        except (_Retry, *TRANSIENT) as e:
            if isinstance(getattr(e, "reason", None), socket.gaierror):  # no DNS: offline, not a blip
                raise UserError(f"could not reach {url} (host name lookup failed: {e.reason}); check the "
                                "network, or use a mirror (--mirror / PICOCHAT_MIRROR)") from None
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


def rewrite_url(url: str) -> str:
    """`https://HOST/PATH` -> `$PICOCHAT_URL_PREFIX/HOST/PATH` when that variable is set."""
    prefix = os.environ.get("PICOCHAT_URL_PREFIX", "").rstrip("/")
    if not prefix or "://" not in url:
        return url
    return f"{prefix}/{url.split('://', 1)[1]}"


def _locate(src: Source, file: str, home: str, mirror: str) -> tuple[Path | None, Path, str | None]:
    """(path in a mirror folder if there, destination in data_dir, URL to download from)."""
    mirror = mirror_location(mirror)
    dest = data_dir(home) / src.mirror_dir / file
    if mirror and "://" not in mirror:
        in_mirror = Path(mirror) / src.mirror_dir / file
        return (in_mirror if in_mirror.is_file() else None), dest, None
    if mirror:
        return None, dest, f"{mirror.rstrip('/')}/{src.mirror_dir}/{file}"
    url = src.url_for(file)
    return None, dest, rewrite_url(url) if url else None


def _sha_for(src: Source, file: str) -> str | None:
    return src.files[file].sha256 if file in src.files else None


def _checked_mirror_copy(src: Source, file: str, path: Path) -> Path:
    problem = format_problem(path, src.format_for(file))
    if problem:
        raise UserError(f"{path} (in the mirror folder) {problem}; replace it with the file {src.name} "
                        f"publishes, or remove it and run `picochat data download {src.name}` without --mirror")
    return path


def local_copy(name: str, file: str, *, home: str = "", mirror: str = "") -> Path | None:
    """`file` of source `name` if a verified copy is already here (mirror folder or data dir), else None."""
    src = get_source(name)
    in_mirror, dest, _ = _locate(src, file, home, mirror)
    if in_mirror is not None:
        return _checked_mirror_copy(src, file, in_mirror)
    if dest.is_file() and verify(dest, _sha_for(src, file), src.format_for(file)) is None:
        return dest
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `<path>.lock`, so that processes (torchrun ranks) or threads fetching the
    same file wait for one another instead of writing one .part file together (no-op without fcntl)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; run one process per machine there
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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

    An earlier download that no longer verifies (truncated, damaged, wrong format) is fetched again.
    """
    src = get_source(name)
    in_mirror, dest, url = _locate(src, file, home, mirror)
    if in_mirror is not None:
        return _checked_mirror_copy(src, file, in_mirror)
    sha, fmt = _sha_for(src, file), src.format_for(file)
    if _LOCAL_ONLY.get() and (not dest.is_file() or verify(dest, sha, fmt) is not None):
        raise Unavailable(f"{name}/{file} is not here (nothing is downloaded while planning)")
    if url is None and not dest.is_file():
        where = (f"is not in the mirror folder {mirror_location(mirror)}" if mirror_location(mirror)
                 else "has no public download URL")
        raise Unavailable(f"{name}/{file} {where}; point --mirror or PICOCHAT_MIRROR at a folder or URL "
                          f"that has {src.mirror_dir}/{file}")
    with _locked(dest):
        if dest.is_file():
            if verify(dest, sha, fmt) is None:
                return dest
            dest.unlink()  # damaged: fetch it again
        if url is None:
            raise Unavailable(f"{dest} failed its check and {name}/{file} has no download URL here; put a good "
                              f"copy there, or point --mirror at a folder or URL that has {src.mirror_dir}/{file}")
        return download_file(url, dest, sha256=sha, fmt=fmt, retries=retries, backoff=backoff, progress=progress)


def fetch_split(name: str, split: str, *, home: str = "", mirror: str = "", retries: int = 5,
                backoff: float = 1.0) -> list[Path]:
    """The files of one split of a task source: the first alternative file set already here
    (mirror folder or data dir), else the first one a mirror or URL serves (see Source.splits)."""
    src = get_source(name)
    alternatives = src.split_files(split)
    for files in alternatives:
        paths = [local_copy(name, f, home=home, mirror=mirror) for f in files]
        if all(p is not None for p in paths):
            return paths  # type: ignore[return-value]
    last: Unavailable | None = None
    for files in alternatives:
        try:
            return [fetch(name, f, home=home, mirror=mirror, retries=retries, backoff=backoff) for f in files]
        except Unavailable as e:
            last = e
    assert last is not None
    raise last


STAMP = ".unpacked-from"  # inside an unpacked folder: size and sha256 of the archive it came from


def fetch_unpacked(name: str, *, home: str = "", mirror: str = "") -> Path:
    """The folder the archive of source `name` unpacks to (FileSpec.unpack_to, in the data dir):
    the archive is fetched (or found) and, unless that folder already holds exactly it, unpacked."""
    src = get_source(name)
    [(file, spec)] = [(f, s) for f, s in src.files.items() if s.unpack_to]
    archive = fetch(name, file, home=home, mirror=mirror)
    target = data_dir(home) / spec.unpack_to
    stamp = f"{archive.stat().st_size} {sha256_of(archive)}"
    with _locked(target):
        if (target / STAMP).is_file() and (target / STAMP).read_text() == stamp:
            return target
        return unpack_zip(archive, target, strip=getattr(spec.format, "root", ""), stamp=stamp)


def _unpack_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path) -> None:
    """One member, refusing to write more bytes than its header declares (a zip bomb's trick)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with z.open(info) as member, open(out, "wb") as dst:
        while block := member.read(BLOCK):
            written += len(block)
            if written > info.file_size:
                raise zipfile.BadZipFile(f"member {info.filename} inflates past its declared {info.file_size} bytes")
            dst.write(block)


def unpack_zip(archive: Path, target: Path, strip: str = "", stamp: str = "") -> Path:
    """Unpack `archive` (members under `strip/`, which is dropped) into `target`, atomically: into a
    temporary folder beside it, then renamed into place (an older `target` is replaced as a whole).
    Members that could land outside the folder are refused (formats.unsafe_member)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                reason = unsafe_member(info)
                if reason:
                    raise UserError(f"{archive} is unsafe to unpack: {reason}; delete it and download it again")
                rel = info.filename[len(strip) + 1:] if strip and info.filename.startswith(strip + "/") \
                    else info.filename
                if rel and not info.is_dir():
                    _unpack_member(z, info, tmp / rel)
        (tmp / STAMP).write_text(stamp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UserError(f"could not unpack {archive} ({type(e).__name__}: {e}); delete it and download it "
                        "again") from None
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return target


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
