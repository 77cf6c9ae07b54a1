"""The sandboxed interpreter's entry point (run as `python -I -S <this file>` by nebula_utils.verifiers.sandbox).

Self-contained on purpose: it must not import nebula_utils (the candidate could reach anything
we import) and loads only _wire.py, the plain-data channel, from its own folder by path.

Two modes, chosen by the job read from stdin:
  serve    load the candidate program, then answer calls to its entry point that arrive on the
           request pipe, one reply per call, as plain data (see _wire.py). This process decides
           nothing: the trusted test process (_verdict_runner.py) holds the asserts and the
           verdict, in another process this one cannot see or signal.
  program  run a whole program and report whether it ran to its last line (a random nonce is
           written only then). That report comes from inside the process the program controls,
           so a hostile program can forge it; it is never used as a test verdict.

Order matters: read the job -> rlimits -> Landlock (kernel-enforced file, TCP and signal rules)
-> audit hook (Python-level rules, PEP 578; defence in depth only) -> the candidate.
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
# and the introspection routes to the runner's frames.
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

# Bound now, before any candidate code exists: a candidate that rebinds os._exit or os.write
# (the issue's `os._exit = lambda c: None`, which used to turn every denial into a no-op)
# changes the module attribute, not these references.
_exit, _write = os._exit, os.write


def _die(code, tag, message, _exit=_exit, _write=_write):
    try:
        _write(2, f"\n{tag} {message}\n".encode("utf-8", "replace"))
    finally:
        _exit(code)


def load_wire():
    """_wire.py from this file's folder, loaded by path (no sys.path change, no package import)."""
    path = os.path.join(os.path.dirname(os.path.abspath(HERE)), "_wire.py")
    module = type(sys)("_wire")
    module.__file__ = path
    with open(path, encoding="utf-8") as fh:
        exec(compile(fh.read(), path, "exec"), module.__dict__)
    return module


def set_limits(job):
    def cap(which, soft, hard=None):
        resource.setrlimit(which, (soft, soft if hard is None else hard))

    # SIGXCPU at the soft limit, SIGKILL at the hard one; as a PID-namespace init (bwrap
    # --as-pid-1) SIGXCPU is ignored by the kernel, so there the two are equal (cpu_grace 0).
    cap(resource.RLIMIT_CPU, job["cpu_seconds"], job["cpu_seconds"] + job.get("cpu_grace", 1))
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
    """The PEP 578 hook. Everything it calls is bound here, at creation, as closure variables:
    rebinding os._exit, os.path.realpath, builtins.isinstance or this module's globals later
    changes nothing it does. What it still cannot see: a path-like object that answers
    differently to the hook and to the call, library functions that look up their own module
    globals (os.path.realpath calls os.lstat, which a candidate can rebind), C code, and memory
    corruption; that is why the operating system (namespaces, Landlock) is the containment and
    this hook only adds to it."""
    realpath, join, fsdecode, getpid = os.path.realpath, os.path.join, os.fsdecode, os.getpid
    is_a, any_of, tuple_of, len_of, int_t, str_t, bytes_t = isinstance, any, tuple, len, int, str, bytes
    obj_repr = object.__repr__
    die, blocked_exit, blocked_tag = _die, EXIT_BLOCKED, BLOCKED_TAG
    deny_events, deny_imports, path_events, write_flags, here = (
        DENY_EVENTS,
        DENY_IMPORTS,
        dict(PATH_EVENTS),
        WRITE_FLAGS,
        HERE,
    )
    work = realpath(work)
    readable = tuple_of(realpath(r) for r in read_roots) + (work,)

    def inside(path):
        if type(path) is int_t:  # an already-open descriptor
            return True
        try:
            p = realpath(join(work, fsdecode(path)))
        except (TypeError, ValueError):
            return False
        return p == work or p.startswith(work + "/") or p == "/dev/null"

    def readable_path(path):
        p = realpath(join(work, fsdecode(path)))
        return any_of(p == r or p.startswith(r.rstrip("/") + "/") for r in readable)

    def shown(args):  # never calls the candidate's own __repr__
        return ", ".join(
            str_t.__repr__(a)[:120]
            if type(a) is str_t
            else (obj_repr(a) if type(a) is not int_t else int_t.__repr__(a))
            for a in args[:3]
        )

    def deny(event, args):
        die(blocked_exit, blocked_tag, f"{event} ({shown(tuple_of(args))})")

    def hook(event, args):
        if event in deny_events or event.startswith("ctypes."):
            deny(event, args)
        elif event == "open":
            path, mode, flags = (tuple_of(args) + (None, None))[:3]
            writing = (type(mode) is str_t and any_of(c in mode for c in "wax+")) or (
                type(flags) is int_t and flags & write_flags
            )
            if writing and not inside(path):
                deny("open(write) outside the sandbox directory", args)
            if is_a(path, (str_t, bytes_t)) and not readable_path(path):
                deny("open outside the readable folders (Python installation, sandbox dir)", args)
        elif event in path_events:
            for i in path_events[event]:
                if i < len_of(args) and not inside(args[i]):
                    deny(f"{event} outside the sandbox directory", args)
        elif event == "os.kill":
            if args[0] != getpid():
                deny("os.kill of another process", args)
        elif event == "import" and args[0] in deny_imports:
            deny(f"import {args[0]}", ())
        elif event == "sys._getframe" and args[0].f_code.co_filename == here:
            deny("sys._getframe reaching the sandbox's own frames", ())
        elif event == "object.__getattr__" and args[1] == "f_back":
            deny("frame.f_back (walking up to the sandbox's frames)", ())

    return hook


def where(exc, source_lines, filename="<candidate>"):
    """'line N: code' of the deepest traceback entry in `filename`, or ''."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is not None and 0 < line <= len(source_lines):
        return f"line {line}: {source_lines[line - 1].strip()[:120]}"
    return ""


def describe(exc, source_lines):
    """'Type: message (line N: code)'."""
    at, message = where(exc, source_lines), str(exc)[:300]
    return f"{type(exc).__name__}{': ' + message if message else ''}{f' ({at})' if at else ''}"


def setup(job):
    """rlimits, working dir, Landlock, audit hook; exits with EXIT_SETUP when the OS refuses."""
    try:
        set_limits(job)
        os.chdir(job["workdir"])
        os.umask(0o077)
        if job["landlock_abi"]:
            apply_landlock(job["landlock_abi"], job["workdir"], job["read_roots"])
    except OSError as exc:
        _die(EXIT_SETUP, ERROR_TAG, f"sandbox setup failed: {exc}")
    sys.modules.pop("ctypes", None)  # a later `import ctypes` is then audited (and denied)
    if job["audit_hook"]:
        sys.addaudithook(make_audit_hook(job["workdir"], job["read_roots"]))


# ---------------------------------------------------------------------------------------------
# serve mode: the candidate answers calls; the verdict is decided elsewhere


def serve(job, source, wire):
    """Load the program, say "ready" (or why not), then answer one call per request until the
    request pipe closes. Replies: ["ok", value] | ["raise", type, message, where] | ["exit", why]."""
    req, resp, cap, entry = job["req_fd"], job["resp_fd"], job["channel_bytes"], job["entry_point"]
    send, recv, encode, decode, WireError = wire.send, wire.recv, wire.encode, wire.decode, wire.WireError
    out, err, lines = sys.stdout, sys.stderr, source.splitlines()

    def flush():
        for stream in (out, err):
            try:
                stream.flush()
            except Exception:  # e.g. output limit reached; the parent sees the file size
                pass

    def say(message):  # the test process may already be gone: then nobody is listening
        try:
            send(resp, message, cap)
        except (OSError, WireError):
            pass

    def finish(code, message=None):
        flush()
        if message:
            _die(code, ERROR_TAG, message)
        _exit(code)

    try:
        code = compile(source, "<candidate>", "exec")
    except (SyntaxError, ValueError) as exc:
        say(["load_error", "error", f"{type(exc).__name__}: {exc}"[:400]])
        finish(EXIT_EXCEPTION, f"{type(exc).__name__}: {exc}")
    setup(job)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(code, namespace)
        fn = namespace.get(entry)
        if not callable(fn):
            raise NameError(f"the program defines no function '{entry}'")
    except SystemExit:
        say(["load_error", "early_exit", "program called exit() while loading, before any test ran"])
        finish(EXIT_EARLY_EXIT, "program called exit() while loading")
    except MemoryError:
        say(["load_error", "memory_limit", "MemoryError while loading the program"])
        finish(EXIT_MEMORY, "MemoryError: memory limit reached")
    except BaseException as exc:  # noqa: B902 - anything the program raises is its failure
        why = describe(exc, lines)
        say(["load_error", "error", why])
        finish(EXIT_EXCEPTION, why)
    say(["ready"])
    while True:
        try:
            message = recv(req, cap)
        except WireError as exc:
            finish(EXIT_SETUP, f"bad request from the test process: {exc}")
        if message is None:  # the test process is done
            finish(0)
        try:
            args, kwargs = decode(message[1]), decode(message[2])
            value = fn(*args, **kwargs)
            reply = ["ok", encode(value)]
        except SystemExit:
            reply = ["exit", "the candidate called exit() during a test call"]
        except WireError as exc:
            reply = ["raise", "TypeError", str(exc), ""]
        except BaseException as exc:  # noqa: B902
            name = type(exc).__name__
            reply = ["raise", name if type(name) is str else "Exception", str(exc)[:300], where(exc, lines)]
        flush()
        try:
            send(resp, reply, cap)
        except WireError as exc:  # e.g. a return value over the channel cap
            say(["raise", "ValueError", str(exc), ""])
        except OSError:
            finish(0)


# ---------------------------------------------------------------------------------------------
# program mode: run a whole program (not a verdict: see the module docstring)


def run_candidate(code, status, done):
    # Runs in its own thread; `status[0] = ...` and `done.release()` are C-level calls on objects
    # the candidate can only reach by frame walking (denied by the audit hook, best effort).
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        status[0] = "ok"
    except BaseException as exc:  # noqa: B902 - everything the candidate raises is a failure
        status[0] = exc
    finally:
        done.release()


def run_program(job, source):
    import _thread

    nonce = job.pop("nonce")
    try:
        code = compile(source, "<candidate>", "exec")
    except (SyntaxError, ValueError) as exc:
        _die(EXIT_EXCEPTION, ERROR_TAG, f"{type(exc).__name__}: {exc}")
    setup(job)
    real_out, real_err, write = sys.stdout, sys.stderr, _write
    status, done = [None], _thread.allocate_lock()
    done.acquire()
    _thread.start_new_thread(run_candidate, (code, status, done))
    done.acquire()  # a C-level wait: nothing the candidate patches runs in this thread before it
    outcome = status[0]
    if type(outcome) is str and outcome == "ok":
        real_out.flush()
        real_err.flush()
        write(1, f"\n{nonce}\n".encode())
        _exit(0)
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


def main():
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    source = job.pop("source")
    if job["mode"] == "serve":
        serve(job, source, load_wire())
    else:
        run_program(job, source)


if __name__ == "__main__":
    main()
