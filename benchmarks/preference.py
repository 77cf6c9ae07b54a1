"""Cost of the preference stages' building blocks, side by side in one process, as ratios to full DPO.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/preference.py                      # SmolLM2-135M
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/preference.py --model tiny-random  # a quick check

On the same real pairs (the dataset's verified answers vs tiny-random's truncated ones, built by the
library from reasoning-gym / HumanEval prompts, as the smoke pipeline does) it times:

1. DPO, full fine-tuning with a frozen reference copy (the baseline: 31_dpo's default);
2. DPO with LoRA, the reference being the base weights with the adapters disabled (no second model);
3. DPO, full, `precompute_ref_log_probs` (one reference pass over the data before training);
4. DPO with `loss_type: sigmoid_norm` (Tülu 3's length-normalised loss; should cost the same as 1);
5. KTO, full (each pair becomes two unpaired examples, plus the batch KL pass);
6. the preference audit (108 answers) under one model: what each stage's audit adds per model scored.

Each training variant runs `--steps` optimizer steps after one warm-up step that is not timed
(first-call allocation); wall time and process CPU time are printed with the ratio to variant 1. The
machine is shared, so compare the ratios, not the absolute seconds, and rerun when in doubt.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pairs_version(root: Path) -> Path:
    from tests.factories import small_distill_version, small_mix, small_pairs_version

    mix = small_mix(root / "mix")
    return small_pairs_version(root / "pairs", small_distill_version(root / "distill", mix / "sft"))


def stage_config(stage: str, **over):
    from tests.conftest import build_stage_config

    return build_stage_config(stage, **over)


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def train_variant(build, cfg, out: Path, steps: int) -> tuple[float, float]:
    """Build the trainer for warm-up + `steps` steps; time the steps after the first (a callback marks it)."""
    from transformers import TrainerCallback

    marks: dict[str, float] = {}

    class Mark(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                marks["wall"], marks["cpu"] = time.perf_counter(), time.process_time()

    trainer = build(cfg, out)
    trainer.add_callback(Mark())
    trainer.train()
    return time.perf_counter() - marks["wall"], time.process_time() - marks["cpu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per variant")
    parser.add_argument("--batch", type=int, default=2, help="pairs per step")
    args = parser.parse_args()

    import torch

    from nebula_utils.evaluate.preference_audit import load_audit_pairs, pair_logprobs
    from nebula_utils.inference.models import load_model_and_tokenizer
    from nebula_utils.train.preference import build_dpo_trainer, build_kto_trainer

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = pairs_version(root)
        common = dict(
            model=args.model,
            data=str(data),
            max_steps=args.steps + 1,
            per_device_train_batch_size=args.batch,
            max_length=512,
            learning_rate=1e-6,
            audit=False,
        )
        variants = {
            "dpo full (frozen copy)": (build_dpo_trainer, stage_config("31_dpo", **common)),
            "dpo lora (base as ref)": (build_dpo_trainer, stage_config("31_dpo", **common, use_lora=True)),
            "dpo full, precomputed ref": (
                build_dpo_trainer,
                stage_config("31_dpo", **common, precompute_ref_log_probs=True),
            ),
            "dpo sigmoid_norm": (build_dpo_trainer, stage_config("31_dpo", **common, loss_type="sigmoid_norm")),
            "kto full (2 examples/pair)": (
                build_kto_trainer,
                stage_config("32_kto", **(common | {"per_device_train_batch_size": 2 * args.batch})),
            ),
        }
        rows = []
        for i, (name, (build, cfg)) in enumerate(variants.items()):
            wall, cpu = train_variant(build, cfg, root / f"v{i}", args.steps)
            rows.append((name, wall / args.steps, cpu / args.steps))
        model, tok = load_model_and_tokenizer(args.model, device="cpu")
        audit = load_audit_pairs()
        wall, cpu = timed(lambda: pair_logprobs(model, tok, audit, batch_size=8))
        rows.append((f"audit, one model ({2 * len(audit)} answers)", wall, cpu))

    base_wall, base_cpu = rows[0][1], rows[0][2]
    print(f"\nmodel {args.model}, {args.batch} pairs per step, {args.steps} timed steps; per step (audit: per pass)")
    print(f"{'variant':34s} {'wall s':>8s} {'cpu s':>8s} {'wall x':>7s} {'cpu x':>7s}")
    for name, wall, cpu in rows:
        print(f"{name:34s} {wall:8.2f} {cpu:8.2f} {wall / base_wall:7.2f} {cpu / base_cpu:7.2f}")


if __name__ == "__main__":
    main()
