"""The papermill pipeline runner: execution, skipping, selective reruns, failures, CLI errors."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nebula_utils.inference.cpu import GLIBC_MALLOC_TUNABLES
from nebula_utils.pipeline import load_pipeline
from nebula_utils.runner import StepFailed, run_pipeline
from tests.conftest import REPO


def pipeline_file(tmp_path: Path, data: str, lr: float = 5e-3, name: str = "p.yaml") -> Path:
    doc = {
        "pipeline": "rt",
        "defaults": {"model": "tiny-random", "device": "cpu"},
        "steps": [
            {"notebook": "00_environment", "params": {"models": ["tiny-random"]}},
            {
                "notebook": "20_sft",
                "params": {"data": data, "max_steps": 2, "learning_rate": lr, "max_length": 48, "logging_steps": 1},
            },
        ],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def data(tmp_path) -> str:
    path = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"{i}"}]}
        for i in range(8)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_run_skip_and_rerun_only_affected(tmp_path, data, tiny_model_path):
    results = tmp_path / "results"
    log: list[str] = []
    first = run_pipeline(load_pipeline(pipeline_file(tmp_path, data), results), echo=log.append)
    assert first == {"00_environment": "ran", "20_sft": "ran"}
    sft = load_pipeline(pipeline_file(tmp_path, data), results).steps[1]
    for name in ("notebook.ipynb", "config.yaml", "metrics.json", "run.json", "train_log.json"):
        assert (sft.run_dir / name).is_file(), name
    assert any("[2/2] 20_sft" in line and "done in" in line for line in log)
    env_step = load_pipeline(pipeline_file(tmp_path, data), results).steps[0]
    devices = json.loads((env_step.run_dir / "manifests" / "environment.json").read_text())["devices"]
    # the kernel got the runner's allocator defaults (or the user's own setting, which wins)
    assert devices["GLIBC_TUNABLES"] == os.environ.get("GLIBC_TUNABLES", GLIBC_MALLOC_TUNABLES)

    again = run_pipeline(load_pipeline(pipeline_file(tmp_path, data), results), echo=log.append)
    assert again == {"00_environment": "skipped", "20_sft": "skipped"}

    changed = run_pipeline(
        load_pipeline(pipeline_file(tmp_path, data, lr=1e-3, name="q.yaml"), results), echo=log.append
    )
    assert changed == {"00_environment": "skipped", "20_sft": "ran"}

    only = run_pipeline(
        load_pipeline(pipeline_file(tmp_path, data), results), force=True, only="00_environment", echo=log.append
    )
    assert only == {"00_environment": "ran"}


def test_failing_step_reports_cell_error_and_partial_notebook(tmp_path, tiny_model_path):
    pipeline = load_pipeline(pipeline_file(tmp_path, str(tmp_path / "missing.jsonl")), tmp_path / "r")
    with pytest.raises(StepFailed) as err:
        run_pipeline(pipeline, echo=lambda s: None)
    msg = str(err.value)
    assert "FileNotFoundError" in msg and "missing.jsonl" in msg
    partial = Path(msg.split("partial notebook: ")[1].strip())
    assert partial.is_file() and partial.parent == pipeline.steps[1].run_dir


def test_cli_config_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"steps": [{"notebook": "20_sft", "params": {"learning_rat": 1}}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "nebula_utils.cli", "run", str(bad)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.yaml" in lines[0] and "'learning_rat'" in lines[0]


def test_cli_plan_lists_steps(tmp_path, data):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nebula_utils.cli",
            "run",
            str(pipeline_file(tmp_path, data)),
            "--plan",
            "--results",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "00_environment-" in proc.stdout and "pending" in proc.stdout


def test_extends_appends_steps_and_keeps_the_base_run_ids(tmp_path):
    import yaml

    from nebula_utils.config import ConfigError
    from nebula_utils.pipeline import load_pipeline

    repo = Path(__file__).resolve().parents[1]
    base = load_pipeline(repo / "params" / "pipelines" / "demo.yaml", tmp_path)
    extended = load_pipeline(repo / "params" / "pipelines" / "demo_instruct.yaml", tmp_path)
    assert [s.run_dir for s in extended.steps[: len(base.steps)]] == [s.run_dir for s in base.steps]
    assert extended.step("60_eval_instruct_sft").params["model"] == str(base.step("20_sft_patch").run_dir / "model")
    loop = tmp_path / "loop.yaml"
    loop.write_text(yaml.safe_dump({"extends": str(loop), "steps": []}))
    with pytest.raises(ConfigError, match="cycle"):
        load_pipeline(loop, tmp_path)


def test_failed_step_is_marked_failed_and_a_rerun_starts_from_a_clean_folder(tmp_path, data, tiny_model_path):
    missing = str(tmp_path / "later.jsonl")
    pipeline = load_pipeline(pipeline_file(tmp_path, missing), tmp_path / "r")
    sft = pipeline.steps[1]
    with pytest.raises(StepFailed):
        run_pipeline(pipeline, echo=lambda s: None)
    info = json.loads((sft.run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "FileNotFoundError" in info["error"]
    # plant a stale metric and a stray file as a crashed run would leave them, then rerun
    (sft.run_dir / "metrics.json").write_text(json.dumps({"metrics": {"planted/stale": {"value": 1}}}))
    (sft.run_dir / "stray.bin").write_bytes(b"x")
    Path(missing).write_text(Path(data).read_text())
    assert run_pipeline(pipeline, echo=lambda s: None)["20_sft"] == "ran"
    metrics = json.loads((sft.run_dir / "metrics.json").read_text())["metrics"]
    assert "planted/stale" not in metrics and "train/loss_last" in metrics
    assert not (sft.run_dir / "stray.bin").exists()


@pytest.mark.parametrize("status,kept", [("failed", True), ("running", True), ("complete", False)])
def test_clean_rerun_keeps_the_checkpoints_of_an_incomplete_run_only(tmp_path, data, status, kept):
    """An interrupted training resumes from <run_dir>/checkpoints (train.sft.train_sft), so the
    clean rerun of an incomplete run keeps that folder, and nothing else; a complete run being
    recomputed (--force) starts from nothing."""
    from nebula_utils.runner import _clean_run_dir

    sft = load_pipeline(pipeline_file(tmp_path, data), tmp_path / "r").steps[1]
    (sft.run_dir / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (sft.run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (sft.run_dir / "metrics.json").write_text("{}")
    (sft.run_dir / "run.json").write_text(json.dumps({"run_id": sft.run_id, "status": status}))
    _clean_run_dir(sft)
    assert (sft.run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file() == kept
    left = sorted(p.name for p in sft.run_dir.iterdir()) if sft.run_dir.exists() else []
    assert left == (["checkpoints"] if kept else [])
    assert not list(sft.run_dir.parent.glob(".*stale*"))


def test_a_second_concurrent_run_waits_for_the_step_then_skips_it(tmp_path, data, tiny_model_path):
    """Two `nebula run` of one pipeline into one results folder: the step is computed once."""
    path = pipeline_file(tmp_path, data)
    cmd = [sys.executable, "-m", "nebula_utils.cli", "run", str(path), "--results", str(tmp_path / "r")]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    sft_dir = load_pipeline(path, tmp_path / "r").steps[1].run_dir
    lock = sft_dir.with_name(f".{sft_dir.name}.lock")
    deadline = time.time() + 120
    while not (sft_dir / "notebook.ipynb").exists() and time.time() < deadline:  # first is inside 20_sft
        time.sleep(0.2)
    assert lock.exists()
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    out_first, _ = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, out_first + second.stdout + second.stderr
    assert "waiting: another nebula run is computing it" in second.stdout
    assert "20_sft" in second.stdout and "skipped (complete results" in second.stdout.split("20_sft", 1)[1]
    assert out_first.count("20_sft") >= 1 and "running..." in out_first


def test_training_progress_is_streamed_and_step_overhead_is_recorded(tmp_path, data, tiny_model_path):
    log: list[str] = []
    run_pipeline(load_pipeline(pipeline_file(tmp_path, data), tmp_path / "r"), echo=log.append)
    steps = [line for line in log if "sft step" in line]
    assert steps and "loss" in steps[-1] and "tok/s" in steps[-1] and "ETA" in steps[-1], log
    # Each step's wall time = the stage's own work (run.json) + kernel/notebook overhead.
    timings = json.loads((tmp_path / "r" / "rt" / "timings" / "p.json").read_text())
    assert set(timings["steps"]) == {"00_environment", "20_sft"}
    for t in timings["steps"].values():
        assert 0 < t["work_s"] < t["wall_s"] and t["overhead_s"] == pytest.approx(t["wall_s"] - t["work_s"], abs=0.02)
    assert 0 < timings["total"]["overhead_frac"] < 1 and "notebook/kernel overhead:" in log[-2]
    log.clear()
    run_pipeline(load_pipeline(pipeline_file(tmp_path, data), tmp_path / "r"), echo=log.append)  # all skipped
    assert not any("overhead" in line for line in log) and (tmp_path / "r" / "rt" / "timings" / "p.json").is_file()
    # Rerunning one step replaces its measurement and keeps the other step's.
    run_pipeline(
        load_pipeline(pipeline_file(tmp_path, data), tmp_path / "r"),
        force=True,
        only="00_environment",
        echo=log.append,
    )
    again = json.loads((tmp_path / "r" / "rt" / "timings" / "p.json").read_text())
    assert again["steps"]["20_sft"] == timings["steps"]["20_sft"]
    assert again["steps"]["00_environment"] != timings["steps"]["00_environment"]
    assert again["last_call"]["wall_s"] == round(again["steps"]["00_environment"]["wall_s"], 1)
    assert again["total"]["wall_s"] == pytest.approx(sum(t["wall_s"] for t in again["steps"].values()), abs=0.1)


@pytest.mark.parametrize(
    "step,key,value",
    [
        ("11_distill", "k", 1),
        ("11_distill", "synthesis", "magpi"),
        ("60_eval_base", "limit", -1),
        ("20_sft", "max_steps", -5),
        ("14_classify_sample", "target_fraction", 1.5),
    ],
)
def test_plan_validates_every_step_before_running_anything(tmp_path, step, key, value):
    doc = yaml.safe_load((REPO / "params" / "pipelines" / "smoke.yaml").read_text())
    for raw in doc["steps"]:
        if raw.get("name", raw["notebook"]) == step:
            raw.setdefault("params", {})[key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "nebula_utils.cli", "run", str(bad), "--plan", "--results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and not (tmp_path / "r").exists()
    (line,) = proc.stderr.strip().splitlines()
    assert "bad.yaml" in line and f"({step}).params: key '{key}'" in line


def test_each_step_kernel_gets_its_own_ipc_socket_prefix(tmp_path):
    """Two kernels started from one folder at once (two pipelines, two test workers) must not bind
    each other's sockets: jupyter_client's default IPC prefix is "kernel-ipc" in the cwd."""
    import tempfile

    from nebula_utils.runner import kernel_manager_class

    a, b = (kernel_manager_class(tmp_path / f"{n}.log", tmp_path / f"{n}.progress")() for n in "ab")
    assert a.transport == b.transport == "ipc" and a.ip != b.ip
    assert all(m.ip.startswith(tempfile.gettempdir()) and len(m.ip) < 90 for m in (a, b))


def timed_execute(spans: dict, fail: str | None = None):
    """Stands in for papermill: sleeps, records (start, end) per step, writes a complete run.json."""
    import threading

    lock = threading.Lock()

    def execute(step, echo=None):
        start = time.perf_counter()
        time.sleep(0.05)
        if step.name == fail:
            spans[step.name] = (start, time.perf_counter())
            raise StepFailed(step, "boom", step.run_dir / "notebook.ipynb")
        step.run_dir.mkdir(parents=True, exist_ok=True)
        (step.run_dir / "run.json").write_text(json.dumps({"run_id": step.run_id, "status": "complete"}))
        with lock:
            spans[step.name] = (start, time.perf_counter())
        return 0.05

    return execute


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_jobs_run_independent_steps_at_once_and_every_step_after_its_inputs(tmp_path, monkeypatch, jobs):
    from nebula_utils import runner

    spans: dict[str, tuple[float, float]] = {}
    monkeypatch.setattr(runner, "execute_step", timed_execute(spans))
    monkeypatch.setattr(runner, "render_reports", lambda *a, **k: None)
    pipeline = load_pipeline(REPO / "params" / "pipelines" / "smoke.yaml", tmp_path)
    status = run_pipeline(pipeline, echo=lambda s: None, jobs=jobs)
    assert set(status.values()) == {"ran"} and set(spans) == {s.name for s in pipeline.steps}
    for step in pipeline.steps:
        inputs = set(step.upstream) | ({"00_environment"} if step.name != "00_environment" else set())
        assert all(spans[step.name][0] >= spans[u][1] for u in inputs), step.name
    events = sorted([(t0, 1) for t0, _ in spans.values()] + [(t1, -1) for _, t1 in spans.values()])
    at_once = max(__import__("itertools").accumulate(d for _, d in events))
    assert at_once == jobs  # smoke's DAG has >= 3 independent steps (the evaluations) at some point
    if jobs == 1:  # the file's order
        assert sorted(spans, key=lambda n: spans[n][0]) == [s.name for s in pipeline.steps]


def test_after_a_failure_no_new_step_starts_and_the_failure_is_raised(tmp_path, monkeypatch):
    from nebula_utils import runner

    spans: dict[str, tuple[float, float]] = {}
    monkeypatch.setattr(runner, "execute_step", timed_execute(spans, fail="13_difficulty"))
    monkeypatch.setattr(runner, "render_reports", lambda *a, **k: None)
    pipeline = load_pipeline(REPO / "params" / "pipelines" / "smoke.yaml", tmp_path)
    with pytest.raises(StepFailed, match="13_difficulty"):
        run_pipeline(pipeline, echo=lambda s: None, jobs=2)
    failed_at = spans["13_difficulty"][1]
    # Between the failing step's last moment and the scheduler seeing its error, the step beside it can
    # finish and free the one other slot: at most one start after the failure, none after that.
    assert sum(start > failed_at for start, _ in spans.values()) <= 1
    assert all(end <= failed_at + 1 for _, end in spans.values())  # the step beside it finished
    assert "16_curriculum" not in spans and "20_sft" not in spans


def test_two_real_steps_at_once_stream_their_own_progress(tmp_path, data, tiny_model_path):
    """Each kernel gets its own progress file in its environment: with --jobs 2 the two SFT runs'
    step lines reach the terminal tagged with their step, none lost or crossed."""
    doc = yaml.safe_load(pipeline_file(tmp_path, data).read_text())
    doc["steps"].append({"name": "20_sft_b", **doc["steps"][1]})
    doc["steps"][2]["params"] = doc["steps"][2]["params"] | {"learning_rate": 1e-3}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(doc))
    log: list[str] = []
    status = run_pipeline(load_pipeline(tmp_path / "two.yaml", tmp_path / "r"), echo=log.append, jobs=2)
    assert status == {"00_environment": "ran", "20_sft": "ran", "20_sft_b": "ran"}
    for name in ("20_sft", "20_sft_b"):
        lines = [line for line in log if line.strip().startswith(f"{name}: sft step")]
        assert lines and "tok/s" in lines[-1], log
    timings = json.loads((tmp_path / "r" / "rt" / "timings" / "two.json").read_text())
    assert set(timings["steps"]) == {"00_environment", "20_sft", "20_sft_b"}


def test_ctrl_c_path_kills_the_running_step_kernels(tmp_path):
    """What the runner does on Ctrl-C with --jobs: every live step kernel gets SIGKILL; a kernel
    shut down normally is no longer tracked."""
    import asyncio

    from nebula_utils import runner

    async def scenario():
        managers = [runner.kernel_manager_class(tmp_path / f"{n}.log", tmp_path / f"{n}.progress")() for n in "ab"]
        for km in managers:
            await km.start_kernel()
        assert runner._LIVE_KERNELS >= set(managers)
        processes = [km.provisioner.process for km in managers]
        await managers[1].shutdown_kernel(now=True)  # finished normally: untracked
        assert managers[1] not in runner._LIVE_KERNELS
        assert runner.kill_running_kernels() >= 1
        processes[0].wait(timeout=10)
        assert processes[0].returncode is not None and processes[0].returncode < 0  # killed by a signal
        await managers[0].shutdown_kernel(now=True)
        assert not runner._LIVE_KERNELS & set(managers)

    asyncio.run(scenario())
