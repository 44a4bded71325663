"""Escape attempts against the sandbox, shared by tests/test_sandbox.py (as the caller that runs
pytest, root here and on CI) and by itself as a script run as a non-root user:

    setpriv --reuid=65534 --regid=65534 --clear-groups python3 tests/helpers/escapes.py MODE...

prints {"<escape> <mode>": "contained" | "n/a: ..." | "ESCAPED: ..."} as JSON. Each escape names
the layers that claim to stop it; when a run has none of them active, the escape is "n/a"
for that run (e.g. a fork bomb with the audit hook off, as root, without namespaces), otherwise
it must be contained. Standard library + picochat.sandbox only (a non-root user may have no
pytest and only a system Python).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from picochat.sandbox import jail

# The layers left on in each mode; "os" is every kernel layer without the audit hook, the
# situation after a subinterpreter or ctypes got past the hook.
MODES = {
    "all": {},
    "os": {"audit": False},
    "namespaces": {"audit": False, "landlock": False, "seccomp": False},
    "landlock": {"audit": False, "namespaces": False, "seccomp": False},
}
SECRET = "picochat-secret-7c1d"

Outcome = str


# With every optional layer off (the parent-side ones stay): for the self-check that each probe
# does detect a real escape, so that "contained" means something.
NO_LAYERS = {"audit": False, "namespaces": False, "landlock": False, "seccomp": False}


def _outcome(r: jail.SandboxResult, needs: tuple[str, ...], escaped: bool, detail: str) -> Outcome:
    if not any(layer in r.isolation for layer in needs):
        return f"n/a ({'escaped' if escaped else 'held'}): none of {needs} active"
    return f"ESCAPED: {detail} [{r.status}: {r.error}] {r.stdout[-300:]!r}" if escaped else "contained"


def _fresh_dir(tmp: Path, mode: int) -> Path:
    """A new directory for one probe (an earlier probe's leftovers must not count)."""
    d = Path(tempfile.mkdtemp(dir=tmp))
    os.chmod(d, mode)
    return d


def fork_bomb(mode: dict, tmp: Path) -> Outcome:
    # bounded on purpose: if forking did work, 20 sleepers, not a real bomb on the test machine
    code = ("import os, time\nfor _ in range(20):\n    if os.fork() == 0:\n        time.sleep(20)\n"
            "        os._exit(0)\nprint('forked')\n")
    r = jail.run_python(code, timeout=5.0, **mode)
    return _outcome(r, ("nproc", "audit-hook"), "forked" in r.stdout, "fork worked")


def memory_bomb(mode: dict, tmp: Path) -> Outcome:
    r = jail.run_python("x = bytearray(16 * 1024**3)\nprint('allocated')", memory_mb=256, **mode)
    return _outcome(r, ("rlimits",), "allocated" in r.stdout or r.status != "memory", "16 GiB allocated")


def write_outside(mode: dict, tmp: Path) -> Outcome:
    target = _fresh_dir(tmp, 0o777)  # world-writable: only the sandbox, not file permissions, may stop this
    victim = target / "victim.txt"
    victim.write_text("precious")
    os.chmod(victim, 0o666)
    code = (f"import os\nfor p in ({str(target / 'pwned.txt')!r},):\n"
            "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\n"
            f"for f in (lambda: os.remove({str(victim)!r}), lambda: open({str(victim)!r}, 'w').write('gone')):\n"
            "    try:\n        f()\n    except OSError:\n        pass\n")
    r = jail.run_python(code, **mode)
    escaped = (target / "pwned.txt").exists() or not victim.exists() or victim.read_text() != "precious"
    return _outcome(r, ("mountns", "landlock", "audit-hook"), escaped, "wrote outside the box")


def read_outside(mode: dict, tmp: Path) -> Outcome:
    d = _fresh_dir(tmp, 0o755)
    (d / "secret.txt").write_text(SECRET)
    os.chmod(d / "secret.txt", 0o644)  # world-readable: only the sandbox may stop this
    code = f"print(open({str(d / 'secret.txt')!r}).read())"
    r = jail.run_python(code, **mode)
    return _outcome(r, ("mountns", "landlock", "audit-hook"), SECRET in r.stdout + r.stderr, "read a host file")


def read_parent_env(mode: dict, tmp: Path) -> Outcome:
    os.environ["PICOCHAT_TEST_SECRET"] = SECRET
    try:
        code = ("import os\nprint(dict(os.environ))\n"
                "for p in (f'/proc/{os.getppid()}/environ', '/proc/self/environ', '/proc/1/environ'):\n"
                "    try:\n        print(open(p, 'rb').read())\n    except OSError:\n        pass\n")
        r = jail.run_python(code, **mode)
    finally:
        del os.environ["PICOCHAT_TEST_SECRET"]
    return _outcome(r, ("output-cap",), SECRET in r.stdout + r.stderr, "saw the parent's environment")


def signal_parent(mode: dict, tmp: Path) -> Outcome:
    """A sentinel with the sandbox's own uid (so permissions do not protect it) must survive.
    Only the sentinel is ever targeted: never kill(-1) or the parent, which, should a layer be
    missing, would hit every process of the machine (as root) or the test run itself."""
    uid = jail.NOBODY if os.geteuid() == 0 else None
    sentinel = subprocess.Popen(["sleep", "60"], user=uid, start_new_session=True)
    try:
        code = f"import os, signal\nos.kill({sentinel.pid}, signal.SIGKILL)\n"
        r = jail.run_python(code, **mode)
        time.sleep(0.2)
        alive = sentinel.poll() is None
    finally:
        sentinel.kill()
        sentinel.wait()
    return _outcome(r, ("pidns", "landlock-signal", "audit-hook"), not alive, "killed a process outside")


def network(mode: dict, tmp: Path) -> Outcome:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "s.sendall(b'hello')\nprint('connected')")
        r = jail.run_python(code, **mode)
        try:
            srv.accept()[0].close()
            contacted = True
        except BlockingIOError:
            contacted = False
    finally:
        srv.close()
    return _outcome(r, ("netns", "landlock-net", "audit-hook"), contacted or "connected" in r.stdout, "connected")


def leftover_daemon(mode: dict, tmp: Path) -> Outcome:
    """A daemon that would outlive the run holds fd 3; after the run the pipe must be at EOF."""
    code = ("import os, time\ntry:\n    pid = os.fork()\nexcept OSError:\n    pid = -1\n"
            "if pid == 0:\n    os.setsid()\n    time.sleep(10)\n    os._exit(0)\nprint('started', pid)\n")
    rd, wr = os.pipe()
    try:
        child = jail.start(code, timeout=5.0, memory_mb=256, extra_fds=(wr,), **mode)
    finally:
        os.close(wr)
    timed_out, capped = jail.pump([child], time.monotonic() + 5.0)
    r = jail.finish(child, timed_out, capped)
    os.set_blocking(rd, False)
    deadline, held = time.monotonic() + 3.0, True
    while held and time.monotonic() < deadline:
        try:
            held = os.read(rd, 1) != b""
        except BlockingIOError:
            time.sleep(0.05)
    os.close(rd)
    return _outcome(r, ("pidns", "nproc", "audit-hook"), held, "a process outlived the run")


def subinterpreter(mode: dict, tmp: Path) -> Outcome:
    """Code in a fresh subinterpreter runs without the audit hook: the kernel layers must hold."""
    d = _fresh_dir(tmp, 0o777)
    marker = d / "subinterp-pwned"
    (d / "secret2.txt").write_text(SECRET)
    os.chmod(d / "secret2.txt", 0o644)
    inner = (f"import os\ntry:\n    open({str(marker)!r}, 'w').write('x')\nexcept OSError:\n    pass\n"
             f"try:\n    print(open({str(d / 'secret2.txt')!r}).read())\nexcept OSError:\n    pass\n"
             f"os.system('touch {marker}')\n")
    code = ("try:\n    import _xxsubinterpreters as si\nexcept ImportError:\n    import _interpreters as si\n"
            f"i = si.create()\nsi.run_string(i, {inner!r})\nprint('ran')\n")
    r = jail.run_python(code, **mode)
    escaped = marker.exists() or SECRET in r.stdout + r.stderr
    if "audit-hook" in r.isolation:  # the hook refuses the import: the layer under test is absent
        return _outcome(r, ("audit-hook",), escaped, "subinterpreter escaped the hook")
    return _outcome(r, ("mountns", "landlock"), escaped, "subinterpreter reached the host")


def ctypes_escape(mode: dict, tmp: Path) -> Outcome:
    marker = _fresh_dir(tmp, 0o777) / "ctypes-pwned"
    code = f"import ctypes\nctypes.CDLL(None).system(b'touch {marker}')\n"
    r = jail.run_python(code, **mode)
    return _outcome(r, ("nproc", "audit-hook"), marker.exists(), "ctypes ran a shell")


def exec_shell(mode: dict, tmp: Path) -> Outcome:
    """exec is not a new process (RLIMIT_NPROC does not stop it): the shell must stay as boxed."""
    marker = _fresh_dir(tmp, 0o777) / "shell-pwned"
    r = jail.run_python(f"import os\nos.execv('/bin/sh', ['sh', '-c', 'touch {marker}; echo ran'])\n", **mode)
    return _outcome(r, ("mountns", "landlock", "audit-hook"), marker.exists(), "a shell wrote to the host")


def new_namespace(mode: dict, tmp: Path) -> Outcome:
    """A user namespace of its own would make the code "root" there: more kernel to attack."""
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print('unshared' if libc.unshare(0x10000000) == 0 else 'refused')\n")
    r = jail.run_python(code, **mode)
    return _outcome(r, ("seccomp", "audit-hook"), "unshared" in r.stdout, "made a user namespace")


def output_flood(mode: dict, tmp: Path) -> Outcome:
    half = jail.OUTPUT_LIMIT * 3 // 4  # each stream under the cap, together over it
    code = f"import sys\nsys.stdout.write('o' * {half})\nsys.stdout.flush()\nsys.stderr.write('e' * {half})\n"
    r = jail.run_python(code, **mode)
    total = len(r.stdout.encode()) + len(r.stderr.encode())
    return _outcome(r, ("output-cap",), total > jail.OUTPUT_LIMIT or r.status != "output",
                    f"{total} bytes came back")


ESCAPES: dict[str, Callable[[dict, Path], Outcome]] = {
    f.__name__: f for f in (fork_bomb, memory_bomb, write_outside, read_outside, read_parent_env, signal_parent,
                            network, leftover_daemon, subinterpreter, ctypes_escape, exec_shell, new_namespace,
                            output_flood)}


def grading() -> dict[str, bool]:
    """Verdicts on a small problem: the right function, and every reply of cheats.py (when it is
    importable beside this file), graded by the caller running this script."""
    from picochat.sandbox import grade_function

    problem = {"prompt": "def add(a: int, b: int) -> int:\n    \"\"\"Add.\"\"\"\n", "entry_point": "add",
               "test": ("def check(candidate):\n    assert candidate(2, 3) == 5\n"
                        "    assert abs(candidate(1, 1) - 2) < 1\n")}
    replies = {"honest": "def add(a, b):\n    return a + b\n"}
    try:
        from cheats import CHEATS
    except ImportError:
        CHEATS = {}
    replies.update({name: code.replace("{entry}", "add") for name, code in CHEATS.items()})
    return {name: grade_function(code, entry_point="add", prompt=problem["prompt"], test=problem["test"],
                                 timeout=5.0).passed for name, code in replies.items()}


def main(modes: list[str]) -> dict[str, Outcome]:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        for mode in modes:
            for name, escape in ESCAPES.items():
                out[f"{name} {mode}"] = escape(MODES[mode] if mode in MODES else NO_LAYERS, Path(d))
    return out


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    print(json.dumps({"uid": os.geteuid(), "isolation": list(jail.run_python("pass").isolation),
                      "outcomes": main(sys.argv[1:] or list(MODES)), "grading": grading()}))
