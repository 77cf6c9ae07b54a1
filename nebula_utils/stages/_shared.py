"""Parameter groups several stages share (declared once, documented once)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import doc

BACKENDS = ("auto", "transformers", "vllm")


@dataclasses.dataclass
class SamplingFields:
    """Generation knobs of the stages that sample from a model (distillation, difficulty grading)."""

    backend: str = doc("auto (vLLM when installed and CUDA is present, else transformers) | transformers | vllm")
    batch_size: int = doc(
        "transformers backend: rows decoded together by the continuous-batching engine; 0 = the size measured "
        "once per machine and model (nebula_utils.inference.tuning: 128 rows in bf16 for SmolLM2 on the 2-core "
        "dev machine)"
    )
    temperature: float = doc("sampling temperature; 0 = greedy")
    top_p: float = doc("nucleus sampling mass")
    max_new_tokens: int = doc("token budget per answer; longer answers end with finish_reason 'length'")

    def check_sampling(self) -> None:
        self.one_of("backend", BACKENDS)
        self.at_least("batch_size", 0)
        self.at_least("temperature", 0.0)
        self.within("top_p", 0.0, 1.0)
        self.above("top_p", 0.0)
        self.at_least("max_new_tokens", 1)

    def sampling(self, n: int, logprobs: bool = False) -> Any:
        """n samples per prompt with these knobs, seeded by the stage seed."""
        from ..inference.generation import SamplingParams

        return SamplingParams(
            n=n,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            logprobs=logprobs,
        )
