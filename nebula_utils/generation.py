"""One generation interface, two backends: transformers (CPU/GPU, batched) and vLLM (GPU).

Both take chat prompts (lists of {role, content}) and return, per prompt, `n` completions as
plain text, so distillation, difficulty grading, on-policy evaluation and the eval fast path
share one code path whatever the hardware.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 -> greedy
    top_p: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationStats:
    prompts: int = 0
    completions: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def _as_messages(prompt: str | Messages) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


class TransformersGenerator:
    """Batched `model.generate` with left padding; prompts sorted by length to limit padding."""

    backend = "transformers"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.stats = GenerationStats()

    @classmethod
    def from_spec(cls, spec: str, device: str = "auto", batch_size: int = 8) -> "TransformersGenerator":
        from .models import load_model_and_tokenizer

        model, tok = load_model_and_tokenizer(spec, device=device)
        return cls(model, tok, batch_size)

    def generate(self, prompts: Sequence[str | Messages], params: SamplingParams) -> list[list[str]]:
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        texts = [
            tok.apply_chat_template(_as_messages(p), tokenize=False, add_generation_prompt=True) for p in prompts
        ]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        outputs: list[list[str]] = [[] for _ in texts]
        do_sample = params.temperature > 0
        torch.manual_seed(params.seed)
        start = time.perf_counter()
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(self.model.device)
            with torch.inference_mode():
                out = self.model.generate(
                    **enc,
                    max_new_tokens=params.max_new_tokens,
                    do_sample=do_sample,
                    temperature=params.temperature if do_sample else None,
                    top_p=params.top_p if do_sample else None,
                    num_return_sequences=params.n,
                    pad_token_id=tok.pad_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            self.stats.new_tokens += int((new != tok.pad_token_id).sum())
            decoded = tok.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(idx):
                outputs[i] = [s.strip() for s in decoded[j * params.n : (j + 1) * params.n]]
        self.stats.seconds += time.perf_counter() - start
        self.stats.prompts += len(texts)
        self.stats.completions += len(texts) * params.n
        return outputs


class VLLMGenerator:
    """vLLM offline engine; used on GPU when vllm is installed (the `gpu` extra)."""

    backend = "vllm"

    def __init__(self, model_path: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85):
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self.stats = GenerationStats()

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> "VLLMGenerator":
        from .models import resolve_model_path

        return cls(resolve_model_path(spec), **kwargs)

    def generate(self, prompts: Sequence[str | Messages], params: SamplingParams) -> list[list[str]]:
        from vllm import SamplingParams as VSampling

        sampling = VSampling(
            n=params.n,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
        )
        start = time.perf_counter()
        results = self.llm.chat([_as_messages(p) for p in prompts], sampling, use_tqdm=False)
        self.stats.seconds += time.perf_counter() - start
        self.stats.prompts += len(prompts)
        self.stats.completions += len(prompts) * params.n
        self.stats.new_tokens += sum(len(o.token_ids) for r in results for o in r.outputs)
        return [[o.text.strip() for o in r.outputs] for r in results]


def vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def make_generator(spec: str, backend: str = "auto", device: str = "auto", batch_size: int = 8):
    """backend: auto (vLLM when installed and CUDA is present, else transformers) | vllm | transformers."""
    if backend == "auto":
        backend = "vllm" if vllm_available() else "transformers"
    if backend == "vllm":
        return VLLMGenerator.from_spec(spec)
    if backend == "transformers":
        return TransformersGenerator.from_spec(spec, device=device, batch_size=batch_size)
    raise ValueError(f"unknown generation backend '{backend}' (auto | vllm | transformers)")
