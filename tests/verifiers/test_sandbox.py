"""The sandbox and its hostile-code suite.

Every hostile program is written so that, if its attack worked, it would run to its last line
(status "ok"): a contained attack is any other status, with a reason naming what stopped it.
Each case also checks the host side: time bounded, host files untouched, no stray processes,
the sandbox's temporary folder gone, this test process alive (it is running the asserts).
The file/network/signal/env attacks run with every containment layer, then with the audit hook
alone and with Landlock alone (where the kernel has it), so that each layer is shown to hold.
"""

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from nebula_utils.verifiers.sandbox import SandboxLimits, run_many, run_python, sandbox_features

LIMITS = SandboxLimits(wall_seconds=2.0, cpu_seconds=1, memory_bytes=256 << 20, output_bytes=1 << 20)
SECRET = "nebula-test-secret-7f3a9c"

FEATURES = sandbox_features()
MODES = {"all": {}, "hook_only": {"landlock": False}}
if FEATURES["landlock_abi"]:
    MODES["landlock_only"] = {"audit_hook": False}


def _children() -> list[int]:
    """Live (non-zombie) processes whose parent is this test process, other than those that already
    existed when the session's first sandbox test started (an earlier test's long-lived helper, such
    as a tokenizer or dataloader worker, is not the sandbox's stray)."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == me and fields[0] != "Z" and int(entry.name) not in PRE_EXISTING:
                found.append(int(entry.name))
    return found


PRE_EXISTING: set[int] = set()


@pytest.fixture(scope="module", autouse=True)
def _pre_existing_children():
    """Collection happens before any test runs, so the baseline is taken when this module starts."""
    PRE_EXISTING.update(_children())
    yield
    PRE_EXISTING.clear()


@pytest.fixture
def contained(tmp_path, monkeypatch):
    """Run a program and check the host-side invariants around it."""
    import tempfile

    # A private temp root: other processes on the machine may be running sandboxes in /tmp.
    sandboxes = tmp_path / "sandboxes"
    sandboxes.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sandboxes))

    def run(source: str, limits: SandboxLimits = LIMITS, **options):
        start = time.monotonic()
        result = run_python(source, limits, **options)
        elapsed = time.monotonic() - start
        assert elapsed < limits.wall_seconds + 3, f"not bounded in time: {elapsed:.1f}s"
        assert result.reason, "every verdict needs a reason"
        assert _children() == [], "stray processes left behind"
        assert list(sandboxes.iterdir()) == [], "temporary folder not removed"
        return result

    return run


def test_runs_a_normal_program_in_a_temp_cwd_with_a_scrubbed_env(contained, monkeypatch):
    monkeypatch.setenv("NEBULA_SECRET_TOKEN", SECRET)
    res = contained("import os, sys\nprint(os.getcwd())\nprint(sorted(os.environ))\nprint(sys.flags.isolated)")
    assert res.ok and res.completed and res.status == "ok" and res.returncode == 0
    cwd, env, isolated = res.stdout_tail.splitlines()
    if res.isolation == "namespaces":  # a private tmpfs at /tmp, gone with the mount namespace
        assert cwd == "/tmp"
    else:
        assert "nebula-sandbox-" in cwd and not os.path.exists(cwd)
    assert SECRET not in res.stdout_tail and "NEBULA_SECRET_TOKEN" not in env and isolated == "1"


def test_errors_are_reported_with_type_and_line(contained):
    res = contained("x = 1\nassert x == 2, 'x is wrong'\n")
    assert res.status == "error" and "AssertionError: x is wrong (line 2" in res.reason
    assert contained("def f(:\n").status == "error"


@pytest.mark.parametrize(
    "source, status, reason",
    [
        ("while True:\n    pass\n", {"cpu_limit", "timeout"}, "limit"),
        ("import time\ntime.sleep(60)\n", {"timeout"}, "wall-clock limit of 2s exceeded"),
        ("x = bytearray(8 << 30)\n", {"memory_limit"}, "memory limit of 256 MiB"),
        ("hog = []\nwhile True:\n    hog.append(bytearray(16 << 20))\n", {"memory_limit"}, "memory limit"),
        ("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", {"output_limit"}, "output limit"),
        ("import sys\nwhile True:\n    sys.stderr.write('y' * 65536)\n", {"output_limit"}, "output limit"),
    ],
    ids=["infinite-loop", "sleep-forever", "memory-bomb", "memory-creep", "huge-stdout", "huge-stderr"],
)
def test_resource_attacks_are_bounded(contained, source, status, reason):
    res = contained(source)
    assert res.status in status and reason in res.reason, res
    assert len(res.stdout_tail) <= 2000 and len(res.stderr_tail) <= 2000


FORK_BOMBS = {
    "os-fork": "import os\nwhile True:\n    os.fork()\n",
    "subprocess": "import subprocess\nsubprocess.Popen(['sh', '-c', ':(){ :|:& };:'])\n",
    "multiprocessing": "import multiprocessing as mp\nwhile True:\n    mp.Process(target=print).start()\n",
    "posix-spawn": "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'sleep 100 &'], {})\n",
    "ctypes": "import ctypes\nctypes.CDLL(None).fork()\n",
}


@pytest.mark.parametrize("mode", [m for m in MODES if m != "landlock_only"])
@pytest.mark.parametrize("name", sorted(FORK_BOMBS))
def test_fork_bombs_are_stopped(contained, mode, name):
    # Landlock cannot stop fork(), and as root RLIMIT_NPROC is not enforced (see sandbox.py):
    # the audit hook is the layer that holds here, so it is tested with and without Landlock.
    res = contained(FORK_BOMBS[name], **MODES[mode])
    assert res.status == "blocked" and "blocked by sandbox" in res.reason, res


@pytest.fixture
def host_files(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    target = host / "host.txt"
    target.write_text("original")
    folder = host / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    return target, folder


def _assert_untouched(target: Path, folder: Path):
    assert target.read_text() == "original" and (folder / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in target.parent.iterdir()) == ["folder", "host.txt"]


# A contained attack either hits the audit hook ("blocked by sandbox: <event>") or the kernel
# (Landlock / network namespace), which the program sees as an OSError.
# In a mount namespace the host's files are simply not there (FileNotFoundError).
CONTAINED_REASON = ("blocked by sandbox", "PermissionError", "OSError", "ConnectionRefusedError", "FileNotFoundError")


def _is_contained(res) -> bool:
    return res.status in ("blocked", "error") and any(r in res.reason for r in CONTAINED_REASON)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize(
    "attack",
    [
        "open({target!r}, 'w').write('pwned')",
        "open({target!r}, 'a').write('pwned')",
        "open({new!r}, 'x').write('pwned')",
        "import os\nos.remove({target!r})",
        "import shutil\nshutil.rmtree({folder!r})",
        "import os\nos.rename({target!r}, {new!r})",
        "import pathlib\npathlib.Path({target!r}).unlink()",
        "import os\nos.symlink('/etc/passwd', {new!r})",
    ],
    ids=["overwrite", "append", "create", "remove", "rmtree", "rename", "unlink", "symlink"],
)
def test_host_files_are_untouched(contained, host_files, mode, attack):
    target, folder = host_files
    source = attack.format(target=str(target), folder=str(folder), new=str(target.parent / "new.txt"))
    res = contained(source, **MODES[mode])
    assert _is_contained(res), res
    _assert_untouched(target, folder)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_no_network(contained, mode):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        res = contained(
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'exfiltrated')\n",
            **MODES[mode],
        )
        assert _is_contained(res) or "Network is unreachable" in res.reason, res
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize(
    "attack",
    [
        "import os\nprint(open(f'/proc/{os.getppid()}/environ', 'rb').read())",
        "import os\nprint(open(f'/proc/{os.getppid()}/cmdline', 'rb').read())",
        "print(open('/proc/1/environ', 'rb').read())",
    ],
    ids=["parent-environ", "parent-cmdline", "init-environ"],
)
def test_parent_env_does_not_leak(contained, monkeypatch, mode, attack):
    monkeypatch.setenv("NEBULA_SECRET_TOKEN", SECRET)
    res = contained(attack, **MODES[mode])
    assert SECRET not in res.stdout_tail + res.stderr_tail + res.reason
    assert _is_contained(res), res


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize(
    "attack",
    [
        "import os, signal\nos.kill(os.getppid(), signal.SIGUSR1)",
        "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGUSR1)",
    ],
    ids=["kill-parent", "killpg-parent"],
)
def test_cannot_signal_the_parent(contained, mode, attack):
    if mode == "landlock_only" and FEATURES["landlock_abi"] < 6:
        pytest.skip("Landlock signal scoping needs ABI >= 6")
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(True))
    try:
        res = contained(attack, **MODES[mode])
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # In a PID namespace the parent is not visible (getppid() == 0): the call cannot reach it.
    assert received == [] and (_is_contained(res) or res.isolation == "namespaces"), res


def test_early_exit_is_not_success(contained):
    for source in ("import sys\nsys.exit(0)\nprint('never')", "import os\nos._exit(0)", "raise SystemExit"):
        res = contained(source)
        assert res.status == "early_exit" and not res.completed, res


def test_run_many_keeps_order_and_bounds_workers():
    sources = [f"import time\ntime.sleep(0.4)\nprint({i})" for i in range(4)]
    start = time.monotonic()
    results = run_many(sources, LIMITS, workers=4)
    parallel = time.monotonic() - start
    assert [r.stdout_tail for r in results] == ["0", "1", "2", "3"] and all(r.ok for r in results)
    assert parallel < 1.5  # 4 x 0.4 s of sleeping run at once, not one after another
    start = time.monotonic()
    assert all(r.ok for r in run_many(sources, LIMITS, workers=2))
    assert time.monotonic() - start >= 0.8  # at most 2 alive at once: two rounds of 0.4 s
    assert _children() == []
