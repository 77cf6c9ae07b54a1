"""Stage 32_kto: Kahneman-Tversky Optimization with TRL's KTOTrainer on unpaired desirable/undesirable labels.

Reads a preference data version (`data`, by default 30_preference_data's pairs): each pair gives
two unpaired examples, the chosen answer labelled desirable and the rejected one undesirable, and
a KTO group (candidates with a `label`, no chosen/rejected) gives its labelled candidates. KTO
never sees which two answers belong together, which is the point: it trains on thumbs-up /
thumbs-down data. Writes <run_dir>/model (LoRA merged), train_log.json and audit.csv, like 31_dpo.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from ..config import StageConfig, doc
from ._shared import TrainFields

KTO_LOSSES = ("kto", "apo_zero_unpaired")  # TRL 1.16 KTOConfig.loss_type


@dataclasses.dataclass
class KTOStageConfig(TrainFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "30_preference_data/pairs"}

    data: str = doc('preference data version (pairs or labelled groups); "" = the newest 30_preference_data/pairs')
    ref_model: str = doc('frozen reference; "" = the starting `model` (under LoRA: its base weights, adapters off)')
    beta: float = doc("KL strength: higher keeps the policy closer to the reference")
    loss_type: str = doc("kto (Eq. 7 of the KTO paper, with the batch KL estimate) | apo_zero_unpaired")
    desirable_weight: float = doc("weight of the desirable examples' loss (KTO paper: keep weight x count balanced)")
    undesirable_weight: float = doc("weight of the undesirable examples' loss")
    audit: bool = doc("score the preference audit set after training (trained vs reference)")
    audit_batch_size: int = doc("sequences per forward pass when scoring the audit set")

    def check(self) -> None:
        self.check_training()
        self.above("beta", 0.0)
        self.one_of("loss_type", KTO_LOSSES)
        self.above("desirable_weight", 0.0)
        self.above("undesirable_weight", 0.0)
        self.at_least("audit_batch_size", 1)
        if self.loss_type == "kto":  # the KL term is estimated from mismatched pairs within a batch
            self.at_least("per_device_train_batch_size", 2)

    def to_trl(self, output_dir: str | Path) -> Any:
        from trl import KTOConfig

        return self.trl_kwargs(
            KTOConfig,
            output_dir,
            beta=self.beta,
            loss_type=self.loss_type,
            desirable_weight=self.desirable_weight,
            undesirable_weight=self.undesirable_weight,
        )

    def reference(self) -> str:
        return self.ref_model or self.model
