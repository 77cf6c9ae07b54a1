"""A stage's heavy training step, in the notebook's kernel or as an `accelerate launch` job.

`launcher` (a runtime-only stage param, so one run id at every scale) picks how:

* `""`: call the stage's train function here, in the kernel (CPU, one GPU);
* a path to an accelerate config file (params/accelerate/*.yaml, repo-relative or absolute):
  start `accelerate launch --config_file <it> -m nebula_utils.launch.train_entry <stage> <run dir>`
  as a subprocess. Every process re-reads the resolved config the notebook wrote to
  <run dir>/config.yaml and calls the same train function; the main process writes the outputs
  (model/, train_log.json) into the same run folder and the metrics into LAUNCH_METRICS, which
  this side reads back. The job's stdout and stderr are streamed into the notebook line by line
  and kept in <run dir>/launch.log; a failed job raises with its last lines.

Multi-node: run the same `accelerate launch` on every node (tools/slurm_launch.sh does that from
Slurm variables); the notebook side here is for single-node jobs started from a kernel.
"""

from __future__ import annotations

import collections
import importlib
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_yaml
from ..io import read_json
from ..paths import REPO_ROOT, repo_path

LAUNCH_METRICS = "launch_metrics.json"
LAUNCH_LOG = "launch.log"

# stage -> "module:function" of its train function, each (cfg, run_dir) -> metrics dict.
TRAIN_FUNCTIONS = {
    "20_sft": "nebula_utils.train.sft:train_sft",
    "31_dpo": "nebula_utils.train.preference:train_dpo",
    "32_kto": "nebula_utils.train.preference:train_kto",
    "40_grpo": "nebula_utils.train.grpo:train_grpo_stage",
    "50_opd": "nebula_utils.train.distill:train_opd",
    "51_mopd": "nebula_utils.launch.job:train_mopd_backend",
}


def train_mopd_backend(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """51_mopd's train step for its `backend`: local teachers, or TRL's async trainer on vLLM servers."""
    if cfg.backend == "vllm_servers":
        from ..train.mopd_async import train_mopd_async

        return train_mopd_async(cfg, run_dir)
    from ..train.mopd import train_mopd

    return train_mopd(cfg, run_dir)


def train_function(stage: str) -> Callable[[Any, str | Path], dict[str, Any]]:
    if stage not in TRAIN_FUNCTIONS:
        raise ConfigError(f"stage '{stage}' has no launchable train function (known: {', '.join(TRAIN_FUNCTIONS)})")
    module, _, name = TRAIN_FUNCTIONS[stage].partition(":")
    return getattr(importlib.import_module(module), name)


def launcher_path(launcher: str) -> Path:
    """The accelerate config file a `launcher` value names; a missing file is a one-line error."""
    path = repo_path(launcher)
    if not path.is_file():
        raise ConfigError(f"key 'launcher': accelerate config {launcher!r} not found (looked at {path})")
    return path


def launch_command(stage: str, run_dir: str | Path, launcher: str) -> list[str]:
    """The command line of a stage's train step: `accelerate launch` on this machine, or for a
    config with num_machines > 1, tools/slurm_launch.sh (one `accelerate launch` per node of the
    Slurm allocation this kernel runs in)."""
    config = launcher_path(launcher)
    machines = (load_yaml(config).get("num_machines") or 1) if config.suffix in (".yaml", ".yml") else 1
    if machines > 1:
        if not os.environ.get("SLURM_JOB_ID"):
            raise ConfigError(
                f"key 'launcher': {launcher} spans {machines} machines; run inside a Slurm allocation "
                "(tools/slurm_launch.sh starts one process group per node)"
            )
        return ["bash", str(REPO_ROOT / "tools" / "slurm_launch.sh"), str(config), stage, str(run_dir)]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "-m",
        "nebula_utils.launch.train_entry",
        stage,
        str(run_dir),
    ]


def _job_env() -> dict[str, str]:
    env = dict(os.environ)
    # the job imports this package from the same tree as the kernel (an editable install of
    # another checkout would otherwise win), and prints each line as it happens
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_job(command: list[str], log_path: Path, echo: Callable[[str], None] = print, tail_lines: int = 30) -> None:
    """Run `command`, echo every output line as it arrives and append it to `log_path`; a non-zero
    exit raises RuntimeError with the command and the last `tail_lines` lines."""
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=_job_env(),
            cwd=REPO_ROOT,  # relative paths in accelerate configs are repo-relative, as in params
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log.write(line + "\n")
            log.flush()
            echo(line)
        code = proc.wait()
    if code != 0:
        last = "\n".join(tail)
        raise RuntimeError(f"training job exited with {code} (log: {log_path}): {shlex.join(command)}\n{last}")


def train(stage: str, cfg: Any, run_dir: str | Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The stage's train step, as `cfg.launcher` says: in this process, or as an accelerate job
    writing into the same run folder. Returns the train function's metrics either way."""
    run_dir = Path(run_dir)
    launcher = getattr(cfg, "launcher", "")
    if not launcher:
        return train_function(stage)(cfg, run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}/config.yaml: the job re-reads the resolved config; start_run writes it")
    (run_dir / LAUNCH_METRICS).unlink(missing_ok=True)
    run_job(launch_command(stage, run_dir, launcher), run_dir / LAUNCH_LOG, echo)
    if not (run_dir / LAUNCH_METRICS).is_file():
        raise RuntimeError(f"training job finished without writing {run_dir / LAUNCH_METRICS}")
    return read_json(run_dir / LAUNCH_METRICS)
