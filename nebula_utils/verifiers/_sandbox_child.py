"""The sandboxed interpreter's entry point (run as `python -I <this file>` by nebula_utils.verifiers.sandbox).

Self-contained on purpose: it must not import nebula_utils (the candidate could reach anything
we import), and `-I` keeps the caller's environment and working directory off sys.path.

Order matters: read the job from stdin -> set rlimits -> Landlock (kernel-enforced file, TCP
and signal rules) -> audit hook (Python-level rules, PEP 578) -> run the candidate in a thread.
The success marker (a random nonce) is held only by the main thread, which sits in join()
while the candidate runs: the candidate's own stack does not contain it, and the routes to other
threads' frames (sys._current_frames, gc.get_objects/referrers, sys.settrace) are blocked.
"""

import json
import os
import resource
import sys

EXIT_BLOCKED = 86
EXIT_EARLY_EXIT = 87
EXIT_MEMORY = 88
EXIT_EXCEPTION = 89
EXIT_SETUP = 90
BLOCKED_TAG = "NEBULA_SANDBOX_BLOCKED"
ERROR_TAG = "NEBULA_SANDBOX_ERROR"

# Events denied outright: process creation, signals, networking, native code, changing limits,
# and the introspection routes to the main thread's frame.
DENY_EVENTS = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "subprocess.Popen",
        "os.killpg",
        "signal.pthread_kill",
        "pty.spawn",
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.sendto",
        "socket.sendmsg",
        "resource.setrlimit",
        "resource.prlimit",
        "sys._current_frames",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "os.setuid",
        "os.setgid",
        "webbrowser.open",
        "urllib.Request",
        "ftplib.connect",
        "http.client.connect",
        "smtplib.connect",
        "poplib.connect",
        "imaplib.open",
        "telnetlib.Telnet.open",
    }
)
# Modules that reach process creation or native memory without going through an audited call.
DENY_IMPORTS = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "cffi"})
# Events whose first argument(s) are paths that must stay inside the working directory.
PATH_EVENTS = {
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.rename": (0, 1),
    "os.link": (1,),
    "os.symlink": (1,),
    "os.mkdir": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
    "os.chflags": (0,),
    "os.lchflags": (0,),
    "os.mkfifo": (0,),
    "os.mknod": (0,),
    "shutil.copyfile": (1,),
    "shutil.copytree": (1,),
    "shutil.move": (0, 1),
    "os.listxattr": (),
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

# Landlock (linux/landlock.h). Access rights are allow-lists: only what a rule grants is allowed.
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
LL_WRITE_DIR_ALL = sum(1 << b for b in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
LL_REFER, LL_TRUNCATE, LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
LL_NET_BIND_TCP, LL_NET_CONNECT_TCP = 1 << 0, 1 << 1
LL_SCOPE_ABSTRACT_UNIX, LL_SCOPE_SIGNAL = 1 << 0, 1 << 1
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # same number on every arch
PR_SET_NO_NEW_PRIVS = 38
HERE = __file__


def _die(code, tag, message):
    try:
        os.write(2, f"\n{tag} {message}\n".encode("utf-8", "replace"))
    finally:
        os._exit(code)


def set_limits(job):
    def cap(which, soft, hard=None):
        resource.setrlimit(which, (soft, soft if hard is None else hard))

    cap(resource.RLIMIT_CPU, job["cpu_seconds"], job["cpu_seconds"] + 1)  # SIGXCPU, then SIGKILL
    cap(resource.RLIMIT_AS, job["memory_bytes"])
    cap(resource.RLIMIT_FSIZE, job["file_bytes"])  # stdout/stderr are files: this caps output too
    cap(resource.RLIMIT_NOFILE, job["open_files"])
    cap(resource.RLIMIT_CORE, 0)
    if job.get("max_user_processes"):  # not enforced for root: see sandbox.py
        cap(resource.RLIMIT_NPROC, job["max_user_processes"])


def apply_landlock(abi, work, read_roots):
    import ctypes

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    write = LL_WRITE_FILE | LL_WRITE_DIR_ALL | (LL_REFER if abi >= 2 else 0) | (LL_TRUNCATE if abi >= 3 else 0)
    write |= LL_IOCTL_DEV if abi >= 5 else 0
    read = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR
    file_rights = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | (LL_TRUNCATE if abi >= 3 else 0)
    attr = RulesetAttr(
        read | write,
        (LL_NET_BIND_TCP | LL_NET_CONNECT_TCP) if abi >= 4 else 0,
        (LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")

    def allow(path, rights):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                rights &= file_rights
            rule = PathBeneath(rights, fd)
            if libc.syscall(SYS_ADD_RULE, ruleset, 1, ctypes.byref(rule), 0) < 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
        finally:
            os.close(fd)

    allow(work, read | write)
    for path in read_roots:
        if os.path.exists(path):
            allow(path, read)
    allow("/dev/null", LL_READ_FILE | LL_WRITE_FILE)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS)")
    if libc.syscall(SYS_RESTRICT_SELF, ruleset, 0) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(ruleset)


def make_audit_hook(work, read_roots):
    work = os.path.realpath(work)
    readable = tuple(os.path.realpath(r) for r in read_roots) + (work,)
    realpath, join, getpid = os.path.realpath, os.path.join, os.getpid

    def inside(path):
        if isinstance(path, int):  # an already-open descriptor
            return True
        try:
            p = realpath(join(work, os.fsdecode(path)))
        except (TypeError, ValueError):
            return False
        return p == work or p.startswith(work + "/") or p == "/dev/null"

    def readable_path(path):
        p = realpath(join(work, os.fsdecode(path)))
        return any(p == r or p.startswith(r.rstrip("/") + "/") for r in readable)

    def deny(event, args):
        _die(EXIT_BLOCKED, BLOCKED_TAG, f"{event} {args!r:.200}")

    def hook(event, args):
        if event in DENY_EVENTS or event.startswith("ctypes."):
            deny(event, args)
        elif event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writing and not inside(path):
                deny("open(write) outside the sandbox directory", args)
            if isinstance(path, (str, bytes)) and not readable_path(path):
                deny("open outside the readable folders (Python installation, sandbox dir)", args)
        elif event in PATH_EVENTS:
            for i in PATH_EVENTS[event]:
                if i < len(args) and not inside(args[i]):
                    deny(f"{event} outside the sandbox directory", args)
        elif event == "os.kill":
            if args[0] != getpid():
                deny("os.kill of another process", args)
        elif event == "import" and args[0] in DENY_IMPORTS:
            deny(f"import {args[0]}", args)
        elif event == "sys._getframe" and args[0].f_code.co_filename == HERE:
            deny("sys._getframe reaching the sandbox's own frames", ())
        elif event == "object.__getattr__" and args[1] == "f_back":
            deny("frame.f_back (walking up to the sandbox's frames)", ())

    return hook


def describe(exc, source_lines):
    """'Type: message (line N: code)' from the traceback's line numbers (no frame access)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        line, tb = tb.tb_lineno, tb.tb_next
    where = ""
    if line is not None and 0 < line <= len(source_lines):
        where = f" (line {line}: {source_lines[line - 1].strip()[:120]})"
    return f"{type(exc).__name__}: {str(exc)[:300]}{where}"


def run_candidate(code, status, done):
    # Runs in its own thread; `status[0] = ...` and `done.release()` are C-level calls on objects
    # the candidate cannot reach (this frame is hidden by the audit hook).
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        status[0] = "ok"
    except BaseException as exc:  # noqa: B902 - everything the candidate raises is a failure
        status[0] = exc
    finally:
        done.release()


def main():
    import _thread

    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    nonce = job.pop("nonce")
    source = job.pop("source")
    try:
        code = compile(source, "<candidate>", "exec")
    except (SyntaxError, ValueError) as exc:
        _die(EXIT_EXCEPTION, ERROR_TAG, f"{type(exc).__name__}: {exc}")
    try:
        set_limits(job)
        os.chdir(job["workdir"])
        os.umask(0o077)
        if job["landlock_abi"]:
            apply_landlock(job["landlock_abi"], job["workdir"], job["read_roots"])
    except OSError as exc:
        _die(EXIT_SETUP, ERROR_TAG, f"sandbox setup failed: {exc}")
    sys.modules.pop("ctypes", None)  # a later `import ctypes` is then audited (and denied)
    # Captured before the candidate runs: it may rebind os.write or sys.stdout, not these objects.
    write, real_out, real_err = os.write, sys.stdout, sys.stderr
    if job["audit_hook"]:
        sys.addaudithook(make_audit_hook(job["workdir"], job["read_roots"]))
    status, done = [None], _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(run_candidate, (code, status, done))
    done.acquire()  # a C-level wait: nothing the candidate patches runs in this thread before it
    outcome = status[0]
    if type(outcome) is str and outcome == "ok":
        real_out.flush()
        real_err.flush()
        write(1, f"\n{nonce}\n".encode())
        os._exit(0)
    nonce = None  # from here on candidate code may run in this thread (its __str__, __class__...)
    for stream in (real_out, real_err):
        try:
            stream.flush()
        except Exception:  # e.g. output limit reached: the classification below still holds
            pass
    if isinstance(outcome, SystemExit):
        _die(EXIT_EARLY_EXIT, ERROR_TAG, "program called exit() before finishing")
    if isinstance(outcome, MemoryError):
        _die(EXIT_MEMORY, ERROR_TAG, "MemoryError: memory limit reached")
    if isinstance(outcome, BaseException):
        _die(EXIT_EXCEPTION, ERROR_TAG, describe(outcome, source.splitlines()))
    _die(EXIT_EARLY_EXIT, ERROR_TAG, "program ended without finishing")


if __name__ == "__main__":
    main()
