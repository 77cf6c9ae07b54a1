"""params/accelerate/*.yaml and tools/slurm_launch.sh, validated by accelerate's own code: the
config classes, `accelerate launch`'s argument validation, and the DeepSpeed / FSDP plugins built
from the environment the launcher would give each process (no GPU, no DeepSpeed needed)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from nebula_utils.config import ConfigError
from nebula_utils.launch import job
from nebula_utils.paths import REPO_ROOT

CONFIGS = REPO_ROOT / "params" / "accelerate"
SLURM = REPO_ROOT / "tools" / "slurm_launch.sh"
EXPECTED = {
    # file: (distributed type, processes, machines)
    "cpu.yaml": (DistributedType.NO, 1, 1),
    "1gpu.yaml": (DistributedType.NO, 1, 1),
    "8gpu_zero3.yaml": (DistributedType.DEEPSPEED, 8, 1),
    "8gpu_fsdp2.yaml": (DistributedType.FSDP, 8, 1),
    "multinode.yaml": (DistributedType.DEEPSPEED, 16, 2),
}


def validated(argv: list[str]):
    """`accelerate launch <argv>` up to the point where it would start processes."""
    args = launch_command_parser().parse_args(argv)
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate_cluster_config(name):
    config = ClusterConfig.from_yaml_file(str(CONFIGS / name))  # unknown keys raise here
    kind, processes, machines = EXPECTED[name]
    assert (config.distributed_type, config.num_processes, config.num_machines) == (kind, processes, machines)
    assert config.use_cpu == (name == "cpu.yaml")
    if name != "cpu.yaml":
        assert config.mixed_precision == "bf16"


@pytest.mark.parametrize("name", ["8gpu_zero3.yaml", "multinode.yaml"])
def test_deepspeed_configs_build_a_zero3_plugin(name):
    args, defaults = validated(["--config_file", str(CONFIGS / name), "-m", "nebula_utils.launch.train_entry"])
    assert args.use_deepspeed and args.zero_stage == 3
    # as `accelerate launch` does before deepspeed_launcher: the fields the config file set
    args.deepspeed_fields_from_accelerate_config = ",".join([*defaults.deepspeed_config, "mixed_precision"])
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()  # what each process's Accelerator builds from that environment
    zero = plugin.hf_ds_config.config["zero_optimization"]
    assert plugin.zero_stage == zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # one bf16 checkpoint on save
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "none"
    assert plugin.hf_ds_config.config["gradient_clipping"] == 1.0
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_fsdp2_config_builds_a_full_shard_fsdp2_plugin():
    args, _ = validated(["--config_file", str(CONFIGS / "8gpu_fsdp2.yaml"), "-m", "nebula_utils.launch.train_entry"])
    assert args.use_fsdp and args.num_processes == 8
    env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # FULL_SHARD: ZeRO-3 in `nebula plan`
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    assert plugin.cpu_ram_efficient_loading is True
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def slurm_node(rank: int, nodes: int = 2, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    base |= {"SLURM_NNODES": str(nodes), "SLURM_NODEID": str(rank), "SLURM_GPUS_ON_NODE": "8"}
    base |= {"MAIN_PROCESS_IP": "10.0.0.7", "NEBULA_SLURM_DRY_RUN": "1"} | env
    argv = ["bash", str(SLURM), "--node", str(CONFIGS / "multinode.yaml"), "31_dpo", "/shared/run"]
    return subprocess.run(argv, env=base, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("rank", [0, 3])
def test_slurm_launcher_gives_each_node_its_rank_and_the_main_address(rank):
    done = slurm_node(rank, nodes=4)
    assert done.returncode == 0, done.stderr
    argv = shlex.split(done.stdout.strip())
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    args, _ = validated(argv[3:])  # the node's command line through accelerate's own validation
    assert (args.num_machines, args.num_processes, args.machine_rank) == (4, 32, rank)
    assert (args.main_process_ip, args.main_process_port) == ("10.0.0.7", 29500)
    assert args.use_deepspeed and args.zero_stage == 3
    assert args.module and args.training_script == "nebula_utils.launch.train_entry"
    assert args.training_script_args == ["31_dpo", "/shared/run"]


def test_slurm_launcher_outside_an_allocation_says_so():
    done = slurm_node(0, SLURM_NNODES="")
    assert done.returncode != 0 and "not inside a Slurm allocation" in done.stderr


def test_multinode_launcher_needs_slurm_and_then_uses_the_script(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ConfigError, match=r"key 'launcher': .*multinode.yaml spans 2 machines"):
        job.launch_command("31_dpo", tmp_path, "params/accelerate/multinode.yaml")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    cmd = job.launch_command("31_dpo", tmp_path, "params/accelerate/multinode.yaml")
    assert cmd == ["bash", str(SLURM), str(CONFIGS / "multinode.yaml"), "31_dpo", str(tmp_path)]
    assert Path(cmd[1]).is_file()
