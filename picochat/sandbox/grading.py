"""Grading a function the model wrote, with the verdict out of the function's reach.

Running the reply and its unit tests in one process and reading "passed" off the exit status
lets the reply decide its own grade: it can exit(0) before the checks, disable them (a tracing
hook, a replaced `check`, patched builtins), or return objects whose `__eq__` is always True.
Inside one process no secret survives either: whatever the harness can read (a nonce, an fd),
code running in the same process can read first. So the checks and the candidate never share
a process:

    parent ──spawn──► checker (trusted: the problem's prompt + tests)    verdict fd ──► parent
                         │  candidate(*args) = request ▼   ▲ reply = a plain value
                      candidate (untrusted: the reply's code, then a small call server)

- The **checker** runs the dataset's `check(candidate)` where `candidate` is a proxy: each call
  sends its arguments to the candidate's process and gets back a value through
  `picochat.sandbox.codec`, which carries exact built-in types only (no subclass, no custom
  `__eq__`), so every comparison in the tests is the built-in one. The entry point's global
  name is bound to the proxy too (some tests call it by name).
- The **candidate** process runs the reply, then serves calls. It never sees the tests, the
  verdict fd or the checker's process (its own PID, mount and network namespaces). Whatever it
  does to its own interpreter changes only what it answers; exiting early, hanging or sending
  garbage makes the checker's call raise.
- **Pass** is one line, `PASS <nonce> <calls>`, written by the checker on a fd only it holds,
  after `check` returned and only if the candidate was called at least once; the nonce is
  fresh per run (the line cannot be replayed into another run). Exit statuses and stdout do
  not count.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from picochat.sandbox.jail import SandboxResult, finish, kill, pump, start

CODEC_SOURCE = (Path(__file__).with_name("codec.py")).read_text

# Runs in the candidate's process after the reply's code, in a namespace of its own (the
# reply's globals are `user_globals`): fd 3 carries requests in, fd 4 replies out.
SERVER = r'''
import os as _os

def _serve(entry, user_globals):
    fn = user_globals.get(entry)
    while True:
        msg = read_frame(lambda n: _os.read(3, n))
        if msg is None:
            return
        call_id = msg[1] if type(msg) is list and len(msg) == 4 else None
        try:
            if not callable(fn):
                raise NameError(f"name {entry!r} is not defined by the reply")
            out = ["ret", call_id, encode(fn(*decode(msg[2]), **decode(msg[3])))]
        except BaseException as e:
            try:
                text = str(e)[:1000]
            except BaseException:
                text = "(unprintable)"
            out = ["raise", call_id, type(e).__name__, text]
        data = dumps(out)
        while data:
            data = data[_os.write(4, data):]
'''

# The checker: trusted code. fd 3 carries requests out, fd 4 replies in, fd 5 is the verdict.
CHECKER = r'''
import builtins as _builtins, os as _os, secrets as _secrets


class CandidateError(Exception):
    """The candidate's process did not answer a call as the protocol says."""


_calls = 0


def candidate(*args, **kwargs):
    global _calls
    _calls += 1
    call_id = _secrets.token_hex(8)
    data = dumps(["call", call_id, encode(list(args)), encode(dict(kwargs))])
    while data:
        data = data[_os.write(3, data):]
    msg = read_frame(lambda n: _os.read(4, n))
    if msg is None:
        raise CandidateError("the candidate's process ended before answering")
    if type(msg) is not list or len(msg) < 3 or msg[1] != call_id:
        raise CandidateError("the candidate's reply is out of protocol")
    if msg[0] == "ret" and len(msg) == 3:
        return decode(msg[2])
    if msg[0] == "raise" and len(msg) == 4 and type(msg[2]) is str and type(msg[3]) is str:
        cls = getattr(_builtins, msg[2], None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = CandidateError
        raise cls(msg[3])
    raise CandidateError("the candidate's reply is out of protocol")


_ns = {"__name__": "__checker__"}
exec(compile(PROMPT, "<prompt>", "exec"), _ns)
_ns[ENTRY] = candidate
exec(compile(TEST, "<test>", "exec"), _ns)
_ns["check"](candidate)
if _calls == 0:
    raise AssertionError("check() never called the candidate")
_os.write(5, ("PASS %s %d\n" % (NONCE, _calls)).encode())
'''


@dataclass
class Verdict:
    """The grade of one reply, and what both processes did."""

    passed: bool
    reason: str  # why it failed ("" when it passed)
    calls: int  # candidate calls the tests made
    isolation: tuple[str, ...] = ()  # layers active in both processes
    missing: tuple[tuple[str, str], ...] = ()
    checker: SandboxResult | None = field(default=None, repr=False)
    candidate: SandboxResult | None = field(default=None, repr=False)


def checker_program(prompt: str, test: str, entry_point: str, nonce: str) -> str:
    return (CODEC_SOURCE() + f"\nPROMPT = {prompt!r}\nTEST = {test!r}\nENTRY = {entry_point!r}\n"
            f"NONCE = {nonce!r}\n" + CHECKER)


def grade_function(candidate_code: str, *, entry_point: str, prompt: str, test: str, timeout: float = 10.0,
                   memory_mb: int = 512, **layers: bool) -> Verdict:
    """Run `candidate_code` (the reply) and the problem's tests in two sandboxes; see the module
    docstring. `layers` (audit/namespaces/landlock = False) leave a layer out, for tests."""
    nonce = secrets.token_hex(16)
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    driver = CODEC_SOURCE() + SERVER + f"\n_serve({entry_point!r}, user_globals)\n"
    children = []
    try:
        children.append(start(candidate_code, timeout=timeout, memory_mb=memory_mb, extra_fds=(req_r, resp_w),
                              driver=driver, **layers))
        children.append(start(checker_program(prompt, test, entry_point, nonce), timeout=timeout,
                              memory_mb=memory_mb, extra_fds=(req_w, resp_r, verdict_w), **layers))
    except BaseException:
        for child in children:  # the candidate started, the checker did not
            kill(child)
            finish(child, False, False)
        os.close(verdict_r)
        raise
    finally:
        for fd in (req_r, req_w, resp_r, resp_w, verdict_w):
            os.close(fd)
    cand, checker = children
    verdict = bytearray()
    timed_out, capped = pump([checker, cand], time.monotonic() + timeout, side={verdict_r: verdict},
                             primary=checker)
    os.close(verdict_r)
    c_res, k_res = finish(checker, timed_out, capped), finish(cand, timed_out, capped)
    return decide(bytes(verdict), nonce, c_res, k_res)


def decide(verdict: bytes, nonce: str, checker: SandboxResult, candidate: SandboxResult) -> Verdict:
    """Passed only with the checker's own PASS line for this nonce and a clean checker exit."""
    isolation = tuple(layer for layer in checker.isolation if layer in candidate.isolation)
    missing = tuple(dict.fromkeys(checker.missing + candidate.missing))

    def verdict_of(passed: bool, reason: str, calls: int = 0) -> Verdict:
        return Verdict(passed, reason, calls, isolation, missing, checker, candidate)

    parts = verdict.decode("ascii", "replace").split()
    if not checker.ok:
        why = checker.error or checker.status
        said = candidate.stderr.strip().splitlines()
        if said and "Candidate" in why:  # what the candidate's process said before it stopped answering
            why += f" (candidate: {said[-1][:200]})"
        return verdict_of(False, why)
    if len(parts) != 3 or parts[0] != "PASS" or parts[1] != nonce or not parts[2].isdigit():
        return verdict_of(False, "the checker wrote no verdict")
    return verdict_of(True, "", int(parts[2]))
