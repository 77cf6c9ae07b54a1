"""The hostile-code table: attack -> expected verdict and containment, one parametrized test per row.

Every row is a completion for a small HumanEval-style task (`add(a, b)`, three asserts) scored by
the verdict path (sandbox.run_tests, what CodeVerifier uses). Each row asserts:
  verdict      never a pass (the attacks do not compute a + b), and the status the row names
               (what stopped it: blocked, timeout, memory_limit, early_exit, error ...);
  containment  host file and folder unchanged, nothing written to the host's /tmp, no process of
               the run alive afterwards (by command line and as our descendants), the temporary
               folder removed, the secret in our environment not in anything the run returned,
               this process not signalled, nothing connected to our listening socket, bounded time.

Modes: "namespaces" (bubblewrap; skipped with the probe's reason where the machine cannot create
them) and "weak" (explicitly opted into: rlimits, Landlock, audit hook). Rows named `-os-only`
(`hook=False`) switch the audit hook AND Landlock off, to show that the namespaces hold on their
own (namespaces mode only: the weak mode is exactly the one that needs those layers).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nebula_utils.verifiers import sandbox
from nebula_utils.verifiers.code import candidate_program, trusted_prelude
from nebula_utils.verifiers.sandbox import SandboxLimits, run_tests, sandbox_features

FEATURES = sandbox_features()
NEEDS_NAMESPACES = pytest.mark.skipif(
    FEATURES["isolation"] != "namespaces", reason=f"bubblewrap namespaces unavailable: {FEATURES['namespaces_error']}"
)
LIMITS = SandboxLimits(wall_seconds=3.0, cpu_seconds=1, memory_bytes=256 << 20, output_bytes=1 << 20, max_processes=16)
SECRET = "nebula-attack-secret-5e1d"
ADD = {
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
    "    assert candidate(10, 32) == 42\n",
    "entry_point": "add",
}
FAIL = {"error", "blocked", "timeout", "cpu_limit", "memory_limit", "output_limit", "early_exit", "killed"}


@dataclass(frozen=True)
class Attack:
    code: str  # the completion (a function body unless it defines `add`); {placeholders} filled in
    statuses: dict[str, set[str]]  # mode -> acceptable statuses (modes absent: row not run there)
    hook: bool = True  # False: audit hook AND Landlock off, to show that the namespaces hold alone
    reason: str | tuple[str, ...] = ""  # substring the reason must contain (a tuple: any of them)
    notes: str = ""
    not_in_output: tuple[str, ...] = field(default=())


def both(*statuses: str) -> dict[str, set[str]]:
    return {"namespaces": set(statuses), "weak": set(statuses)}


def ns(*statuses: str) -> dict[str, set[str]]:
    return {"namespaces": set(statuses)}


# Host paths: the hook blocks them, except under /tmp in namespace mode, where /tmp is the
# sandbox's own tmpfs (pytest's tmp_path usually is under /tmp): there the host file is simply
# not visible (FileNotFoundError). Either way the host file is checked unchanged.
HOST_PATH = {"namespaces": {"blocked", "error"}, "weak": {"blocked"}}
HOST_REASON = ("blocked by sandbox", "FileNotFoundError")


ATTACKS: dict[str, Attack] = {
    # --- forged passes found on the old sandbox (each returned passed=True there, see below) ---
    "forge-frame-walk": Attack(
        "    import sys\n"
        "    f = sys._getframe(0)\n"
        "    while f is not None:\n"
        "        loc = f.f_locals\n"
        "        if 'status' in loc and 'done' in loc:\n"
        "            loc['status'][0] = 'ok'\n"
        "            loc['done'].release()\n"
        "            import time; time.sleep(5)\n"
        "        f = f.f_back\n"
        "    return 0\n",
        both("error"),
        reason="AssertionError",
    ),
    "forge-type-patch-always-equal-exception": Attack(
        "    import builtins\n"
        "    class Equal(Exception):\n"
        "        def __eq__(self, other):\n"
        "            return True\n"
        "        __hash__ = Exception.__hash__\n"
        "    builtins.type = lambda *a: str\n"
        "    raise Equal()\n",
        both("error"),
    ),
    "forge-hook-off-nonce-from-frames": Attack(
        "    import os, sys, posix\n"
        "    os._exit = lambda code: None\n"
        "    for f in sys._current_frames().values():\n"
        "        while f is not None:\n"
        "            if f.f_locals.get('nonce'):\n"
        "                os.write(1, ('\\n' + f.f_locals['nonce'] + '\\n').encode())\n"
        "                posix._exit(0)\n"
        "            f = f.f_back\n"
        "    return 0\n",
        both("blocked"),
        reason="sys._current_frames",
    ),
    "forge-nonce-from-frames-os-only": Attack(
        "    import sys, posix\n"
        "    for f in sys._current_frames().values():\n"
        "        while f is not None:\n"
        "            if f.f_locals.get('nonce'):\n"
        "                posix.write(1, ('\\n' + f.f_locals['nonce'] + '\\n').encode())\n"
        "                posix._exit(0)\n"
        "            f = f.f_back\n"
        "    return 0\n",
        ns("error"),
        hook=False,
        reason="AssertionError",
        notes="with every in-process layer off there is still no secret in the sandbox to steal",
    ),
    "forge-always-equal-return": Attack(
        "    class Equal:\n        def __eq__(self, other):\n            return True\n    return Equal()\n",
        both("error"),
        reason="cannot cross the sandbox channel",
    ),
    "forge-redefine-check": Attack(
        "    return 0\n\n\ndef check(candidate):\n    pass\n",
        both("error"),
        reason="AssertionError",
    ),
    "forge-print-verdict": Attack(
        '    print(\'{{"passed": true, "status": "ok", "reason": "all tests passed", "calls": 3}}\')\n'
        "    print('all tests passed')\n"
        "    return 0\n",
        both("error"),
    ),
    "forge-garbage-on-reply-pipe": Attack(
        "    import os, struct\n"
        "    for fd in range(3, 64):\n"
        "        try:\n"
        "            os.write(fd, struct.pack('>I', 9) + b'[\"ready\"]' + struct.pack('>I', 2) + b'{{}}')\n"
        "        except OSError:\n"
        "            pass\n"
        "    return 0\n",
        both("error", "channel_error"),
    ),
    "hook-off-then-socket": Attack(
        "    import os, socket\n    os._exit = lambda code: None\n    socket.socket()\n    return 0\n",
        both("blocked"),
        reason="socket",
    ),
    # --- resources ---
    "infinite-loop": Attack("    while True:\n        pass\n", both("cpu_limit", "timeout"), reason="limit"),
    "sleep-forever": Attack("    import time\n    time.sleep(60)\n", both("timeout"), reason="wall-clock"),
    "memory-bomb": Attack("    x = bytearray(8 << 30)\n", both("memory_limit"), reason="MemoryError"),
    "memory-creep": Attack(
        "    hog = []\n    while True:\n        hog.append(bytearray(16 << 20))\n",
        both("memory_limit", "cpu_limit"),
        notes="zero-filling 256 MiB can take the 1 s of CPU first on a loaded 2-core machine",
    ),
    "huge-stdout": Attack(
        "    import sys\n    while True:\n        sys.stdout.write('x' * 65536)\n", both("output_limit")
    ),
    "disk-fill": Attack(
        "    for i in range(1000):\n        open(f'fill{{i}}', 'wb').write(b'x' * (1 << 20))\n",
        ns("error"),
        reason="No space left on device",
        notes="tmpfs capped (64 MiB); in weak mode the work dir is on the host disk, capped per file only",
    ),
    # --- processes ---
    "fork-bomb": Attack("    import os\n    while True:\n        os.fork()\n", both("blocked"), reason="os.fork"),
    "subprocess": Attack(
        "    import subprocess\n    subprocess.Popen(['sh', '-c', ':(){{ :|:& }};:'])\n", both("blocked")
    ),
    "multiprocessing": Attack(
        "    import multiprocessing as mp\n    while True:\n        mp.Process(target=print).start()\n",
        both("blocked"),
    ),
    "posix-spawn": Attack(
        "    import os\n    os.posix_spawn('/bin/sh', ['sh', '-c', 'sleep 100 &'], {{}})\n", both("blocked")
    ),
    "ctypes": Attack("    import ctypes\n    ctypes.CDLL(None).fork()\n", both("blocked"), reason="ctypes"),
    "fork-bomb-os-only": Attack(
        "    import os\n    while True:\n        os.fork()\n",
        ns("error", "timeout", "cpu_limit", "killed"),
        hook=False,
        notes="pids cgroup (root) or RLIMIT_NPROC stop it; the PID namespace ends the rest",
    ),
    "setsid-escape-burns-cpu-os-only": Attack(
        "    import os\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            while True:\n"
        "                pass\n"
        "        os._exit(0)\n"
        "    return 0\n",
        ns("error"),
        hook=False,
        reason="AssertionError",
    ),
    "exec-escape-os-only": Attack(
        "    import os, sys\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        os.execv(sys.executable, [sys.executable, '-c', 'while True: pass', '{marker}'])\n"
        "    return 0\n",
        ns("error"),
        hook=False,
    ),
    "ctypes-fork-os-only": Attack(
        "    import ctypes\n"
        "    libc = ctypes.CDLL(None)\n"
        "    if libc.fork() == 0:\n"
        "        libc.setsid()\n"
        "        while True:\n"
        "            pass\n"
        "    return 0\n",
        ns("error"),
        hook=False,
    ),
    # --- files ---
    "overwrite-host-file": Attack("    open({host_file!r}, 'w').write('pwned')\n", HOST_PATH, reason=HOST_REASON),
    "append-host-file": Attack("    open({host_file!r}, 'a').write('pwned')\n", HOST_PATH, reason=HOST_REASON),
    "create-in-host-dir": Attack("    open({host_new!r}, 'x').write('pwned')\n", HOST_PATH, reason=HOST_REASON),
    "remove-host-file": Attack("    import os\n    os.remove({host_file!r})\n", HOST_PATH, reason=HOST_REASON),
    "rmtree-host-dir": Attack("    import shutil\n    shutil.rmtree({host_dir!r})\n", HOST_PATH, reason=HOST_REASON),
    "rename-host-file": Attack(
        "    import os\n    os.rename({host_file!r}, {host_new!r})\n", HOST_PATH, reason=HOST_REASON
    ),
    "symlink-into-host-dir": Attack(
        "    import os\n    os.symlink('/etc/passwd', {host_new!r})\n", HOST_PATH, reason=HOST_REASON
    ),
    "overwrite-host-file-os-only": Attack(
        "    open({host_file!r}, 'w').write('pwned')\n", ns("error"), hook=False, reason="FileNotFoundError"
    ),
    "rmtree-host-dir-os-only": Attack(
        "    import shutil\n    shutil.rmtree({host_dir!r})\n", ns("error"), hook=False, reason="FileNotFoundError"
    ),
    "read-etc-passwd": Attack(
        "    print(open('/etc/passwd').read())\n", both("blocked"), not_in_output=("root:x:0:0",)
    ),
    "read-etc-passwd-os-only": Attack(
        "    print(open('/etc/passwd').read())\n",
        ns("error"),
        hook=False,
        reason="FileNotFoundError",
        not_in_output=("root:x:0:0",),
    ),
    "write-tmp": Attack(
        "    open('/tmp/nebula-attack-{marker}', 'w').write('pwned')\n    return 0\n",
        {"namespaces": {"error"}, "weak": {"blocked"}},
        notes="namespaces: /tmp is the sandbox's own tmpfs, the host's /tmp is untouched",
    ),
    # --- network ---
    "socket-connect": Attack(
        "    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n",
        both("blocked"),
    ),
    "socket-connect-os-only": Attack(
        "    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n",
        ns("error"),
        hook=False,
        reason="ConnectionRefusedError",
        notes="own network namespace: its loopback has no listener",
    ),
    # --- secrets ---
    "parent-environ": Attack(
        "    print(open('/proc/{host_pid}/environ', 'rb').read())\n", both("blocked"), not_in_output=(SECRET,)
    ),
    "parent-environ-os-only": Attack(
        "    print(open('/proc/{host_pid}/environ', 'rb').read())\n"
        "    print(open('/proc/1/environ', 'rb').read())\n"
        "    return 0\n",
        ns("error"),
        hook=False,
        not_in_output=(SECRET,),
    ),
    "own-environ": Attack("    import os\n    print(dict(os.environ))\n    return 0\n", both("error")),
    # --- signals ---
    "kill-parent": Attack("    import os, signal\n    os.kill({host_pid}, signal.SIGUSR1)\n", both("blocked")),
    "kill-getppid": Attack("    import os, signal\n    os.kill(os.getppid(), signal.SIGUSR1)\n", both("blocked")),
    "killpg-parent": Attack("    import os, signal\n    os.killpg({host_pgid}, signal.SIGUSR1)\n", both("blocked")),
    "kill-parent-os-only": Attack(
        "    import os, signal\n    os.kill({host_pid}, signal.SIGUSR1)\n",
        ns("error"),
        hook=False,
        reason="ProcessLookupError",
    ),
    "pidfd-signal-parent": Attack(
        "    import os, signal\n"
        "    fd = os.pidfd_open({host_pid})\n"
        "    signal.pidfd_send_signal(fd, signal.SIGUSR1)\n"
        "    return 0\n",
        {"namespaces": {"error"}, "weak": {"error"}},
        notes="namespaces: the PID is not in the sandbox's PID namespace; weak: Landlock signal scoping",
    ),
    # --- early exits ---
    "sys-exit": Attack("    import sys\n    sys.exit(0)\n", both("early_exit")),
    "os-exit": Attack("    import os\n    os._exit(0)\n", both("early_exit")),
    "exit-while-loading": Attack("    return 0\n\n\nraise SystemExit(0)\n", both("early_exit")),
    "kill-self": Attack(
        "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n",
        {"namespaces": {"error"}, "weak": {"killed"}},
        notes="namespaces: the candidate is PID 1 of its namespace, which the kernel protects from its own signals",
    ),
}


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _another_test_worker_owns(pid: int) -> bool:
    """True when `pid` descends from another pytest-xdist worker (`make test` runs two, children of
    one controller): that worker's own sandboxes are alive by design. An escaped process is
    re-parented away from every worker, so it is still found."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return False
    controller = os.getppid()
    while pid > 1:
        parent = _ppid(pid)
        if pid == os.getpid() or parent == 0:
            return False
        if parent == controller:
            return True  # pid is a sibling worker (or something else the controller started)
        pid = parent
    return False


def _procs_with(needles: list[str]) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line contains one of `needles` (another test
    worker's sandboxes excepted)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if state != "Z" and any(n in cmd for n in needles) and not _another_test_worker_owns(int(entry.name)):
            found.append((int(entry.name), cmd[:120]))
    return found


def _descendants() -> list[int]:
    """Live children of this process that did not exist before the module's first attack ran."""
    me, children = os.getpid(), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z" and int(entry.name) not in PRE_EXISTING:
                children.append(int(entry.name))
    return children


PRE_EXISTING: set[int] = set()


@pytest.fixture(scope="module", autouse=True)
def _pre_existing_children():
    """Collection happens before any test runs, so the baseline is taken when this module starts."""
    PRE_EXISTING.update(_descendants())
    yield
    PRE_EXISTING.clear()


@pytest.fixture
def host(tmp_path, monkeypatch):
    import tempfile

    sandboxes = tmp_path / "sandboxes"
    sandboxes.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sandboxes))  # see that every run's folder is removed
    monkeypatch.setenv("NEBULA_SECRET_TOKEN", SECRET)
    folder = tmp_path / "host"
    (folder / "keep").mkdir(parents=True)
    (folder / "keep" / "inner.txt").write_text("inner")
    target = folder / "host.txt"
    target.write_text("original")
    return {"sandboxes": sandboxes, "folder": folder, "target": target}


def _host_state(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() if p.is_file() else "<dir>" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("mode", ["namespaces", "weak"])
@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.filterwarnings("ignore:nebula sandbox:RuntimeWarning")
def test_attack(host, name, mode):
    attack = ATTACKS[name]
    if mode not in attack.statuses:
        pytest.skip(f"{name}: not a {mode}-mode row ({attack.notes or 'needs the OS layer'})")
    if mode == "namespaces" and FEATURES["isolation"] != "namespaces":
        pytest.skip(f"bubblewrap namespaces unavailable: {FEATURES['namespaces_error']}")
    if mode == "weak" and name == "pidfd-signal-parent" and FEATURES["landlock_abi"] < 6:
        pytest.skip("weak mode stops pidfd_send_signal only with Landlock signal scoping (ABI >= 6)")
    marker = f"nebula-attack-{os.getpid()}-{time.monotonic_ns()}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    fill = {
        "host_file": str(host["target"]),
        "host_dir": str(host["folder"]),
        "host_new": str(host["folder"] / "new.txt"),
        "host_pid": os.getpid(),
        "host_pgid": os.getpgid(0),
        "port": listener.getsockname()[1],
        "marker": marker,
    }
    completion = attack.code.format(**fill)
    before = _host_state(host["folder"])
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(True))
    program, _ = candidate_program(completion, ADD)
    start = time.monotonic()
    try:
        res = run_tests(
            program,
            "add",
            ADD["test"],
            prelude=trusted_prelude(ADD["prompt"]),
            limits=LIMITS,
            audit_hook=attack.hook,
            landlock=attack.hook,
            isolation=mode,
        )
        elapsed = time.monotonic() - start
        time.sleep(0.05)  # a signal or a stray process would show up by now
    finally:
        signal.signal(signal.SIGUSR1, previous)
    try:
        # verdict
        assert not res.ok and not res.completed, res
        assert res.status in attack.statuses[mode], res
        assert res.status in FAIL | {"channel_error"}
        reasons = attack.reason if isinstance(attack.reason, tuple) else (attack.reason,)
        assert any(r in res.reason for r in reasons), res
        assert res.isolation == mode
        # containment
        assert elapsed < LIMITS.wall_seconds + 4, f"not bounded in time: {elapsed:.1f}s"
        assert _host_state(host["folder"]) == before, "host files changed"
        assert not Path(f"/tmp/nebula-attack-{marker}").exists(), "wrote to the host's /tmp"
        strays = _procs_with([str(sandbox.CHILD_SCRIPT), str(sandbox.RUNNER_SCRIPT), marker])
        assert strays == [] and _descendants() == [], f"processes outlived the verdict: {strays}"
        assert list(host["sandboxes"].iterdir()) == [], "temporary folder not removed"
        returned = res.stdout_tail + res.stderr_tail + res.reason
        for secret in (SECRET, *attack.not_in_output):
            assert secret not in returned, f"leaked {secret!r}"
        assert received == [], "this process was signalled"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    finally:
        listener.close()
        Path(f"/tmp/nebula-attack-{marker}").unlink(missing_ok=True)


def test_the_table_covers_the_issue():
    """Every attack the issue lists has a row (a renamed or dropped row fails here)."""
    required = {
        "forge-frame-walk",
        "forge-type-patch-always-equal-exception",
        "forge-hook-off-nonce-from-frames",
        "forge-always-equal-return",
        "infinite-loop",
        "sleep-forever",
        "memory-bomb",
        "huge-stdout",
        "fork-bomb",
        "overwrite-host-file",
        "remove-host-file",
        "socket-connect",
        "parent-environ",
        "kill-parent",
        "os-exit",
        "setsid-escape-burns-cpu-os-only",
        "ctypes",
        "read-etc-passwd",
        "write-tmp",
        "pidfd-signal-parent",
    }
    assert required <= set(ATTACKS)


# ---------------------------------------------------------------------------------------------
# The forged passes were real: the same completions passed on the sandbox this replaces.


@pytest.fixture
def old_sandbox(tmp_path):
    """The sandbox as of d25ad59 (whole program in one process, verdict = ran to the end)."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    package = tmp_path / "old_sandbox"
    package.mkdir()
    for name in ("sandbox.py", "_sandbox_child.py"):
        out = subprocess.run(
            ["git", "show", f"d25ad59:nebula_utils/verifiers/{name}"], cwd=repo, capture_output=True, text=True
        )
        if out.returncode != 0:
            pytest.skip(f"base commit d25ad59 not in this clone: {out.stderr.strip()[:200]}")
        (package / name).write_text(out.stdout)
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        import old_sandbox.sandbox as old

        yield old
    finally:
        sys.path.remove(str(tmp_path))
        for module in ("old_sandbox.sandbox", "old_sandbox._sandbox_child", "old_sandbox"):
            sys.modules.pop(module, None)


@pytest.mark.parametrize(
    "name", ["forge-frame-walk", "forge-type-patch-always-equal-exception", "forge-hook-off-nonce-from-frames"]
)
def test_forgeries_passed_on_the_old_sandbox(old_sandbox, name):
    program = f"{ADD['prompt']}{ATTACKS[name].code}\n\n{ADD['test']}\n\ncheck(add)\n"  # the old build_program
    res = old_sandbox.run_python(
        program, old_sandbox.SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_bytes=512 << 20)
    )
    assert res.ok, f"the attack no longer forges the old sandbox, so the row proves less than it says: {res}"


# ---------------------------------------------------------------------------------------------
# Refusal without isolation


def test_refuses_without_namespaces_unless_weak_mode_is_chosen(monkeypatch):
    fake = dict(FEATURES, isolation="weak", namespaces_error="bwrap: No permission to create new namespace")
    monkeypatch.setattr(sandbox, "sandbox_features", lambda: fake)
    monkeypatch.delenv(sandbox.ENV_ALLOW_WEAK, raising=False)
    program, _ = candidate_program("    return a + b\n", ADD)
    with pytest.raises(
        sandbox.SandboxUnavailable, match="No permission to create new namespace.*NEBULA_SANDBOX_ALLOW_WEAK"
    ):
        run_tests(program, "add", ADD["test"], prelude=trusted_prelude(ADD["prompt"]), limits=LIMITS)
    with pytest.raises(sandbox.SandboxUnavailable):
        run_tests(program, "add", ADD["test"], limits=LIMITS, isolation="namespaces")
    monkeypatch.setenv(sandbox.ENV_ALLOW_WEAK, "1")
    sandbox._warned_weak.clear()
    with pytest.warns(RuntimeWarning, match="WITHOUT namespace isolation"):
        res = run_tests(program, "add", ADD["test"], prelude=trusted_prelude(ADD["prompt"]), limits=LIMITS)
    assert res.ok and res.isolation == "weak", res


@NEEDS_NAMESPACES
def test_namespaces_are_the_default_where_available():
    program, _ = candidate_program("    return a + b\n", ADD)
    res = run_tests(program, "add", ADD["test"], prelude=trusted_prelude(ADD["prompt"]), limits=LIMITS)
    assert res.ok and res.isolation == "namespaces" and res.calls == 3, res
