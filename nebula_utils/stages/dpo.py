"""Stage 31_dpo: Direct Preference Optimization with TRL's DPOTrainer on chosen/rejected pairs.

Reads the pairs written by 30_preference_data (`data`), trains `model` against a frozen reference
(`ref_model`; "" = the starting checkpoint, or under LoRA its base weights with the adapters
disabled), and writes <run_dir>/model (LoRA merged), train_log.json (loss, learning rate, grad
norm, rewards, margins, reward accuracy per logging step) and audit.csv (the preference audit,
nebula_utils.evaluate.preference_audit). `loss_type: sigmoid_norm` is Tülu 3's length-normalised
DPO (see nebula_utils.train.preference). The trainer call lives in nebula_utils.train.preference.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from ..config import StageConfig, doc
from ._shared import LaunchFields, TrainFields

# TRL 1.16 DPOConfig.loss_type values (trl/trainer/dpo_config.py); sigmoid_norm = Tülu 3's variant
DPO_LOSSES = (
    "sigmoid",
    "sigmoid_norm",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
)


@dataclasses.dataclass
class DPOStageConfig(LaunchFields, TrainFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "30_preference_data/pairs"}

    data: str = doc('preference data version with chosen/rejected pairs; "" = the newest 30_preference_data/pairs')
    ref_model: str = doc('frozen reference; "" = the starting `model` (under LoRA: its base weights, adapters off)')
    beta: float = doc(
        "KL strength: higher keeps the policy closer to the reference (0.1 standard; ~5 with sigmoid_norm)"
    )
    loss_type: str = doc(
        "TRL DPO loss: sigmoid (DPO), sigmoid_norm (Tülu 3 length-normalised), ipo, hinge, robust, ..."
    )
    precompute_ref_log_probs: bool = doc("score the reference once before training (no reference forward per step)")
    audit: bool = doc("score the preference audit set after training (trained vs reference)")
    audit_batch_size: int = doc("sequences per forward pass when scoring the audit set")

    def check(self) -> None:
        self.check_training()
        self.check_launcher()
        self.above("beta", 0.0)
        self.one_of("loss_type", DPO_LOSSES)
        self.at_least("audit_batch_size", 1)

    def to_trl(self, output_dir: str | Path) -> Any:
        from trl import DPOConfig

        return self.trl_kwargs(
            DPOConfig,
            output_dir,
            beta=self.beta,
            loss_type=[self.loss_type],
            precompute_ref_log_probs=self.precompute_ref_log_probs,
        )

    def reference(self) -> str:
        """The model the audit compares against: the explicit reference, else the starting checkpoint."""
        return self.ref_model or self.model
