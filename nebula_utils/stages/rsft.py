"""Stage 33_rsft: rejection-sampling fine-tuning: the policy answers k times, the best verified answer is kept, the policy is fine-tuned on them.

Reads an `rl` (or `sft`) version of prompts with verifiers (`data`), samples k answers per prompt
from `model`, keeps the best passing one per prompt (nebula_utils.train.rsft) and writes:
  <run_dir>/data    the kept answers as an `sft` version (select + rejection_sample steps; prompts
                    without a passing answer are counted as dropped, `no_passing_sample`)
  <run_dir>/model   `model` fine-tuned on them by 20_sft's trainer (train.sft.train_sft, called
                    with an SFT config built from params/stages/20_sft.yaml and this stage's knobs)
  samples.csv, train_log.json, audit.csv
The effective sample rate (kept / generated) is reported per task with its 95% interval.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from ..config import StageConfig, doc
from ._shared import SamplingFields, TrainFields

RSFT_NOTE = "RSFT answers are the policy's own text; their prompts keep the parent's isolation record"


@dataclasses.dataclass
class RSFTStageConfig(SamplingFields, TrainFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "10_data_sft_mix/rl"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "rl"}

    data: str = doc('rl or sft version of verifiable prompts; "" = the newest 10_data_sft_mix/rl')
    max_prompts: int = doc("0 = every prompt; else a seeded sample of this many")
    k: int = doc("answers sampled per prompt from the current policy (`model`)")
    min_score: float = doc("verifier score an answer needs to be kept (IFEval gives partial credit; 1.0 = all)")
    allow_truncated: bool = doc("keep an answer cut at max_new_tokens (tiny test models never end their turn)")
    verifier_workers: int = doc("threads for sandboxed code verification")
    assistant_only_loss: bool = doc("fine-tune on the answer tokens only (20_sft's assistant_only_loss)")
    packing: bool = doc("pack several samples into one sequence (20_sft's packing)")
    audit: bool = doc("score the preference audit set after training (trained vs the starting model)")
    audit_batch_size: int = doc("sequences per forward pass when scoring the audit set")

    def check(self) -> None:
        self.check_sampling()
        self.check_training()
        self.at_least("max_prompts", 0)
        self.at_least("k", 1)
        self.within("min_score", 0.0, 1.0)
        self.at_least("verifier_workers", 1)
        self.at_least("audit_batch_size", 1)

    def reference(self) -> str:
        return self.model

    def sft_config(self, data: str | Path) -> Any:
        """The 20_sft config that trains on `data`: its YAML defaults, then every field both stages
        declare (model, LR, epochs, LoRA, ...) from this config, so a field 20_sft gains later keeps
        its own default."""
        from ..config import build_config, field_types, merge_layers
        from . import stage_config_class, stage_defaults

        cls = stage_config_class("20_sft")
        values = merge_layers(cls, "20_sft", stage_defaults("20_sft"))
        mine = self.to_dict()
        values |= {k: mine[k] for k in field_types(cls) if k in mine} | {"data": str(data)}
        return build_config(cls, "20_sft", values, source="33_rsft -> 20_sft")


def load_records(cfg: RSFTStageConfig) -> tuple[list[dict], dict, dict]:
    """(prompt records of the seeded selection, the input's manifests, the select step)."""
    from ..data.distillation import prompt_records
    from ..data.mixing import select_from_version

    ds, manifests, step = select_from_version(cfg.data, cfg.max_prompts, cfg.seed, ("rl", "sft"))
    return prompt_records(ds, manifests["version"]["schema"]), manifests, step


def write_kept(
    cfg: RSFTStageConfig,
    rows: list[dict],
    n_prompts: int,
    manifests: dict,
    select_step: dict,
    generator: Any,
    out: Path,
) -> Any:
    """The kept answers as an sft version with the inherited manifests and this stage's steps."""
    from ..data.manifests import processing_step, source_entry
    from ..data.schema import to_dataset
    from ..data.versions import inherited_isolation, save_version

    step = processing_step(
        "rejection_sample",
        count_in=n_prompts,
        count_out=len(rows),
        params={
            "k": cfg.k,
            "min_score": cfg.min_score,
            "allow_truncated": cfg.allow_truncated,
            "sampling": cfg.sampling(cfg.k, logprobs=True).to_dict(),
            "generator": generator.spec(),
        },
        drop_reasons={"no_passing_sample": n_prompts - len(rows)},
    )
    sources = manifests["source"]["sources"] + [
        source_entry(f"policy:{cfg.model}", path=cfg.model, license="model outputs")
    ]
    return save_version(
        to_dataset("sft", rows),
        out,
        "sft",
        sources,
        manifests["processing"]["steps"] + [select_step, step],
        parents=[manifests["version"]["content_hash"]],
        isolation=inherited_isolation(manifests, [RSFT_NOTE]),
    )
