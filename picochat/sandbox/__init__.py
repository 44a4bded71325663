"""Running model-written code: the sandbox (below engine, tasks, train and eval in the layering).

- `run_python(code)`: run a program in a throw-away, isolated process (picochat/sandbox/jail.py
  starts it, picochat/sandbox/child.py sets it up).
- `grade_function(...)`: grade a reply against a problem's unit tests so that the reply cannot
  decide its own verdict (picochat/sandbox/grading.py explains the two-process protocol).
- `calculator(expr)`: the engine's tool; evaluates an AST whitelist, never runs code.
- `require_isolation(unsafe)`: what evals and RL call before they grade anything.

Isolation layers of a sandboxed process, each reported by name in `SandboxResult.isolation`
(a layer that could not be set up is listed in `.missing` with the reason):

- `netns`, `ipcns`, `pidns`, `mountns` (+ `userns` for a non-root caller): the process gets
  its own network (a downed loopback only), SysV IPC, process and mount namespaces. The mount
  namespace holds a private root: an empty read-only tmpfs with read-only binds of /usr, the
  loader's libraries, /dev/null & co and the interpreter's own prefix (bound at its real path,
  under directories `nobody` can traverse, so a Python installed in a private home such as
  /root/.pyenv works), plus a small writable tmpfs "box" as the working directory. The host's
  files, /proc, the caller's home and the other sandboxes do not exist in it. When the pid
  namespace's init exits, the kernel kills every process left in it: no daemon survives a run.
- `unprivileged` + `nproc`: as root the code runs as `nobody` (65534); as a normal user inside
  the user namespace with every capability dropped. RLIMIT_NPROC = 0 then forbids new processes
  (the kernel exempts only root and CAP_SYS_RESOURCE/CAP_SYS_ADMIN holders), and threads too,
  which the kernel counts alike: sandboxed code is single-threaded.
- `rlimits`: address space, CPU seconds, file size, open files, no core dumps.
- `no-new-privs`, `landlock-abi<N>` (+ `landlock-net`, `landlock-signal`): Landlock (Linux 5.13+)
  allows reads only under the bound paths and writes only in the box, and, where the kernel's
  ABI has them, no TCP bind/connect and no signals or abstract unix sockets outside the
  process; it stands in for the namespaces where those cannot be created.
- `seccomp` (x86_64): a syscall filter refusing new namespaces, mounts, ptrace, bpf, perf,
  userfaultfd, keyrings, io_uring and module loading; foreign-ABI syscalls kill the process.
- `audit-hook`: a CPython audit hook (PEP 578) refusing process creation, signals, sockets,
  ctypes, subinterpreters and files outside the box. It is *not* a boundary (a subinterpreter
  or ctypes gets past it); it makes the common accidents fail with a clear error.
- `output-cap`: the parent reads stdout and stderr of every process of a run and kills them all
  once together they pass OUTPUT_LIMIT bytes; a wall-clock deadline kills them too.

Evals and RL require the layers in `jail.REQUIRED` (a mount namespace *or* Landlock, etc.) and
refuse to run below them unless the user passes `--unsafe-sandbox`.
"""

from __future__ import annotations

from picochat.common.errors import UserError
from picochat.sandbox.calculator import calculator
from picochat.sandbox.grading import Verdict, grade_function
from picochat.sandbox.jail import NOBODY, OUTPUT_LIMIT, SandboxResult, probe, run_python, unmet_requirements

__all__ = ["NOBODY", "OUTPUT_LIMIT", "SandboxResult", "Verdict", "calculator", "grade_function",
           "isolation_record", "require_isolation", "run_python", "unmet_requirements"]


def require_isolation(unsafe: bool) -> dict:
    """Check that this machine gives sandboxed code the required isolation (jail.REQUIRED);
    raise a UserError saying what is missing unless `unsafe`. Returns `isolation_record`."""
    result = probe()
    unmet = unmet_requirements(result.isolation)
    if unmet and not unsafe:
        why = "; ".join(f"{layer}: {reason}" for layer, reason in result.missing) or result.error
        raise UserError(f"the code sandbox lacks {', '.join(unmet)} on this machine ({why}); run as root or "
                        "where user namespaces or Landlock are allowed, or pass --unsafe-sandbox to run "
                        "model-written code with only the layers that are active")
    return isolation_record(result.isolation, unsafe and bool(unmet))


def isolation_record(layers: tuple[str, ...], unsafe: bool) -> dict:
    """What evals and RL write beside their results: the layers and whether they were enough."""
    return {"layers": list(layers), "unmet": unmet_requirements(layers), "unsafe": unsafe}
