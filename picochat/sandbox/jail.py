"""The parent side of the sandbox: start children (picochat/sandbox/child.py), feed them code,
read their output under one total cap and one wall-clock deadline, kill whatever is left, and
say which isolation layers held. The layers themselves are described in the package docstring.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

NOBODY = 65534
OUTPUT_LIMIT = 1 << 20  # bytes of stdout + stderr together, over every process of one run
BOX_BYTES = 16 << 20  # the writable tmpfs box, and RLIMIT_FSIZE
SIDE_LIMIT = 1 << 16  # bytes kept from a side channel (setup report, verdict)
CHILD_SOURCE = (Path(__file__).with_name("child.py")).read_text

# Host paths bound read-only into the private root (when they exist): the dynamic loader's
# libraries and /dev/null; the interpreter's own prefix is added per interpreter.
SYSTEM_BINDS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/etc/ld.so.cache",
                "/dev/null", "/dev/zero", "/dev/urandom")

# Audit events refused outright (names from the CPython audit events table).
DENY_EVENTS = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.startfile", "os.putenv", "os.unsetenv", "subprocess.Popen", "pty.spawn",
    "resource.setrlimit", "resource.prlimit", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents", "signal.pthread_kill", "webbrowser.open",
)
DENY_PREFIXES = ("ctypes.", "socket.", "ftplib.", "smtplib.", "urllib.", "http.", "_posixsubprocess")
DENY_IMPORTS = ("ctypes", "_ctypes", "_posixsubprocess", "cffi", "multiprocessing", "_multiprocessing",
                "_xxsubinterpreters", "_interpreters", "_xxinterpchannels", "_interpchannels")

# What evals and RL require, each a set of alternatives: one of them must be active.
REQUIRED = (
    (("unprivileged",), "a non-root uid without capabilities"),
    (("nproc",), "a process-count limit"),
    (("rlimits",), "memory/CPU/file-size limits"),
    (("output-cap",), "a total output cap"),
    (("mountns", "landlock"), "a private filesystem (mount namespace or Landlock)"),
    (("pidns", "landlock-signal"), "a separate process space (PID namespace or Landlock signal scoping)"),
    (("netns", "landlock-net"), "no network (network namespace or Landlock)"),
)


@dataclass
class SandboxResult:
    """Outcome of one sandboxed process."""

    status: str  # "ok" | "timeout" | "error" | "memory" | "output" (the output cap was hit)
    stdout: str = ""
    stderr: str = ""
    error: str = ""  # one line: the exception, or why the process was stopped
    returncode: int | None = None
    isolation: tuple[str, ...] = field(default_factory=tuple)  # layers that were active
    missing: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (layer, why it could not be set up)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def unmet_requirements(isolation: tuple[str, ...]) -> list[str]:
    """The required layers (REQUIRED) that `isolation` lacks, each in words."""
    return [words for options, words in REQUIRED if not any(o in isolation for o in options)]


def interpreter() -> str:
    """The real interpreter binary (a venv's python is a symlink to it); -I -S needs no venv."""
    return getattr(sys, "_base_executable", "") or sys.executable


@lru_cache(maxsize=4)
def read_roots(exe: str) -> tuple[str, ...]:
    """Where `exe -I -S` imports from (its standard library): the child may read there."""
    probe = "import json, sys; print(json.dumps(sys.path + [sys.base_prefix]))"
    try:
        out = subprocess.run([exe, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30)
        paths = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        paths = [sys.base_prefix]
    return tuple(sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)}))


def binds(exe: str) -> tuple[str, ...]:
    """Host paths visible (read-only) in the private root: system libraries, /dev/null & co,
    and the interpreter's prefix and import path, minus paths already under another bind."""
    wanted = [p for p in SYSTEM_BINDS if os.path.exists(p) and not os.path.islink(p)]
    prefix = os.path.realpath(os.path.dirname(os.path.dirname(exe)))
    wanted += [prefix] + list(read_roots(exe))
    wanted = [os.path.realpath(p) if not p.startswith("/dev/") else p for p in wanted]
    out: list[str] = []
    for p in sorted(set(wanted), key=len):
        if p != "/" and not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return tuple(out)


def symlinks() -> tuple[tuple[str, str], ...]:
    """System paths that are symlinks (/lib -> usr/lib on a merged-/usr system): recreated as such."""
    return tuple((p, os.readlink(p)) for p in SYSTEM_BINDS if os.path.islink(p) and not p.startswith("/dev/"))


def world_readable(path: str) -> bool:
    """Whether `nobody` could read `path`: every ancestor searchable and the path readable by others."""
    path = os.path.realpath(path)
    parts = [path]
    while parts[-1] != os.path.dirname(parts[-1]):
        parts.append(os.path.dirname(parts[-1]))
    try:
        modes = [os.stat(p).st_mode for p in parts]
    except OSError:
        return False
    return bool(modes[0] & stat.S_IROTH) and all(m & stat.S_IXOTH for m in modes)


def limits(timeout: float, memory_mb: int) -> list[tuple[str, int, int]]:
    cpu = math.ceil(timeout) + 1
    return [
        ("RLIMIT_AS", memory_mb << 20, memory_mb << 20),
        ("RLIMIT_CPU", cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL at the hard one
        ("RLIMIT_FSIZE", BOX_BYTES, BOX_BYTES),
        ("RLIMIT_NOFILE", 64, 64),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_NPROC", 0, 0),  # no new process at all (for a non-root uid; see child.drop_privileges)
    ]


@dataclass
class Child:
    """One started sandbox process and what it has sent back so far."""

    proc: subprocess.Popen
    box: str
    report_fd: int
    stdin: bytes
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    report: bytearray = field(default_factory=bytearray)


def start(code: str, *, timeout: float, memory_mb: int, audit: bool = True, namespaces: bool = True,
          landlock: bool = True, seccomp: bool = True, extra_fds: tuple[int, ...] = (), driver: str = "") -> Child:
    """Start `code` in a sandboxed child; `extra_fds` become its fds 3, 4, ... (in order)."""
    exe = interpreter()
    box = os.path.realpath(tempfile.mkdtemp(prefix="picochat-sandbox-"))
    report_r, report_w = os.pipe()
    readable = all(world_readable(r) for r in read_roots(exe))
    is_root = os.geteuid() == 0
    params = {"box": box, "mountpoint": box, "binds": binds(exe), "symlinks": symlinks(), "read_roots": read_roots(exe),
              "limits": limits(timeout, memory_mb), "box_bytes": BOX_BYTES, "namespaces": namespaces,
              "landlock": landlock, "seccomp": seccomp,
              "drop_to": NOBODY if is_root else None, "world_readable": readable, "audit": audit,
              "deny_events": DENY_EVENTS, "deny_prefixes": DENY_PREFIXES, "deny_imports": DENY_IMPORTS,
              "report_fd": report_w, "extra_fds": list(extra_fds), "driver": driver}
    env = {"PATH": "/usr/bin:/bin", "HOME": box, "TMPDIR": box, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        if is_root:
            os.chown(box, NOBODY, NOBODY)  # the box of a run without a mount namespace
        proc = subprocess.Popen([exe, "-I", "-S", "-B", "-c", CHILD_SOURCE(), json.dumps(params)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=box,
                                env=env, start_new_session=True, pass_fds=(report_w, *extra_fds))
    except BaseException:
        os.close(report_r)
        shutil.rmtree(box, ignore_errors=True)
        raise
    finally:
        os.close(report_w)
    return Child(proc, box, report_r, code.encode("utf-8", "surrogatepass"))


def kill(child: Child) -> None:
    """SIGKILL the child's process group and the child itself; reap it."""
    for fn, target in ((os.killpg, child.proc.pid), (os.kill, child.proc.pid)):
        try:
            fn(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    child.proc.wait()


def pump(children: list[Child], deadline: float, *, side: dict[int, bytearray] | None = None,
         primary: Child | None = None) -> tuple[bool, bool]:
    """Feed stdin and read every pipe until all children exit (or `primary` does), the deadline
    passes, or stdout+stderr of all children together pass OUTPUT_LIMIT. Everything still alive
    at the end is killed. `side` maps extra fds to read (up to SIDE_LIMIT each) to their buffers.
    Returns (timed_out, output_capped)."""
    sel = selectors.DefaultSelector()
    for c in children:
        os.set_blocking(c.proc.stdin.fileno(), False)
        sel.register(c.proc.stdin, selectors.EVENT_WRITE, (c, "in"))
        sel.register(c.proc.stdout, selectors.EVENT_READ, (c.out, True))
        sel.register(c.proc.stderr, selectors.EVENT_READ, (c.err, True))
        sel.register(c.report_fd, selectors.EVENT_READ, (c.report, False))
    for fd, buf in (side or {}).items():
        sel.register(fd, selectors.EVENT_READ, (buf, False))
    total, timed_out, capped = 0, False, False
    watched = [primary] if primary is not None else children
    while sel.get_map() or any(c.proc.poll() is None for c in watched):
        if primary is not None and primary.proc.poll() is not None and not _open_pipes(sel, primary):
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        if not sel.get_map():
            time.sleep(min(0.01, remaining))
            continue
        for key, _ in sel.select(min(remaining, 0.05)):
            if key.data[1] == "in":
                _feed(sel, key)
                continue
            chunk = os.read(key.fd, 1 << 16)
            buf, counted = key.data
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            if counted:
                buf += chunk[:max(0, OUTPUT_LIMIT - total)]
                total += len(chunk)
                capped = capped or total > OUTPUT_LIMIT
            else:
                buf += chunk[:max(0, SIDE_LIMIT - len(buf))]
        if capped:
            break
    for c in children:
        if c.proc.poll() is None:
            kill(c)
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
    return timed_out, capped


def _open_pipes(sel: selectors.BaseSelector, c: Child) -> bool:
    fds = {c.proc.stdout.fileno(), c.proc.stderr.fileno(), c.report_fd}
    return any(key.fd in fds for key in sel.get_map().values())


def _feed(sel: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
    c: Child = key.data[0]
    try:
        n = os.write(key.fd, c.stdin[:1 << 16])
        c.stdin = c.stdin[n:]
    except (BrokenPipeError, BlockingIOError) as e:
        if isinstance(e, BlockingIOError):
            return
        c.stdin = b""
    if not c.stdin:
        sel.unregister(key.fileobj)
        key.fileobj.close()


def finish(child: Child, timed_out: bool, capped: bool) -> SandboxResult:
    """Close the child's pipes, delete its box, and classify what happened."""
    for f in (child.proc.stdin, child.proc.stdout, child.proc.stderr):
        if not f.closed:
            f.close()
    os.close(child.report_fd)
    shutil.rmtree(child.box, ignore_errors=True)
    try:
        report = json.loads(child.report.decode())
        active, missing = tuple(report["active"]), tuple(tuple(m) for m in report["missing"])
    except (ValueError, KeyError, TypeError):
        active, missing = (), (("all", "the child reported no setup (it died before its code ran)"),)
    stdout, stderr = (b.decode("utf-8", "replace") for b in (child.out, child.err))
    return classify(child.proc.returncode, timed_out, capped, stdout, stderr, active + ("output-cap",), missing)


def classify(rc: int | None, timed_out: bool, capped: bool, stdout: str, stderr: str,
             isolation: tuple[str, ...], missing: tuple = ()) -> SandboxResult:
    def result(status: str, error: str = "") -> SandboxResult:
        return SandboxResult(status, stdout, stderr, error, rc, isolation, missing)

    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    if capped:
        return result("output", f"more than {OUTPUT_LIMIT} bytes of output (process killed)")
    if timed_out:
        return result("timeout", "wall-clock time limit exceeded (process killed)")
    if rc in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL) and not last:
        return result("timeout", "CPU time limit exceeded (process killed)")
    if rc == 3 or last.startswith("MemoryError"):
        return result("memory", last or "MemoryError")
    if rc == 0:
        return result("ok")
    if rc is not None and rc < 0:
        return result("error", f"killed by signal {signal.Signals(-rc).name}")
    return result("error", last or f"exit status {rc}")


def run_python(code: str, *, timeout: float = 5.0, memory_mb: int = 512, audit: bool = True,
               namespaces: bool = True, landlock: bool = True, seccomp: bool = True) -> SandboxResult:
    """Run `code` in a sandboxed child process; never raises for anything the code does.
    `audit`, `namespaces`, `landlock`, `seccomp` = False leave a layer out, so tests can check the
    others alone."""
    child = start(code, timeout=timeout, memory_mb=memory_mb, audit=audit, namespaces=namespaces,
                  landlock=landlock, seccomp=seccomp)
    timed_out, capped = pump([child], time.monotonic() + timeout)
    return finish(child, timed_out, capped)


@lru_cache(maxsize=1)
def probe() -> SandboxResult:
    """One trivial run: the layers this machine gives a sandboxed program (cached)."""
    return run_python("pass", timeout=30.0)
