"""The sandbox (picochat/sandbox/): runs honest code, contains dishonest code with the kernel
layers alone (the audit hook off), reports its layers truthfully, always in bounded time; as
the user that runs the suite (root here and on CI) and as a non-root user (uid 65534)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import escapes

from picochat.common.errors import UserError
from picochat.sandbox import calculator, jail, require_isolation, run_python, unmet_requirements

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sandbox targets Linux")]
REPO = Path(__file__).resolve().parents[1]


def test_runs_honest_code_and_captures_output():
    r = run_python("import math, collections, typing, hashlib, json, re, random\nprint(math.factorial(5))\n"
                   "import sys; print('warn', file=sys.stderr)")
    assert r.status == "ok" and r.ok, r
    assert r.stdout == "120\n" and r.stderr == "warn\n"
    assert r.returncode == 0 and "rlimits" in r.isolation and "audit-hook" in r.isolation


def test_this_machine_gives_the_required_layers():
    """Root here and on CI (pyenv under /root, unreadable by nobody): the private root makes the
    drop to nobody possible, and every required layer is active."""
    r = run_python("import os\nprint(os.getuid(), os.getpid())")
    assert r.ok and unmet_requirements(r.isolation) == [], (r.isolation, r.missing)
    uid, pid = map(int, r.stdout.split())
    assert uid != 0 and 1 < pid < 10  # not root; a low pid: its own pid namespace (init is 1)
    assert {"pidns", "netns", "mountns", "unprivileged", "nproc", "output-cap"} <= set(r.isolation)
    if os.geteuid() == 0:
        assert int(uid) == jail.NOBODY


def test_private_root_shows_only_the_binds_and_the_box():
    code = ("import json, os\nprint(json.dumps([sorted(os.listdir('/')), os.path.exists('/proc/1'), "
            "os.path.exists('/etc/passwd'), os.getcwd()]))")
    r = run_python(code, audit=False, landlock=False)
    assert r.ok, r
    top, proc, passwd, box = json.loads(r.stdout)
    assert set(top) <= {"usr", "bin", "lib", "lib64", "lib32", "libx32", "etc", "dev", "root", "tmp", "home",
                        "opt"}, top  # /usr, loader links, /dev/null & co, the interpreter's prefix, the box
    assert not proc and not passwd
    assert not Path(box).exists()  # the box is gone afterwards


def test_humaneval_style_program_passes_and_failing_assert_is_error():
    solution = "def add(a, b):\n    return a + b\n"
    check = "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\ncheck(add)\n"
    assert run_python(solution + check).status == "ok"
    r = run_python("def add(a, b):\n    return a - b\n" + check)
    assert r.status == "error" and r.error.startswith("AssertionError")


def test_files_inside_the_box_work_and_it_is_thrown_away():
    r = run_python("import os\nopen('a.txt','w').write('hi')\nprint(open('a.txt').read(), os.getcwd())")
    assert r.status == "ok", r
    text, cwd = r.stdout.split()
    assert text == "hi" and not os.path.exists(cwd)


def test_the_box_is_size_limited():
    r = run_python(f"open('big', 'wb').write(b'x' * {jail.BOX_BYTES + (1 << 20)})", timeout=10.0)
    assert r.status == "error" and ("File too large" in r.stderr or "No space" in r.stderr), r


def test_infinite_loop_and_sleep_time_out():
    t0 = time.monotonic()
    assert run_python("while True:\n    pass\n", timeout=1.0).status == "timeout"
    assert run_python("import time\ntime.sleep(60)", timeout=1.0).status == "timeout"
    assert time.monotonic() - t0 < 60  # generous bound: only "it did not hang"


def test_deep_recursion_is_an_error_not_a_crash_of_the_host():
    r = run_python("def f(n):\n    return f(n + 1)\nf(0)")
    assert r.status == "error" and "RecursionError" in r.error
    r = run_python("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)", timeout=3.0)
    assert r.status in ("error", "memory", "timeout")


def test_large_programs_arrive_whole():
    code = "x = 1\n" + "# padding\n" * 40_000 + "print(x + 1)\n"  # ~400 KB: far past a pipe buffer
    r = run_python(code)
    assert r.ok and r.stdout == "2\n", r


def test_syntax_error_is_reported():
    r = run_python("def f(:\n")
    assert r.status == "error" and "SyntaxError" in r.error


def test_audit_hook_refuses_with_a_clear_error():
    for code in ("import os\nos.system('true')", "import ctypes", "import _xxsubinterpreters",
                 "import socket\nsocket.socket()", "open('/etc/hostname')"):
        r = run_python(code)
        assert r.status == "error" and "PermissionError: sandbox:" in r.error, (code, r.error)


# ----------------------------------------------------------------------------- escapes


@pytest.mark.parametrize("mode", list(escapes.MODES))
@pytest.mark.parametrize("name", list(escapes.ESCAPES))
def test_escape_is_contained(name, mode, tmp_path):
    """Every escape, with all layers and with the kernel layers alone (the audit hook off, as
    after a subinterpreter or ctypes got past it), for the caller that runs the suite."""
    os.chmod(tmp_path, 0o755)
    outcome = escapes.ESCAPES[name](escapes.MODES[mode], tmp_path)
    if mode in ("all", "os"):
        assert outcome == "contained", outcome
    else:  # one kernel layer family alone: it holds where it claims to
        assert not outcome.startswith("ESCAPED"), outcome


@pytest.mark.parametrize("name", ["write_outside", "read_outside", "signal_parent", "network", "subinterpreter",
                                  "exec_shell", "new_namespace"])
def test_escape_probes_detect_a_real_escape(name, tmp_path):
    """The probes are not blind: with the optional layers off (as root, where nothing else
    stops it) each escape does happen and is detected."""
    if os.geteuid() != 0:
        pytest.skip("as a non-root user the file permissions and uid alone already stop some of these")
    os.chmod(tmp_path, 0o755)
    assert escapes.ESCAPES[name](escapes.NO_LAYERS, tmp_path).startswith("n/a (escaped)")


def _readable_python() -> str | None:
    """An interpreter (3.11+) a non-root user can run: ours if world-readable, else the system's."""
    for exe in (jail.interpreter(), "/usr/bin/python3", "/usr/local/bin/python3"):
        exe = os.path.realpath(exe) if os.path.exists(exe) else ""
        if exe and jail.world_readable(exe) and all(jail.world_readable(p) for p in jail.read_roots(exe)):
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                                 capture_output=True, text=True)
            if out.stdout.strip() == "True":
                return exe
    return None


def test_escapes_are_contained_for_a_non_root_caller():
    """The same escapes, and the grader against the cheating replies, with the suite's caller
    switched to uid 65534 (setpriv), on a copy of the sandbox package that user can read: the
    user-namespace path of every layer."""
    setpriv, exe = shutil.which("setpriv"), _readable_python()
    if os.geteuid() != 0 or setpriv is None or exe is None:
        pytest.skip("needs root, setpriv and a Python 3.11+ that uid 65534 can read "
                    "(run the suite as a non-root user to test that path directly)")
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        for rel in ("picochat/__init__.py", "picochat/common/__init__.py", "picochat/common/errors.py",
                    *(str(p.relative_to(REPO)) for p in (REPO / "picochat/sandbox").glob("*.py"))):
            Path(d, rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, Path(d, rel))
        shutil.copy(REPO / "tests/helpers/escapes.py", Path(d, "escapes.py"))
        shutil.copy(REPO / "tests/helpers/cheats.py", Path(d, "cheats.py"))
        subprocess.run(["chmod", "-R", "a+rX", d], check=True)
        out = subprocess.run([setpriv, f"--reuid={jail.NOBODY}", f"--regid={jail.NOBODY}", "--clear-groups",
                              "env", "-i", "PATH=/usr/bin:/bin", f"PYTHONPATH={d}", exe, "escapes.py", *escapes.MODES],
                             cwd=d, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["uid"] == jail.NOBODY
    assert "userns" in report["isolation"] and unmet_requirements(tuple(report["isolation"])) == []
    bad = {k: v for k, v in report["outcomes"].items()
           if v.startswith("ESCAPED") or (k.split()[1] in ("all", "os") and v != "contained")}
    assert not bad, bad
    grades = report["grading"]  # the grader, run by uid 65534: the honest reply passes, no cheat does
    assert grades.pop("honest") is True and len(grades) >= 10 and not any(grades.values()), grades


# ----------------------------------------------------------------------------- isolation policy


def test_required_isolation_refused_unless_unsafe(monkeypatch):
    weak = jail.SandboxResult("ok", isolation=("rlimits", "audit-hook", "output-cap"),
                              missing=(("namespaces", "unshare: Operation not permitted"),))
    monkeypatch.setattr(jail, "probe", lambda: weak)
    monkeypatch.setattr("picochat.sandbox.probe", lambda: weak)
    with pytest.raises(UserError) as e:
        require_isolation(unsafe=False)
    msg = str(e.value)
    assert "--unsafe-sandbox" in msg and "unshare: Operation not permitted" in msg and "\n" not in msg
    record = require_isolation(unsafe=True)
    assert record["unsafe"] and "a non-root uid without capabilities" in record["unmet"]


def test_required_isolation_passes_here():
    record = require_isolation(unsafe=False)
    assert record["unmet"] == [] and not record["unsafe"] and "mountns" in record["layers"]


# ---------------------------------------------------------------------------------------------
# calculator


@pytest.mark.parametrize("expr,expected", [
    ("1+2*3", "7"), ("(1+2)*3", "9"), ("12/4", "3.0"), ("7//2", "3"), ("7%3", "1"), ("-3//2", "-2"),
    ("2**10", "1024"), ("2**-2", "0.25"), ("1,234 + 1", "1235"), ("3.5*2", "7.0"), ("-(4)", "-4"),
    ('"strawberry".count("r")', "3"), ("'banana'.count('an')", "2"), ('len("hello")', "5"),
    ('"Hello".lower()', "hello"),
])
def test_calculator_values(expr, expected):
    assert calculator(expr) == expected


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "().__class__.__bases__", "open('/etc/passwd').read()",
    "x + 1", "[1, 2]", "lambda: 1", "'a' * 10**9", "9**9**9", "10**5000", "2.0**5000", "1e308*10",
    "1/0", "True + 1", "'abc'.__len__()", "'abc'.replace('a', 'b')", "'a'.count(x)", "", "1 +",
    "(" * 500 + "1" + ")" * 500, "1" * 600,
])
def test_calculator_rejects(expr):
    assert calculator(expr) is None
