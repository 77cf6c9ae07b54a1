"""Seconds per step and samples/s of on-policy distillation, OPD side by side with routed MOPD.

    OMP_NUM_THREADS=2 python benchmarks/opd.py                      # SmolLM2-135M, 3 steps each
    OMP_NUM_THREADS=2 python benchmarks/opd.py --model tiny-random  # a quick run

Both runs train the same student on the same prompts (the built-in rl sample: 8 math, 8
IFEval-style, 8 HumanEval prompts) with TRL's DistillationTrainer settings of 50_opd:
1. OPD (baseline): TRL's own `DistillationTrainer`, one teacher.
2. MOPD: `MOPDTrainer`, code prompts routed to a second teacher (a copy of the first under
   another path, so the pool really holds two models), `max_resident_teachers=1`.
The ratio MOPD/OPD is the routing overhead (per-teacher sub-batches: one more student and teacher
forward per micro-batch that mixes teachers). Wall time on a shared machine is noisy: the process
CPU time (all threads) is printed next to it, and the two runs alternate in one process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(kind: str, student: str, teacher: str, code_teacher: str, data: str, out: Path, args):
    from trl import DistillationTrainer

    from nebula_utils.config import build_config, merge_layers
    from nebula_utils.stages import stage_config_class, stage_defaults
    from nebula_utils.train.distill import load_causal_lm, load_prompts, student_tokenizer
    from nebula_utils.train.mopd import MOPDTrainer, TeacherPool, route_prompts, teacher_specs

    routes = {"code": code_teacher} if kind == "mopd" else {}
    cls = stage_config_class("51_mopd")
    values = merge_layers(cls, "51_mopd", stage_defaults("51_mopd")) | dict(
        run_dir="",
        run_id="",
        device="cpu",
        model=student,
        teacher=teacher,
        teachers=routes,
        data=data,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.accum,
        max_completion_length=args.max_new,
    )
    cfg = build_config(cls, "51_mopd", values, "benchmarks/opd.py")
    prompts = route_prompts(load_prompts(data), routes)
    common = dict(
        model=load_causal_lm(student),
        args=cfg.to_trl(out, args.steps),
        train_dataset=prompts,
        processing_class=student_tokenizer(student),
    )
    if kind == "opd":
        return DistillationTrainer(teacher_model=load_causal_lm(teacher), **common)
    return MOPDTrainer(teachers=TeacherPool(teacher_specs(teacher, routes), "cpu", 1, "cpu"), **common)


def measure(trainer) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    steps = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
    samples = (
        trainer.state.global_step * trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    )
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {
        "s/step (mean)": sum(steps) / len(steps),
        "s/step (after the 1st)": sum(steps[1:]) / max(1, len(steps) - 1),
        "samples/s": samples / wall,
        "cpu s/step": cpu / len(steps),
        "completion tokens": sum(lengths) / len(lengths),
        "wall s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=2)
    parser.add_argument("--max-new", type=int, default=128)
    args = parser.parse_args()

    import torch

    from nebula_utils.data.builtin import builtin_version
    from nebula_utils.inference.models import resolve_model_path

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    tmp = Path(tempfile.mkdtemp(prefix="opd-bench-"))
    try:
        data = str(builtin_version("rl", tmp / "rl").path)
        src = resolve_model_path(args.model)
        student, teacher, code_teacher = (str(shutil.copytree(src, tmp / n)) for n in ("student", "teacher", "code"))
        print(
            f"{args.model}: {args.batch} x {args.accum} = {args.batch * args.accum} samples/step, "
            f"{args.max_new} new tokens, {args.steps} steps, {torch.get_num_threads()} threads"
        )
        results = {}
        for kind in ("opd", "mopd"):
            results[kind] = measure(build(kind, student, teacher, code_teacher, data, tmp / kind, args))
        print(f"{'':24}{'OPD (TRL)':>12}{'MOPD (ours)':>14}{'ratio':>8}")
        for key in results["opd"]:
            a, b = results["opd"][key], results["mopd"][key]
            print(f"{key:24}{a:12.2f}{b:14.2f}{b / a if a else float('nan'):8.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
