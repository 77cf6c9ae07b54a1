"""One generation interface, two backends: transformers (CPU/GPU, batched) and vLLM (GPU).

Both take chat prompts (lists of {role, content}, or a plain string = one user turn) and return,
per prompt, `n` completions, so distillation, synthesis, difficulty grading, on-policy
evaluation and the eval fast path share one code path whatever the hardware:

    gen = make_generator("packaged:smollm2-135m-instruct")
    groups = gen.generate_full(prompts, SamplingParams(n=4, temperature=0.8, max_new_tokens=256))
    groups[0][0].text, groups[0][0].finish_reason  # "stop" | "length" (truncated)

- `generate` returns texts only (list[list[str]]); `generate_full` returns `Completion`s with the
  finish reason ("stop": the model ended its turn; "length": cut at max_new_tokens, i.e.
  truncated), the number of generated tokens and, when `SamplingParams.logprobs` is set, the mean
  log-probability of the generated tokens under the model's raw (untempered) distribution.
- `complete_raw` continues already-formatted text (no chat template applied): Magpie feeds a
  chat template's user-turn prefix this way.
- `spec()` is a JSON-able description (backend, model, batch size, library versions; for
  transformers also scheduler, weight dtype and the measurements behind them) that data
  manifests record beside the sampling params.

The transformers backend decodes by continuous batching (engine.py): finished rows leave the
batch and queued prompts take their slots, instead of static batches of 8 that waited for their
longest completion. Batch size and, on CPUs with native bf16, bf16 weights are chosen by a measured
sweep (tuning.py), and CPU fast paths are used where they measured faster (fastpath.py).
`scheduler="static"` keeps the old path. Greedy outputs equal plain `model.generate` token for
token in fp32; bf16 stays within the tolerance stated in tests/inference/test_generation_fast.py.
Throughput: benchmarks/generation.py.

Greedy decoding (temperature 0) with n > 1 returns n copies of the one greedy completion on both
backends: greedy is deterministic, and transformers refuses num_return_sequences > 1 without
sampling or beams.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Messages = list[dict[str, str]]
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 -> greedy
    top_p: float = 1.0
    seed: int = 0
    logprobs: bool = False  # also return each completion's mean token log-prob

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams: n={self.n} and max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"SamplingParams: temperature={self.temperature} must be >= 0, top_p={self.top_p} in (0, 1]"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    num_tokens: int
    mean_logprob: float | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

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

    def add(self, prompts: int, completions: list[list[Completion]], seconds: float, greedy: bool = False) -> None:
        self.prompts += prompts
        self.completions += sum(len(c) for c in completions)
        # greedy n > 1 copies one completion: count the tokens actually generated
        self.new_tokens += sum(c.num_tokens for group in completions for c in (group[:1] if greedy else group))
        self.seconds += seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"tokens_per_s": self.tokens_per_s}


def _as_messages(prompt: str | Messages) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


class _Base:
    progress_label = "generate"  # names the progress lines (transformers backend; vLLM has its own bar)
    backend = "base"
    model_spec = ""
    batch_size = 0
    tokenizer: Any = None

    def chat_texts(self, prompts: Sequence[str | Messages]) -> list[str]:
        tok = self.tokenizer
        return [tok.apply_chat_template(_as_messages(p), tokenize=False, add_generation_prompt=True) for p in prompts]

    def generate_full(self, prompts: Sequence[str | Messages], params: SamplingParams) -> list[list[Completion]]:
        return self.complete_raw(self.chat_texts(prompts), params)

    def generate(self, prompts: Sequence[str | Messages], params: SamplingParams) -> list[list[str]]:
        return [[c.text for c in group] for group in self.generate_full(prompts, params)]

    def complete_raw(self, texts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model_spec,
            "batch_size": self.batch_size,
            "versions": _versions("torch", "transformers", "vllm"),
        }


# Fields of a model's generation_config that add logits processors the continuous engine does not
# apply; a model that sets any of them is served by the static path, which runs `model.generate`.
_UNSUPPORTED_PROCESSING = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
}
# `model.generate` fills an unset top_k with transformers' global default (50) when sampling; the
# old path applied it implicitly and the continuous engine does the same.
DEFAULT_TOP_K = 50
STATIC_BATCH_SIZE = 8  # the old path's constant, kept for `scheduler="static"`


class TransformersGenerator(_Base):
    """transformers backend.

    scheduler="continuous" (default): `engine.ContinuousBatcher` keeps up to `batch_size` sequences
    decoding in one KV cache and refills a finished row's slot at once. batch_size=0 (default) and
    dtype="auto" are chosen by a measured sweep (`tune_generation`, cached per machine and
    architecture): on CPU, bf16 weights only where the CPU has native bf16 and they measured faster.
    The weights are cast only when the generator owns the model (`from_spec`, or owns_model=True):
    a model passed in (an RL policy between updates) keeps its dtype unless `dtype` is explicit.
    scheduler="static": the previous path, unchanged (prompts sorted by length, batched
    `model.generate` with left padding, each batch waiting for its longest completion); it is the
    baseline of benchmarks/generation.py and the fallback for models the engine does not support
    (sliding-window or linear attention, logits processors set in the model's generation_config).
    """

    backend = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 0,
        model_spec: str = "",
        scheduler: str = "continuous",
        dtype: str = "auto",
        fast_paths: bool = True,
        owns_model: bool = False,
    ):
        if scheduler not in ("continuous", "static"):
            raise ValueError(f"unknown scheduler '{scheduler}' (continuous | static)")
        if dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"unknown dtype '{dtype}' (auto | float32 | bfloat16 | float16)")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.model_spec = model_spec or getattr(model, "name_or_path", "")
        self.scheduler, self.dtype, self.fast_paths, self.owns_model = scheduler, dtype, fast_paths, owns_model
        self.stats = GenerationStats()
        self.tuning: dict[str, Any] | None = None
        self.fallback_reason = ""
        # Called as (done, total, tokens generated so far) after each decode step; the
        # default writes throttled `generate 120/480 · 96 tok/s · ETA 3m10s` lines that `nebula run`
        # echoes (a 15-minute distillation step printed nothing before). None = silent.
        self.on_progress: Any = "default"
        self._resolved = False
        eos = model.generation_config.eos_token_id
        self.eos_ids = (set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}) - {None}

    @classmethod
    def from_spec(
        cls,
        spec: str,
        device: str = "auto",
        batch_size: int = 0,
        scheduler: str = "continuous",
        dtype: str = "auto",
        fast_paths: bool = True,
    ) -> TransformersGenerator:
        from .models import load_model_and_tokenizer

        model, tok = load_model_and_tokenizer(spec, device=device)
        return cls(model, tok, batch_size, spec, scheduler, dtype, fast_paths, owns_model=True)

    # ------------------------------------------------------------------ choices made once
    def _resolve(self) -> None:
        """Pick scheduler, weight dtype and batch size (measured where asked to); once per generator."""
        if self._resolved:
            return
        self._resolved = True
        if self.scheduler == "continuous":
            from .engine import Slab, UnsupportedModel

            try:
                Slab(self.model, 1, 1)
            except UnsupportedModel as exc:
                self.scheduler, self.fallback_reason = "static", str(exc)
        if self.scheduler == "static":
            if self.dtype not in ("auto", _dtype_name(self.model)):
                self.model.to(_torch_dtype(self.dtype))
            return
        dtype = self.dtype if self.dtype != "auto" or self.owns_model else _dtype_name(self.model)
        if dtype == "auto" or not self.batch_size:
            from .tuning import tune_generation

            self.tuning = tune_generation(self.model, dtype, self.batch_size, self.fast_paths)
            if not self.batch_size:
                self.batch_size = self.tuning["batch_size"]
            target = self.tuning["dtype"]
        else:
            target = dtype
        if target != _dtype_name(self.model):
            self.model.to(_torch_dtype(target))

    def _finish(self, new_ids: list[int]) -> tuple[int, str]:
        """(tokens generated up to and including the end-of-turn token, finish reason)."""
        for i, tok_id in enumerate(new_ids):
            if tok_id in self.eos_ids:
                return i + 1, "stop"
        return len(new_ids), "length"

    def _completion(self, ids: list[int], logps: list[float] | None) -> Completion:
        count, reason = self._finish(ids)
        text = self.tokenizer.decode(ids[:count], skip_special_tokens=True).strip()
        mean_lp = float(sum(logps[:count]) / count) if logps is not None and count else None
        return Completion(text, reason, count, mean_lp)

    def _unsupported_processing(self) -> str:
        config = self.model.generation_config
        odd = [k for k, default in _UNSUPPORTED_PROCESSING.items() if getattr(config, k, None) not in (None, default)]
        return f"generation_config sets {', '.join(odd)}" if odd else ""

    # ------------------------------------------------------------------ static path (the old one)
    def _batch(self, texts: list[str], params: SamplingParams) -> list[list[Completion]]:
        import torch

        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        n_return = 1 if params.greedy else params.n
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=params.max_new_tokens,
                do_sample=not params.greedy,
                temperature=None if params.greedy else params.temperature,
                top_p=None if params.greedy else params.top_p,
                num_return_sequences=n_return,
                pad_token_id=tok.pad_token_id,
                return_dict_in_generate=True,
                output_logits=params.logprobs,
            )
        new = out.sequences[:, enc["input_ids"].shape[1] :]
        token_logps = None
        if params.logprobs:  # raw logits -> log-probs of the tokens actually generated
            logits = torch.stack(out.logits, dim=1).float()
            token_logps = torch.log_softmax(logits, dim=-1).gather(-1, new[:, : logits.shape[1], None]).squeeze(-1)
        flat = []
        for row in range(new.shape[0]):
            ids = new[row].tolist()
            count, reason = self._finish(ids)
            text = tok.decode(ids[:count], skip_special_tokens=True).strip()
            mean_lp = float(token_logps[row, :count].mean()) if token_logps is not None and count else None
            flat.append(Completion(text, reason, count, mean_lp))
        groups = [flat[j * n_return : (j + 1) * n_return] for j in range(len(texts))]
        return [g * params.n if params.greedy else g for g in groups]

    def _static(self, texts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        import torch

        self.tokenizer.padding_side = "left"
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        outputs: list[list[Completion]] = [[] for _ in texts]
        torch.manual_seed(params.seed)
        size = self.batch_size or STATIC_BATCH_SIZE
        for lo in range(0, len(order), size):
            idx = order[lo : lo + size]
            for i, group in zip(idx, self._batch([texts[i] for i in idx], params)):
                outputs[i] = group
        return outputs

    # ------------------------------------------------------------------ continuous path
    def _continuous(self, texts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        from .engine import ContinuousBatcher, Options

        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        empty = [i for i, x in enumerate(ids) if not x]
        if empty:
            raise ValueError(f"complete_raw: text {empty[0]} tokenizes to no tokens; nothing to continue")
        top_k = getattr(self.model.generation_config, "top_k", None)
        opts = Options(
            max_new_tokens=params.max_new_tokens,
            greedy=params.greedy,
            temperature=params.temperature,
            top_k=DEFAULT_TOP_K if top_k is None else top_k,
            top_p=params.top_p,
            seed=params.seed,
            logprobs=params.logprobs,
        )
        batcher = ContinuousBatcher(
            self.model, self.eos_ids, self.tokenizer.pad_token_id, self.batch_size, fast_paths=self.fast_paths
        )
        rows = batcher.run(ids, opts, 1 if params.greedy else params.n, self._progress_hook())
        groups = [[self._completion(r.tokens, r.logprobs if params.logprobs else None) for r in g] for g in rows]
        return [g * params.n if params.greedy else g for g in groups]

    def _progress_hook(self):
        if self.on_progress == "default":
            from ..runs import ItemProgress

            return ItemProgress(self.progress_label)
        return self.on_progress

    def complete_raw(self, texts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        self._resolve()
        start = time.perf_counter()
        unsupported = self._unsupported_processing()
        if self.scheduler == "static" or unsupported:
            self.fallback_reason = self.fallback_reason or unsupported
            outputs = self._static(texts, params)
        else:
            outputs = self._continuous(texts, params)
        self.stats.add(len(texts), outputs, time.perf_counter() - start, greedy=params.greedy)
        return outputs

    def spec(self) -> dict[str, Any]:
        self._resolve()
        out = super().spec() | {"scheduler": self.scheduler, "dtype": _dtype_name(self.model)}
        if self.scheduler == "static":
            out["batch_size"] = self.batch_size or STATIC_BATCH_SIZE
        if self.fallback_reason:
            out["fallback_reason"] = self.fallback_reason
        if self.tuning:
            out["tuning"] = {k: self.tuning[k] for k in ("machine", "step_ms") if k in self.tuning}
        return out


def _dtype_name(model: Any) -> str:
    return str(model.dtype).removeprefix("torch.")


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


class VLLMGenerator(_Base):
    """vLLM offline engine; used on GPU when vllm is installed (the `gpu` extra).

    Prompts go in as token ids rendered by the same chat template as the transformers backend
    (no special tokens added a second time), so both backends see identical inputs.
    """

    backend = "vllm"

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        model_spec: str = "",
        **engine_kwargs: Any,
    ):
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            **engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.model_spec = model_spec or model_path
        self.batch_size = 0  # vLLM schedules its own batches
        self.stats = GenerationStats()

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> VLLMGenerator:
        from .models import ensure_generation_template, resolve_model_path

        gen = cls(resolve_model_path(spec), model_spec=spec, **kwargs)
        ensure_generation_template(gen.tokenizer)  # the template the transformers backend would use
        return gen

    def complete_raw(self, texts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VSampling

        sampling = VSampling(
            n=params.n,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            logprobs=0 if params.logprobs else None,
        )
        prompts = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
        start = time.perf_counter()
        results = self.llm.generate(prompts, sampling, use_tqdm=False)
        outputs = [[_vllm_completion(o, params.logprobs) for o in r.outputs] for r in results]
        self.stats.add(len(texts), outputs, time.perf_counter() - start)
        return outputs


def _vllm_completion(output: Any, logprobs: bool) -> Completion:
    count = len(output.token_ids)
    reason = "length" if output.finish_reason == "length" else "stop"
    mean_lp = None
    if logprobs and count and output.cumulative_logprob is not None:
        mean_lp = float(output.cumulative_logprob) / count
    return Completion(output.text.strip(), reason, count, mean_lp)


def vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def engine_tp(requested: int) -> int:
    """A vLLM engine's tensor-parallel size: `requested`, capped at the visible GPUs, so a recipe
    written for an 8-GPU node (tensor_parallel_size: 8, runtime-only) also runs on fewer."""
    import torch

    return max(1, min(requested, torch.cuda.device_count() or 1))


def make_generator(
    spec: str,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = 0,
    scheduler: str = "continuous",
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    label: str = "generate",
):
    """backend: auto (vLLM when installed and CUDA is present, else transformers) | vllm | transformers.

    transformers only: batch_size 0 = measured (see TransformersGenerator); scheduler continuous |
    static (the old batched `model.generate`); dtype auto | float32 | bfloat16 | float16.
    vLLM only: tensor_parallel_size = GPUs the engine shards the model over. `label` names the
    progress lines (`distill 120/480 · 96 tok/s · ETA 3m10s`).
    """
    if backend == "auto":
        backend = "vllm" if vllm_available() and device != "cpu" else "transformers"
    if backend == "vllm":
        generator: Any = VLLMGenerator.from_spec(spec, tensor_parallel_size=engine_tp(tensor_parallel_size))
    elif backend == "transformers":
        generator = TransformersGenerator.from_spec(spec, device, batch_size, scheduler, dtype)
    else:
        raise ValueError(f"unknown generation backend '{backend}' (auto | vllm | transformers)")
    generator.progress_label = label
    return generator
