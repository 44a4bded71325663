"""Run untrusted, model-written Python: HumanEval solutions (`run_python`) and the calculator tool.

`run_python` executes code in a separate, throw-away Python process, behind layers that are
each applied when the machine allows it (the result lists which ones were active):

1. Kernel isolation via util-linux `unshare`: a fresh network namespace (only a downed
   loopback, so every connect fails, even to 127.0.0.1) and a fresh PID namespace whose init
   is the sandboxed interpreter (when it dies the kernel kills everything it started). As
   root this needs no user namespace; otherwise we try an unprivileged user namespace.
2. Resource limits (setrlimit) set in the child before the code runs: address space
   (RLIMIT_AS, so a huge allocation is a MemoryError, not a host OOM), CPU seconds, file size,
   open files, no core dumps, and RLIMIT_NPROC = 0 (no fork for a non-root uid). A wall-clock
   timeout in the parent kills the whole process group (start_new_session) with SIGKILL.
3. Privilege drop: when the evaluator runs as root and the Python standard library is
   readable by others, the child becomes `nobody`, so the kernel's file permissions (not
   our code) protect the user's files and RLIMIT_NPROC applies.
4. A CPython audit hook (PEP 578) installed before the code runs: opens are allowed only
   inside the sandbox directory (read or write) and, for reading, inside the interpreter's own
   import path; process creation (fork, exec, spawn, system, subprocess), signals, sockets,
   ctypes, gc introspection and rlimit changes are refused. Unlike patching `os.system = None`
   (nanochat's execution.py), a hook also covers `posix.system`, `_io.FileIO` and friends,
   and cannot be removed once installed. It is still not a security boundary by itself
   (PEP 578 says so): the kernel layers above are; the hook stops accidents and casual escapes.

The working directory is a fresh temp dir (also $HOME and $TMPDIR), deleted afterwards; the
environment is scrubbed; stdout/stderr go to files so a flood of output cannot exhaust our
memory (each is capped by the file-size limit and truncated when read back).

`calculator` is different: the engine calls it on every tool call, so it must be fast. It
never runs code: it parses the expression with `ast` and evaluates a whitelist of node types
itself (numbers, + - * / // % **, unary +/-, parentheses, string literals and a few read-only
str methods). No names, attributes other than the listed methods, subscripts, comprehensions
or calls to anything else exist in that language, so there is nothing to escape to; the
remaining risk is cost (`9**9**9`, giant strings), bounded by explicit size checks.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache

NOBODY = 65534
OUTPUT_LIMIT = 1 << 20  # bytes of stdout/stderr returned to the caller (the rest is cut)
FILE_LIMIT = 16 << 20  # RLIMIT_FSIZE: the largest file (stdout included) the child may write


@dataclass
class SandboxResult:
    """Outcome of one `run_python` call."""

    status: str  # "ok" | "timeout" | "error" | "memory"
    stdout: str = ""
    stderr: str = ""
    error: str = ""  # one line: the exception, or why the process was stopped
    returncode: int | None = None
    isolation: tuple[str, ...] = field(default_factory=tuple)  # layers that were active

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# The child runs this before the untrusted code (`python -I -S -B -c LAUNCHER params`). The code
# itself arrives on stdin, so it is never limited by argv length and never touches our disk.
LAUNCHER = r'''
import json, os, resource, sys
def _setup(p):
    code = sys.stdin.read()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for name, soft, hard in p["limits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if p["drop_to"] is not None:
        os.setgroups([])
        os.setgid(p["drop_to"])
        os.setuid(p["drop_to"])
    box = p["box"]
    roots = tuple(p["read_roots"])
    deny_events = frozenset(p["deny_events"])
    deny_prefixes = tuple(p["deny_prefixes"])
    deny_imports = frozenset(p["deny_imports"])
    read_events = frozenset(("os.listdir", "os.scandir", "glob.glob", "os.chdir"))
    realpath, fspath, sep = os.path.realpath, os.fspath, os.sep
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def inside(path, bases):
        try:
            path = realpath(fspath(path))
        except Exception:
            return False
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        return any(path == b or path.startswith(b.rstrip(sep) + sep) for b in bases)

    def hook(event, args):
        if event in deny_events or event.startswith(deny_prefixes):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import":
            if args[0].split(".")[0] in deny_imports:
                raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        elif event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & writing)
            if not inside(path, (box,) if writes else (box,) + roots):
                raise PermissionError(f"sandbox: no access to {path!r} outside the sandbox directory")
        elif event.startswith(("os.", "shutil.")):
            bases = (box,) + roots if event in read_events else (box,)
            for a in args:
                if isinstance(a, (str, bytes, os.PathLike)) and not inside(a, bases):
                    raise PermissionError(f"sandbox: {event} outside the sandbox directory")

    if p["audit"]:
        sys.addaudithook(hook)
    return code

def _run(p):
    code = _setup(p)
    del p
    try:
        exec(compile(code, "<sandbox>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except MemoryError:
        sys.stderr.write("MemoryError: the sandbox memory limit was reached\n")
        sys.stderr.flush()
        os._exit(3)

_run(json.loads(sys.argv[1]))
del _run, _setup
'''

# Audit events refused outright (names from the CPython audit events table).
DENY_EVENTS = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.startfile", "os.putenv", "os.unsetenv", "subprocess.Popen", "pty.spawn",
    "resource.setrlimit", "resource.prlimit", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents", "signal.pthread_kill",
    "webbrowser.open",
)
DENY_PREFIXES = ("ctypes.", "socket.", "ftplib.", "smtplib.", "urllib.", "http.", "_posixsubprocess")
DENY_IMPORTS = ("ctypes", "_ctypes", "_posixsubprocess", "cffi", "multiprocessing", "_multiprocessing")


def _interpreter() -> str:
    """The real interpreter binary (a venv's python is a symlink to it); -I -S needs no venv."""
    return getattr(sys, "_base_executable", "") or sys.executable


@lru_cache(maxsize=4)
def _read_roots(interpreter: str) -> tuple[str, ...]:
    """Where `interpreter -I -S` imports from (its standard library): the child may read there."""
    probe = "import json, sys; print(json.dumps(sys.path))"
    try:
        out = subprocess.run([interpreter, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30)
        paths = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        paths = list(sysconfig.get_paths().values())
    return tuple(sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)}))


def _world_readable(path: str) -> bool:
    """Whether `nobody` could read `path`: every ancestor searchable and the dir readable by others."""
    path = os.path.realpath(path)
    parts = [path] + [os.path.dirname(path)]
    while parts[-1] != os.path.dirname(parts[-1]):
        parts.append(os.path.dirname(parts[-1]))
    try:
        modes = [os.stat(p).st_mode for p in parts]
    except OSError:
        return False
    return bool(modes[0] & stat.S_IROTH) and all(m & stat.S_IXOTH for m in modes)


@lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """The `unshare` command line that works here (probed once), or () when none does."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return ()
    base = ("--net", "--pid", "--fork", "--kill-child", "--ipc")
    for extra in ((), ("--user",)):  # as root no user namespace is needed; otherwise try one
        cmd = (exe, *extra, *base, "--")
        try:
            ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return cmd
    return ()


def _drop_to(roots: tuple[str, ...]) -> int | None:
    """`nobody` when we are root and `nobody` can still read the interpreter's library."""
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    return NOBODY if is_root and roots and all(_world_readable(r) for r in roots) else None


def _limits(timeout: float, memory_mb: int) -> list[tuple[str, int, int]]:
    cpu = math.ceil(timeout) + 1
    return [
        ("RLIMIT_AS", memory_mb << 20, memory_mb << 20),
        ("RLIMIT_CPU", cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL at the hard one
        ("RLIMIT_FSIZE", FILE_LIMIT, FILE_LIMIT),
        ("RLIMIT_NOFILE", 64, 64),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_NPROC", 0, 0),  # counts per uid; not enforced for root, hence the other layers
    ]


def _read_capped(f) -> str:
    f.seek(0)
    data = f.read(OUTPUT_LIMIT + 1)
    text = data[:OUTPUT_LIMIT].decode("utf-8", "replace")
    return text + ("\n[output truncated]" if len(data) > OUTPUT_LIMIT else "")


def run_python(code: str, *, timeout: float = 5.0, memory_mb: int = 512) -> SandboxResult:
    """Run `code` in a sandboxed child process; never raises for anything the code does."""
    return _run(code, timeout, memory_mb, audit=True)


def _run(code: str, timeout: float, memory_mb: int, audit: bool) -> SandboxResult:
    """run_python; `audit=False` leaves the hook out so tests can check the kernel layers alone."""
    interpreter = _interpreter()
    roots = _read_roots(interpreter)
    prefix, drop = _unshare_prefix(), _drop_to(roots)
    isolation = (("netns", "pidns") if prefix else ()) + ("rlimits",) + (("audit-hook",) if audit else ())
    isolation += ("nobody",) if drop is not None else ()
    box = os.path.realpath(tempfile.mkdtemp(prefix="picochat-sandbox-"))
    params = {"box": box, "limits": _limits(timeout, memory_mb), "drop_to": drop,
              "read_roots": roots, "audit": audit, "deny_events": DENY_EVENTS,
              "deny_prefixes": DENY_PREFIXES, "deny_imports": DENY_IMPORTS}
    env = {"PATH": "/usr/bin:/bin", "HOME": box, "TMPDIR": box, "LANG": "C.UTF-8",
           "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    argv = [*prefix, interpreter, "-I", "-S", "-B", "-c", LAUNCHER, json.dumps(params)]
    try:
        if drop is not None:
            os.chown(box, drop, drop)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=box,
                                    env=env, start_new_session=True)
            timed_out = _feed_and_wait(proc, code, timeout)
            stdout, stderr = _read_capped(out), _read_capped(err)
    finally:
        shutil.rmtree(box, ignore_errors=True)
    return _classify(proc.returncode, timed_out, stdout, stderr, isolation)


def _feed_and_wait(proc: subprocess.Popen, code: str, timeout: float) -> bool:
    """Send the code on stdin and wait; on timeout SIGKILL the whole process group."""
    try:
        proc.communicate(code.encode("utf-8", "surrogatepass"), timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return True


def _classify(rc: int | None, timed_out: bool, stdout: str, stderr: str,
              isolation: tuple[str, ...]) -> SandboxResult:
    def result(status: str, error: str = "") -> SandboxResult:
        return SandboxResult(status, stdout, stderr, error, rc, isolation)

    lines = stderr.strip().splitlines()
    last = lines[-1] if lines else ""
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


# ----------------------------------------------------------------------------------------------
# The calculator tool: an AST-whitelist evaluator (in-process, microseconds per call).

MAX_EXPR_CHARS = 500
MAX_INT_BITS = 4096  # bound on any integer result: ~1233 decimal digits
MAX_STR_CHARS = 10_000
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_STR_METHODS = {"count", "find", "index", "upper", "lower", "strip", "startswith", "endswith"}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}


class _Rejected(Exception):
    pass


def _number(x: object) -> int | float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _Rejected("not a number")
    if isinstance(x, int) and x.bit_length() > MAX_INT_BITS:
        raise _Rejected("integer too large")
    if isinstance(x, float) and not math.isfinite(x):
        raise _Rejected("overflow")
    return x


def _power(base: int | float, exp: int | float) -> int | float:
    # |base|**exp has about exp*log2|base| bits: refuse before computing, not after
    if abs(exp) > 10_000 or (abs(base) > 1 and abs(exp) * math.log2(abs(base)) > MAX_INT_BITS):
        raise _Rejected("power too large")
    return base**exp


def _eval(node: ast.AST) -> object:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        if isinstance(node.value, str) and len(node.value) > MAX_STR_CHARS:
            raise _Rejected("string too long")
        return _number(node.value) if not isinstance(node.value, str) else node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        x = _number(_eval(node.operand))
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp):
        a, b = _number(_eval(node.left)), _number(_eval(node.right))
        if isinstance(node.op, ast.Pow):
            return _number(_power(a, b))
        if type(node.op) in _BINOPS:
            return _number(_BINOPS[type(node.op)](a, b))
    if isinstance(node, ast.Call) and not node.keywords:
        args = [_eval(a) for a in node.args]
        f = node.func
        if isinstance(f, ast.Name) and f.id == "len" and len(args) == 1 and isinstance(args[0], str):
            return len(args[0])
        if isinstance(f, ast.Attribute) and f.attr in _STR_METHODS and len(args) <= 1:
            obj = _eval(f.value)
            if isinstance(obj, str) and all(isinstance(a, str) for a in args):
                return getattr(obj, f.attr)(*args)
    raise _Rejected(f"{type(node).__name__} is not allowed in a calculator expression")


def calculator(expression: str) -> str | None:
    """Evaluate a calculator expression; the result as text, or None if not allowed or failing.

    Accepts numbers (thousands separators like 1,234 are removed), + - * / // % ** and
    parentheses, string literals with .count/.find/.index/.upper/.lower/.strip/.startswith/
    .endswith, and len("..."); e.g. `"strawberry".count("r")` -> "3". The result is Python's
    `str()` of the value ("12/4" -> "3.0"), as nanochat's tool returns it.
    """
    if not isinstance(expression, str) or len(expression) > MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(_THOUSANDS.sub("", expression.strip()), mode="eval")
        value = _eval(tree)
        return str(value)
    except (_Rejected, SyntaxError, ArithmeticError, ValueError, TypeError, RecursionError,
            MemoryError):
        return None
