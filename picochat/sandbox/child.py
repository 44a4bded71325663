"""The sandbox's child process: sets up every isolation layer, reports which ones hold, then
runs the untrusted code. Standard library only: the parent passes this file's *text* as
`python -I -S -B -c <text> <params-json>`, so nothing of picochat is importable (or needed)
inside the sandbox. Read picochat/sandbox/__init__.py first for the layers and why.

Process tree when namespaces are available (the parent kills the whole tree on timeout):

    launcher (trusted; new mount/net/ipc/uts ns; waits)
      └─ init (trusted; pid 1 of a new pid ns; builds the private root, pivots into it; waits)
           └─ worker (drops privileges, limits, no_new_privs, Landlock, audit hook; runs the code)

The worker is not pid 1 on purpose: pid 1 ignores signals it has no handler for, which would
defeat RLIMIT_CPU's SIGXCPU. When pid 1 exits the kernel kills everything left in its pid
namespace, so no daemon outlives a run. Without namespaces the launcher is the worker.

The setup report goes to a pipe that the worker closes *before* the untrusted code runs, so the
code cannot forge the list of active layers.
"""

import json
import os
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
# statvfs f_flag bits a read-only remount of a bind mount must keep (they are "locked" in a user ns)
KEEP_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096  # + NOATIME NODIRATIME RELATIME
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (same on every arch)
# Landlock access rights (linux/landlock.h); each ABI version adds some
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1, 2
# seccomp (x86_64): syscalls sandboxed code has no use for, that widen the kernel's attack
# surface or reach other processes: namespaces (unshare, setns, clone with CLONE_NEW*), mounts,
# ptrace and process_vm_*, bpf, perf, userfaultfd, keyrings, io_uring, modules, kexec, acct,
# reboot, syslog, handle-based opens. They fail with EPERM; clone3 with ENOSYS (its flags are
# behind a pointer, so libc falls back to clone, whose flags we can check).
SECCOMP_ARCH = {"x86_64": 0xC000003E}
SECCOMP_DENY = {"x86_64": (101, 310, 311, 165, 166, 155, 272, 308, 321, 298, 323, 248, 249, 250, 246, 320, 175,
                           313, 176, 425, 426, 427, 303, 304, 428, 429, 430, 431, 432, 433, 434, 163, 169, 103)}
SYS_CLONE, SYS_CLONE3 = {"x86_64": 56}, 435
CLONE_NEW_ANY = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | 0x02000000


class Setup:
    """What the layers need: libc through ctypes, and the list of layers that took / failed."""

    def __init__(self, p):
        self.p, self.active, self.missing = p, [], []
        try:
            import ctypes

            self.ctypes = ctypes
            self.libc = ctypes.CDLL(None, use_errno=True)
        except (ImportError, OSError) as e:
            self.ctypes = self.libc = None
            self.missing.append(["kernel-calls", f"ctypes unavailable ({e})"])

    def call(self, name, *args):
        """libc `name(*args)`; raises OSError with errno on failure."""
        if self.libc is None:
            raise OSError(38, "no ctypes")
        r = getattr(self.libc, name)(*args)
        if r == -1:
            err = self.ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return r

    def mount(self, src, dst, fstype, flags, data=None):
        enc = (lambda s: None if s is None else s.encode())
        self.libc.mount.argtypes = [self.ctypes.c_char_p] * 3 + [self.ctypes.c_ulong, self.ctypes.c_char_p]
        self.call("mount", enc(src), enc(dst), enc(fstype), flags, enc(data))

    def ok(self, layer):
        self.active.append(layer)

    def fail(self, layer, why):
        self.missing.append([layer, str(why)])


def read_code():
    """The untrusted code arrives on stdin; afterwards stdin is /dev/null."""
    chunks = []
    while True:
        b = os.read(0, 1 << 16)
        if not b:
            break
        chunks.append(b)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return b"".join(chunks).decode("utf-8", "surrogatepass")


def enter_namespaces(s):
    """unshare mount/pid/net/ipc/uts (plus a user ns when not root). True if it worked."""
    root = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.geteuid(), os.getegid()
    try:
        s.call("unshare", flags | (0 if root else CLONE_NEWUSER))
    except OSError as e:
        s.fail("namespaces", f"unshare: {e.strerror}")
        return False
    if not root:  # map ourselves to root of the new user ns: caps there, none on the host
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
            s.ok("userns")
        except OSError as e:  # unmapped we are the overflow uid: no privileges, but no mounts either
            s.fail("userns", f"uid map: {e.strerror or e}")
    s.active += ["netns", "ipcns"]
    return True


def wait_and_exit(pid, close_fds):
    """The trusted parent of a namespace level: close what the child needs alone, wait, exit alike."""
    for fd in close_fds:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def build_root(s, p):
    """Pivot into a fresh tmpfs root holding only read-only binds of the read roots and a
    writable tmpfs box; the host's files, /proc and the caller's home are simply absent."""
    new, box = p["mountpoint"], p["box"]
    s.mount(None, "/", None, MS_REC | MS_PRIVATE)
    s.mount("sandbox", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for src in p["binds"]:
        dst = new + src
        if os.path.isdir(src):
            os.makedirs(dst, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
            open(dst, "w").close()
        s.mount(src, dst, None, MS_BIND | MS_REC)
        locked = os.statvfs(dst).f_flag & KEEP_FLAGS
        s.mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | locked)
    for path, target in p["symlinks"]:
        os.makedirs(os.path.dirname(new + path), mode=0o755, exist_ok=True)
        os.symlink(target, new + path)
    os.makedirs(new + box, mode=0o700)
    s.mount("box", new + box, "tmpfs", MS_NOSUID | MS_NODEV,
            f"size={p['box_bytes']},nr_inodes=4096,mode=0700")
    uid = p["drop_to"] if p["drop_to"] is not None else os.geteuid()
    os.chown(new + box, uid, uid)
    s.mount(None, new, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m")
    os.chdir(new)
    nr = SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"pivot_root number unknown on {os.uname().machine}")
    s.call("syscall", nr, b".", b".")  # stack the old root under the new one, then drop it
    s.call("umount2", b".", MNT_DETACH)
    os.chdir("/")


def namespace_levels(s, p, close_fds):
    """Launcher -> init -> worker. Returns in the worker only."""
    if not enter_namespaces(s):
        return
    pid = os.fork()
    if pid:
        wait_and_exit(pid, close_fds)
    s.ok("pidns")  # we are pid 1 of the new pid ns
    try:
        build_root(s, p)
        s.ok("mountns")
    except OSError as e:
        s.fail("mountns", f"private root: {e.strerror or e}")
    pid = os.fork()
    if pid:
        wait_and_exit(pid, close_fds)


def arrange_fds(p):
    """The fds the code may use become 3, 4, ...; the setup report fd follows them; every other
    inherited fd is closed. Returns the report fd."""
    import fcntl

    fds = p["extra_fds"] + [p["report_fd"]]
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # out of the way of 3, 4, ...
    for i, fd in enumerate(moved):
        os.dup2(fd, 3 + i)
    os.closerange(3 + len(moved), os.sysconf("SC_OPEN_MAX"))
    return 3 + len(fds) - 1


def limits(s, p):
    import resource

    try:
        for name, soft, hard in p["limits"]:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        s.ok("rlimits")
    except (ValueError, OSError) as e:
        s.fail("rlimits", e)


def drop_privileges(s, p):
    """As root: become `nobody`. In a user ns: drop every capability (our uid there maps to the
    caller's own uid on the host). RLIMIT_NPROC then binds: the kernel exempts only root and
    holders of CAP_SYS_RESOURCE/CAP_SYS_ADMIN in the initial user ns."""
    userns = "userns" in s.active
    try:
        if userns:
            for cap in range(64):
                try:
                    s.call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
                except OSError:
                    break  # past the last capability this kernel knows
            header = (s.ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
            s.call("capset", header, (s.ctypes.c_uint32 * 6)())  # effective/permitted/inheritable = 0
        elif p["drop_to"] is not None and os.geteuid() == 0 and ("mountns" in s.active or p["world_readable"]):
            os.setgroups([])
            os.setgid(p["drop_to"])
            os.setuid(p["drop_to"])
    except OSError as e:
        s.fail("unprivileged", e)
        return
    if os.getuid() == 0 and not userns:
        s.fail("unprivileged", "still root: no interpreter `nobody` can read and no mount namespace to "
                               "bind one in")
        return
    s.ok("unprivileged")
    s.ok("nproc")


def no_new_privs(s):
    try:
        s.call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        s.ok("no-new-privs")
    except OSError as e:
        s.fail("no-new-privs", e)


def landlock(s, p):
    """Landlock: reads only under the read roots, writes only in the box, no TCP, no signals or
    abstract unix sockets beyond this process (as far as the kernel's ABI version allows)."""
    ct = s.ctypes
    try:
        abi = s.call("syscall", SYS_LANDLOCK[0], None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    except OSError as e:
        s.fail("landlock", f"not available ({e.strerror})")
        return
    fs = FS_RIGHTS_BY_ABI[max(k for k in FS_RIGHTS_BY_ABI if k <= abi)]
    attr = (ct.c_uint64 * 3)(fs, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                             SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    try:
        rules = s.call("syscall", SYS_LANDLOCK[0], attr, size, 0)
        read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
        file_rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (fs & (1 << 14 | 1 << 15))
        for path, rights in [(r, read) for r in p["binds"]] + [("/dev/null", FS_READ_FILE | FS_WRITE_FILE),
                                                                     (p["box"], fs)]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            if not os.path.isdir(path):
                rights &= file_rights
            rule = ct.create_string_buffer(12)  # struct landlock_path_beneath_attr is packed
            ct.memmove(rule, (ct.c_uint64 * 1)(rights), 8)
            ct.memmove(ct.byref(rule, 8), (ct.c_int32 * 1)(fd), 4)
            s.call("syscall", SYS_LANDLOCK[1], rules, 1, rule, 0)
            os.close(fd)
        s.call("syscall", SYS_LANDLOCK[2], rules, 0)
        os.close(rules)
    except OSError as e:
        s.fail("landlock", e)
        return
    s.active += ["landlock", f"landlock-abi{abi}"]
    s.active += (["landlock-net"] if abi >= 4 else []) + (["landlock-signal"] if abi >= 6 else [])


def seccomp(s):
    """A classic-BPF seccomp filter (linux/seccomp.h): the syscalls of SECCOMP_DENY fail; a
    syscall of another ABI (i386, x32) kills the process."""
    machine = os.uname().machine
    if machine not in SECCOMP_ARCH:
        s.fail("seccomp", f"no syscall table for {machine}")
        return
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, errno = 0x7FFF0000, 0x80000000, 0x00050000
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, SECCOMP_ARCH[machine]), (ret, 0, 0, kill),  # seccomp_data.arch
            (ld, 0, 0, 0), (jge, 0, 1, 0x40000000), (ret, 0, 0, kill)]  # .nr; x32 calls
    for nr in SECCOMP_DENY[machine]:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, errno | 1)]  # EPERM
    prog += [(jeq, 0, 1, SYS_CLONE3), (ret, 0, 0, errno | 38)]  # ENOSYS
    prog += [(jeq, 0, 3, SYS_CLONE[machine]), (ld, 0, 0, 16), (jset, 0, 1, CLONE_NEW_ANY),  # clone's flags
             (ret, 0, 0, errno | 1), (ret, 0, 0, allow)]
    ct = s.ctypes

    class Filter(ct.Structure):
        _fields_ = [("code", ct.c_uint16), ("jt", ct.c_uint8), ("jf", ct.c_uint8), ("k", ct.c_uint32)]

    class Program(ct.Structure):
        _fields_ = [("len", ct.c_ushort), ("filter", ct.POINTER(Filter))]

    filters = (Filter * len(prog))(*[Filter(*f) for f in prog])
    try:
        s.call("prctl", 22, 2, ct.byref(Program(len(prog), filters)), 0, 0)  # PR_SET_SECCOMP, MODE_FILTER
        s.ok("seccomp")
    except OSError as e:
        s.fail("seccomp", e)


def install_audit_hook(p):
    """The second layer (PEP 578): refuses process creation, signals, sockets, ctypes and file
    access outside the box/read roots inside this interpreter. Not a boundary by itself."""
    box, roots = p["box"], tuple(p["read_roots"])
    deny_events, deny_prefixes = frozenset(p["deny_events"]), tuple(p["deny_prefixes"])
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

    sys.addaudithook(hook)


def setup(p):
    """Every layer, in order; returns the code to run. The report fd is closed on return."""
    code = read_code()
    s = Setup(p)
    report = arrange_fds(p)
    if p["namespaces"] and s.libc is not None:
        namespace_levels(s, p, close_fds=list(range(3, report + 1)))
    if s.libc is not None:
        try:
            s.call("prctl", PR_SET_PDEATHSIG, 9, 0, 0, 0)  # our parent dies -> we die
        except OSError:
            pass
    os.chdir(p["box"])
    limits(s, p)
    drop_privileges(s, p)
    if s.libc is not None:
        no_new_privs(s)
        if p["landlock"]:
            landlock(s, p)
        if p["seccomp"] and "no-new-privs" in s.active:  # the kernel requires it for an unprivileged filter
            seccomp(s)
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
            del sys.modules[name]  # the untrusted code must import ctypes itself (the hook refuses)
        del s.libc, s.ctypes
    if p["audit"]:
        install_audit_hook(p)
        s.ok("audit-hook")
    os.write(report, json.dumps({"active": s.active, "missing": s.missing}).encode())
    os.close(report)
    return code


def main(p):
    code = setup(p)
    driver = p.get("driver") or ""
    del p
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    # the driver gets the builtins as they are now: code that patches `len` breaks only itself
    driver_globals = {"__name__": "__driver__", "user_globals": g, "__builtins__": dict(vars(__builtins__))
                      if not isinstance(__builtins__, dict) else dict(__builtins__)}
    try:
        exec(compile(code, "<sandbox>", "exec"), g)
        if driver:  # trusted code run after the untrusted code, beside (not inside) its namespace
            exec(compile(driver, "<driver>", "exec"), driver_globals)
    except MemoryError:
        os.write(2, b"\nMemoryError: the sandbox memory limit was reached\n")
        os._exit(3)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
