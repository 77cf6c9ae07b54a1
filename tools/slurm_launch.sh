#!/usr/bin/env bash
# Start one training step of a pipeline on every node of a Slurm allocation: one
# `accelerate launch` per node, each told its node rank and the first node's address.
#
#   sbatch --nodes=4 --gpus-per-node=8 tools/slurm_launch.sh params/accelerate/multinode.yaml 31_dpo results/<pipeline>/<run id>
#   # inside an allocation (salloc, or a notebook running on the first node with `launcher:` set):
#   tools/slurm_launch.sh params/accelerate/multinode.yaml 31_dpo <run dir>
#
# <run dir> must hold the step's resolved config.yaml (the notebook's first cell writes it; with
# `launcher: params/accelerate/multinode.yaml` the notebook calls this script itself and streams
# the log). Every node must see the repository and the run folder at the same path (shared file
# system), and the environment of environment.yml.
#
# From Slurm: SLURM_NNODES (num_machines), SLURM_NODEID (machine_rank), SLURM_JOB_NODELIST (the
# first host is main_process_ip), SLURM_GPUS_ON_NODE (processes per node; else nvidia-smi's
# count). MAIN_PROCESS_PORT (default 29500) and GPUS_PER_NODE override. NEBULA_SLURM_DRY_RUN=1
# prints each node's command instead of running it (tests/launch/test_accelerate_configs.py).
#SBATCH --job-name=nebula-train
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail

usage() { echo "usage: $0 <accelerate config> <stage> <run dir>" >&2; exit 2; }

node_command() {
  # the `accelerate launch` line of this node (runs inside one srun task per node)
  local config=$1 stage=$2 run_dir=$3
  : "${SLURM_NNODES:?not inside a Slurm allocation (SLURM_NNODES unset)}"
  : "${SLURM_NODEID:?SLURM_NODEID unset: run through srun, one task per node}"
  local main_ip=${MAIN_PROCESS_IP:-}
  if [[ -z $main_ip ]]; then
    main_ip=$(scontrol show hostnames "${SLURM_JOB_NODELIST:?SLURM_JOB_NODELIST unset}" | head -n 1)
  fi
  local gpus=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-}}
  if [[ -z $gpus ]]; then
    gpus=$(nvidia-smi --list-gpus | wc -l)
  fi
  CMD=("${PYTHON:-python}" -m accelerate.commands.launch \
    --config_file "$config" \
    --num_machines "$SLURM_NNODES" \
    --num_processes $((SLURM_NNODES * gpus)) \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$main_ip" \
    --main_process_port "${MAIN_PROCESS_PORT:-29500}" \
    -m nebula_utils.launch.train_entry "$stage" "$run_dir")
}

if [[ ${1:-} == --node ]]; then
  shift
  [[ $# -eq 3 ]] || usage
  node_command "$@"
  if [[ ${NEBULA_SLURM_DRY_RUN:-0} == 1 ]]; then
    echo "${CMD[*]}"
    exit 0
  fi
  echo "[slurm_launch] node $SLURM_NODEID/$SLURM_NNODES: ${CMD[*]}"
  exec "${CMD[@]}"
fi

[[ $# -eq 3 ]] || usage
[[ -f $1 ]] || { echo "$0: accelerate config $1 not found" >&2; exit 2; }
[[ -f $3/config.yaml ]] || { echo "$0: $3/config.yaml not found (run the notebook's first cell, or nebula run, first)" >&2; exit 2; }
script=$(realpath "$0")
config=$(realpath "$1")
run_dir=$(realpath "$3")
cd "$(dirname "$script")/.."   # repository root: the job imports nebula_utils from here
# one task per node; each runs this script again in --node mode with its own SLURM_NODEID
exec srun --nodes="${SLURM_NNODES:?not inside a Slurm allocation}" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  bash "$script" --node "$config" "$2" "$run_dir"
