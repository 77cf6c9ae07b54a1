"""The `launcher` param: a training stage's train step run in process or as a real
`accelerate launch` job (CPU config), writing into the same run folder under the same run id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nebula_utils.config import ConfigError, make_run_id
from nebula_utils.io import atomic_write_yaml
from nebula_utils.launch import job
from tests.factories import small_distill_version, small_mix, small_pairs_version

CPU_CONFIG = "params/accelerate/cpu.yaml"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, tiny_model_path) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    mix = small_mix(root / "mix")
    return small_pairs_version(root / "pairs", small_distill_version(root / "distill", mix / "sft"))


def dpo_config(stage_config, pairs: Path, **over):
    values = dict(
        model="tiny-random",
        data=str(pairs),
        max_steps=2,
        learning_rate=5e-3,
        per_device_train_batch_size=2,
        max_length=160,
        logging_steps=1,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        audit=False,
        num_threads=1,
    )
    return stage_config("31_dpo", **(values | over))


def write_run_config(cfg, run_dir: Path) -> None:
    """What start_run writes: the resolved config with the run id and folder."""
    run_id = make_run_id("31_dpo", cfg.science())
    atomic_write_yaml(run_dir / "config.yaml", cfg.to_dict() | {"run_id": run_id, "run_dir": str(run_dir)})


def test_launcher_is_runtime_only_and_checked(stage_config, tmp_path):
    local = dpo_config(stage_config, tmp_path)
    launched = dpo_config(stage_config, tmp_path, launcher=CPU_CONFIG)
    assert make_run_id("31_dpo", local.science()) == make_run_id("31_dpo", launched.science())
    with pytest.raises(
        ConfigError, match=r"key 'launcher': accelerate config 'params/accelerate/nope.yaml' not found"
    ):
        dpo_config(stage_config, tmp_path, launcher="params/accelerate/nope.yaml")
    with pytest.raises(ConfigError, match=r"key 'device': cuda:1 would put every process of the job on one GPU"):
        dpo_config(stage_config, tmp_path, launcher=CPU_CONFIG, device="cuda:1")
    for stage in ("31_dpo", "40_grpo", "50_opd", "51_mopd"):  # the notebooks that train through job.train
        assert callable(job.train_function(stage))
    with pytest.raises(ConfigError, match="stage '13_difficulty' has no launchable train function"):
        job.train_function("13_difficulty")


def test_launch_command_is_accelerate_with_the_config_and_the_entry(tmp_path):
    cmd = job.launch_command("31_dpo", tmp_path, CPU_CONFIG)
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[4].endswith(CPU_CONFIG)
    assert cmd[5:] == ["-m", "nebula_utils.launch.train_entry", "31_dpo", str(tmp_path)]


@pytest.mark.slow
def test_dpo_through_accelerate_launch_on_cpu_matches_in_process(tmp_path, stage_config, pairs):
    """A real `accelerate launch` (params/accelerate/cpu.yaml) of train_entry: the model, the
    training log and the metrics land in the run folder, every line is streamed, and the job
    computes what the in-process call computes (same losses, step by step)."""
    cfg = dpo_config(stage_config, pairs, launcher=CPU_CONFIG)
    run_dir = tmp_path / "run"
    write_run_config(cfg, run_dir)
    lines: list[str] = []
    metrics = job.train("31_dpo", cfg, run_dir, echo=lines.append)

    assert (run_dir / "model" / "config.json").is_file()
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert not (run_dir / ".ranks").exists()
    assert json.loads((run_dir / job.LAUNCH_METRICS).read_text()) == metrics
    assert metrics["train/loss_first"]["value"] == pytest.approx(0.6931, abs=1e-3)
    assert any(line.startswith("[train_entry] 31_dpo rank 0/1 on cpu") for line in lines)
    log = (run_dir / job.LAUNCH_LOG).read_text()
    assert log.startswith("$ ") and "accelerate.commands.launch" in log.splitlines()[0]
    assert all(line in log for line in lines)  # what the notebook showed is what the log keeps
    launched = [h["loss"] for h in json.loads((run_dir / "train_log.json").read_text()) if "loss" in h]

    local_dir = tmp_path / "local"  # launcher "": in this process, no config.yaml needed, no job log
    job.train("31_dpo", dpo_config(stage_config, pairs), local_dir)
    assert not (local_dir / job.LAUNCH_LOG).exists()
    local = [h["loss"] for h in json.loads((local_dir / "train_log.json").read_text()) if "loss" in h]
    assert len(launched) == len(local) == 2
    assert launched[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: log 2
    assert launched == pytest.approx(local, rel=1e-4)


@pytest.mark.slow
def test_failed_job_raises_with_the_log_tail(tmp_path, stage_config, pairs):
    cfg = dpo_config(stage_config, pairs, launcher=CPU_CONFIG)
    run_dir = tmp_path / "run"
    write_run_config(cfg, run_dir)
    broken = (run_dir / "config.yaml").read_text().replace("max_steps: 2", "max_steps: -5")
    (run_dir / "config.yaml").write_text(broken)
    with pytest.raises(RuntimeError, match=r"(?s)training job exited with 1 .*key 'max_steps': must be >= 0"):
        job.train("31_dpo", cfg, run_dir, echo=lambda line: None)


@pytest.mark.slow
def test_opd_train_entry_in_two_cpu_processes(tmp_path, stage_config):
    """Two processes of train_entry under torchrun on CPU (gloo; `accelerate launch` itself starts
    multi-CPU jobs only through MPI): each knows its rank, the sample budget counts both processes
    (4 samples = 2 steps of 1 x 1 x 2), only the main process writes the run folder, and the saved
    model goes through save_trained's multi-process path."""
    import sys

    from tests.factories import copied_model, perturbed_model

    mix = small_mix(tmp_path / "mix")
    cfg = stage_config(
        "50_opd", model=str(copied_model(tmp_path / "student")), teacher=str(perturbed_model(tmp_path / "teacher")),
        data=str(mix / "rl"), num_samples=4, per_device_train_batch_size=1, gradient_accumulation_steps=1,
        max_completion_length=8, learning_rate=1e-3, num_threads=1,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    atomic_write_yaml(run_dir / "config.yaml", cfg.to_dict() | {"run_id": "50_opd-test", "run_dir": str(run_dir)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571"]
    cmd += ["-m", "nebula_utils.launch.train_entry", "50_opd", str(run_dir)]
    lines: list[str] = []
    job.run_job(cmd, run_dir / job.LAUNCH_LOG, lines.append)
    assert {line for line in lines if line.startswith("[train_entry]")} == {
        f"[train_entry] 50_opd rank 0/2 on cpu:0 -> {run_dir}",
        f"[train_entry] 50_opd rank 1/2 on cpu:0 -> {run_dir / '.ranks' / '1'}",
    }
    metrics = json.loads((run_dir / job.LAUNCH_METRICS).read_text())
    assert (metrics["train/steps"]["value"], metrics["train/samples"]["value"]) == (2, 4)
    assert [h["step"] for h in json.loads((run_dir / "train_log.json").read_text()) if "loss" in h] == [1, 2]
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert not (run_dir / ".ranks").exists()
