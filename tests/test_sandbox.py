"""The sandbox must run honest code and contain dishonest code, always within a bounded time."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from picochat.sandbox import calculator, run_python
from picochat.sandbox import jail as sandbox

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sandbox targets Linux")]


def test_runs_honest_code_and_captures_output():
    r = run_python("import math, collections, typing\nprint(math.factorial(5))\n"
                   "import sys; print('warn', file=sys.stderr)")
    assert r.status == "ok" and r.ok
    assert r.stdout == "120\n" and r.stderr == "warn\n"
    assert r.returncode == 0 and "rlimits" in r.isolation and "audit-hook" in r.isolation


def test_humaneval_style_program_passes_and_failing_assert_is_error():
    solution = "def add(a, b):\n    return a + b\n"
    check = "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\ncheck(add)\n"
    assert run_python(solution + check).status == "ok"
    r = run_python("def add(a, b):\n    return a - b\n" + check)
    assert r.status == "error" and r.error.startswith("AssertionError")


def test_files_inside_the_sandbox_dir_work_and_it_is_thrown_away():
    r = run_python("import os\nopen('a.txt','w').write('hi')\nprint(open('a.txt').read(), os.getcwd())")
    assert r.status == "ok"
    text, cwd = r.stdout.split()
    assert text == "hi" and not os.path.exists(cwd)  # the working dir is deleted afterwards


def test_infinite_loop_times_out():
    t0 = time.monotonic()
    r = run_python("while True:\n    pass\n", timeout=1.0)
    assert r.status == "timeout"
    assert time.monotonic() - t0 < 30  # generous bound: only "it did not hang"


def test_sleep_times_out():
    assert run_python("import time\ntime.sleep(60)", timeout=1.0).status == "timeout"


def test_huge_allocation_is_memory_status():
    r = run_python("x = bytearray(8 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert r.status == "memory" and "allocated" not in r.stdout


def test_fork_bomb_is_refused():
    r = run_python("import os\nwhile True:\n    os.fork()\n", timeout=3.0)
    assert r.status == "error" and "fork" in r.error


def test_reading_outside_the_sandbox_is_refused():
    r = run_python("print(open('/etc/passwd').read())")
    assert r.status == "error" and "PermissionError" in r.error and "root:" not in r.stdout
    r = run_python("import _io\nprint(_io.FileIO('/etc/passwd').read())")  # lower-level open
    assert r.status == "error" and "root:" not in r.stdout


def test_writing_outside_the_sandbox_is_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    r = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert r.status == "error" and not target.exists()
    r = run_python(f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')")
    assert r.status == "error" and not target.exists()


def test_deleting_outside_the_sandbox_is_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    for code in (f"import os\nos.remove({str(victim)!r})",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                 f"import os\nos.rename({str(victim)!r}, 'stolen.txt')"):
        assert run_python(code).status == "error"
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("code", [
    "import os\nos.system('touch {marker}')",
    "import posix\nposix.system('touch {marker}')",
    "import subprocess\nsubprocess.run(['touch', '{marker}'])",
    "import os\nos.execv('/usr/bin/touch', ['touch', '{marker}'])",
    "import os\nos.posix_spawn('/usr/bin/touch', ['touch', '{marker}'], {{}})",
    "import ctypes\nctypes.CDLL(None).system(b'touch {marker}')",
])
def test_process_creation_is_refused(tmp_path, code):
    marker = tmp_path / "ran"
    r = run_python(code.format(marker=marker))
    assert r.status == "error" and not marker.exists()


def _listener() -> socket.socket:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.setblocking(False)
    return srv


def _was_contacted(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
        conn.close()
        return True
    except BlockingIOError:
        return False


def test_socket_connect_to_local_listener_fails():
    srv = _listener()
    port = srv.getsockname()[1]
    try:
        r = run_python(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                       "s.sendall(b'hello')\nprint('connected')")
        assert r.status == "error" and "connected" not in r.stdout
        assert not _was_contacted(srv)
    finally:
        srv.close()


def test_network_namespace_alone_blocks_connect():
    """The kernel layer on its own, without the audit hook, must also stop the connection."""
    probe = sandbox._run("print('x')", 5.0, 512, audit=False)
    if "netns" not in probe.isolation:
        pytest.skip("no network namespace available on this machine")
    srv = _listener()
    port = srv.getsockname()[1]
    try:
        r = sandbox._run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                         "print('connected')", 5.0, 512, audit=False)
        assert r.status == "error" and "connected" not in r.stdout
        assert not _was_contacted(srv)
    finally:
        srv.close()


def _system_python_for_nobody(monkeypatch) -> None:
    """Root only: run the child on an interpreter whose library `nobody` can read, so the
    privilege drop (layer 3) is active, and check that layer with the audit hook off."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the privilege drop applies only when the evaluator runs as root")
    for exe in ("/usr/bin/python3", "/usr/local/bin/python3"):
        real = os.path.realpath(exe)
        if os.path.exists(real) and sandbox._drop_to(sandbox._read_roots(real)) is not None:
            monkeypatch.setattr(sandbox, "_interpreter", lambda real=real: real)
            return
    pytest.skip("no interpreter whose standard library `nobody` can read")


def test_privilege_drop_alone_protects_files_and_blocks_fork(tmp_path, monkeypatch):
    _system_python_for_nobody(monkeypatch)
    os.chmod(tmp_path, 0o700)
    target = tmp_path / "pwned.txt"
    r = sandbox._run("import os, json\nprint(os.getuid())", 5.0, 512, audit=False)
    assert r.status == "ok" and r.stdout.strip() == str(sandbox.NOBODY) and "nobody" in r.isolation
    r = sandbox._run(f"open({str(target)!r}, 'w').write('x')", 5.0, 512, audit=False)
    assert r.status == "error" and "PermissionError" in r.error and not target.exists()
    # one fork attempt, never a loop: if it wrongly succeeded, the child exits at once
    r = sandbox._run("import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nprint('forked')",
                     5.0, 512, audit=False)
    assert r.status == "error" and "forked" not in r.stdout
    assert run_python("import math\nprint(math.gcd(12, 18))").stdout == "6\n"  # all layers together


def test_deep_recursion_is_an_error_not_a_crash_of_the_host():
    r = run_python("def f(n):\n    return f(n + 1)\nf(0)")
    assert r.status == "error" and "RecursionError" in r.error
    # with the limit lifted, frames pile up until the memory or time limit stops the child
    r = run_python("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)", timeout=3.0)
    assert r.status in ("error", "memory", "timeout")


def test_output_flood_is_capped():
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout=3.0)
    assert r.status in ("timeout", "error")
    assert len(r.stdout) <= sandbox.OUTPUT_LIMIT + 100


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("PICOCHAT_SECRET_TOKEN", "hunter2")
    r = run_python("import os\nprint(sorted(os.environ))")
    assert r.status == "ok" and "PICOCHAT_SECRET_TOKEN" not in r.stdout


def test_syntax_error_is_reported():
    r = run_python("def f(:\n")
    assert r.status == "error" and "SyntaxError" in r.error


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
