"""Launch planner: per-step memory and compute estimates for a pipeline, before any GPU is rented.

`nebula plan params/pipelines/<name>.yaml --gpus 8 --nodes 1 --zero 3` builds every step exactly as
`nebula run` would (so every stage config is validated), reads each step's model *config* only (a
local config.json, the Hugging Face cache, or the table of published configs below; never weights),
builds the model on the meta device to count its parameters exactly, and prints per step: the
parameter count, the memory per GPU for the chosen parallelism, the tokens to process and the
GPU-hours at a stated MFU. Parallelism comes from command-line flags, not from the pipeline file
(pipeline files have a fixed key set).

Formulas, each applied in the function named in brackets:

* parameters [model_shape]: exact count of the model built from its config on torch's meta device
  (shapes only: no memory, no download; tied embeddings counted once).
* model states [training_memory]: ZeRO paper (Rajbhandari et al. 2020, sec. 3.1): mixed-precision
  AdamW keeps 2 bytes/param of bf16 weights, 2 of bf16 gradients and K = 12 of optimizer state
  (fp32 master weights, fp32 m, fp32 v). ZeRO-1 shards the optimizer state over the N data-parallel
  GPUs, ZeRO-2 also the gradients, ZeRO-3 (= FSDP FULL_SHARD; SHARD_GRAD_OP = ZeRO-2) also the
  weights. Under ZeRO-3 a GPU also holds gathered full weights: FSDP2's root unit (embeddings,
  final norm, LM head) for the whole step plus two decoder layers (the running one and the
  prefetched one).
* activations [layer_activation_bytes]: Korthikanti et al. 2022 ("Reducing Activation Recomputation
  in Large Transformer Models", sec. 4.1) count every tensor autograd saves in a layer; for a GPT-3
  layer that is s*b*h*(34 + 5*a*s/h) bytes. The same count for the decoder layer transformers
  implements for Qwen3/Llama (no dropout, RMSNorm computed in fp32, optional q/k RMSNorm, GQA,
  SwiGLU MLP), per token, with B bytes per activation (2 in bf16) and F = 4 (fp32):
      2 RMSNorms          2 * (F*h + F + 2*B*h)         fp32 input copy, fp32 rsqrt, normalised + output
      q/k norms (Qwen3)   F*(hq+hk) + F*(a+kv) + B*(hq+hk)
      flash/SDPA core     B*(2*hq + 2*hk) + F*a         q, k, v after RoPE, output, fp32 logsumexp
      eager core          4*B*hq + F*a*s (+ B*a*s)      q, repeated k and v, o_proj input, fp32 softmax
                                                         (and its bf16 copy): the 5*a*s/h term
      SwiGLU MLP          4*B*i                         gate, up, silu(gate), their product
  with hq = a*head_dim, hk = kv*head_dim, i = intermediate size. For Qwen3-8B in bf16 that is 52.6*h
  bytes per token per layer against GPT-3's 34*h (the MLP is 3h wide with three projections, and the
  norms are upcast). tests/launch/test_planner.py checks it against the saved tensors of a real
  training step on CPU.
* full activation checkpointing [training_memory]: each layer keeps only its input, B*s*b*h bytes
  (2*s*b*h*L for the model: Korthikanti sec. 4), plus one layer's activations while it is recomputed.
* logits [training_memory]: the loss keeps fp32 log-probabilities (4*V bytes per token) and while it
  runs the bf16 logits and their fp32 copy are alive ((B+4)*V more); Liger's fused linear
  cross-entropy (`trl_overrides: {use_liger_kernel: true}`) never materialises them.
* KV cache [kv_bytes_per_token]: 2 (K and V) * layers * kv_heads * head_dim * bytes * tokens.
* FLOPs [plan_sft, _generation]: training 6*N per token (Kaplan et al. 2020: 2N forward + 4N
  backward); LoRA 4*N + 6*N_adapter (no weight gradients for the frozen base); full recompute adds a
  forward (2*N) of hardware work, applied as a factor on the hours, so `--mfu` is the model FLOPs
  utilisation without recompute (PaLM's definition); generation 2*N per token (forward only).
  Attention-score FLOPs (12*L*h*s per token, PaLM appendix B) are not counted, as in 6N.
* GPU-hours: FLOPs / (MFU * peak FLOP/s) / 3600; wall-clock = GPU-hours / GPUs.

Not counted: the CUDA context and NCCL buffers (about 1 GiB), allocator fragmentation and temporary
buffers of the backward pass; a step "fits" when the estimate stays under 90% of the GPU memory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import ConfigError, build_config
from ..paths import PARAMS_DIR, repo_path
from ..pipeline import Pipeline, Step, load_pipeline
from ..stages import stage_config_class

GIB = 1024**3
FP32 = 4
HEADROOM = 0.9  # usable share of GPU memory: CUDA context, NCCL buffers, fragmentation

# Published configs of models recipes name by Hub id, so that planning needs no download. Only the
# keys that fix the architecture. Source of every row: the model repository's config.json
# (https://huggingface.co/<id>/blob/main/config.json); each row reproduces the model card's
# parameter counts (Qwen3-8B: 8.2B total, 6.95B non-embedding; checked in the tests).
_QWEN3 = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936, "head_dim": 128}
_QWEN3_SHAPES = {
    # id: (hidden, layers, heads, kv heads, intermediate, tied embeddings)
    "0.6B": (1024, 28, 16, 8, 3072, True),
    "1.7B": (2048, 28, 16, 8, 6144, True),
    "4B": (2560, 36, 32, 8, 9728, True),
    "8B": (4096, 36, 32, 8, 12288, False),
    "14B": (5120, 40, 40, 8, 17408, False),
    "32B": (5120, 64, 64, 8, 25600, False),
}
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    f"Qwen/Qwen3-{size}{suffix}": _QWEN3
    | {
        "hidden_size": h,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "tie_word_embeddings": tied,
    }
    for size, (h, layers, heads, kv, inter, tied) in _QWEN3_SHAPES.items()
    for suffix in ("", "-Base")
    if not (size == "32B" and suffix)  # Qwen3-32B has no -Base release
}
KNOWN_CONFIGS |= {
    # Tülu 3 8B starts from Llama 3.1 8B (8.03B parameters on the model card).
    "meta-llama/Llama-3.1-8B": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
    },
    # The demo model (packaged:smollm2-135m-instruct is its GGUF): 134.5M parameters.
    "HuggingFaceTB/SmolLM2-135M-Instruct": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    },
    # nebula_utils.inference.models.tiny_random_path (vocab = the SmolLM2 tokenizer's 49152).
    "tiny-random": {
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    },
}
KNOWN_CONFIGS["packaged:smollm2-135m-instruct"] = KNOWN_CONFIGS["HuggingFaceTB/SmolLM2-135M-Instruct"]

PRECISIONS = {
    # name: (weight bytes, gradient bytes, optimizer bytes per trainable param, activation bytes)
    "mixed": (2, 2, 12, 2),  # bf16 compute copy + fp32 master, m, v (ZeRO paper's K = 12)
    "bf16": (2, 2, 4, 2),  # pure bf16: AdamW's m and v in the parameter dtype
    "fp32": (4, 4, 8, 4),  # fp32 weights, gradients, m and v (what a CPU run does)
}
ATTENTIONS = ("flash", "eager")


@dataclass
class Hardware:
    """The parallelism and hardware the plan is for (`nebula plan` flags; defaults = one 8x H100 80GB node)."""

    gpus: int = 8  # GPUs per node
    nodes: int = 1
    zero: int = 3  # ZeRO stage 0-3; FSDP FULL_SHARD = 3, SHARD_GRAD_OP = 2, DDP = 0
    gpu_mem_gib: float = 80.0
    # training model FLOPs utilisation: Llama 3 (Dubey et al. 2024, table 4) reports 38-43% BF16 MFU on H100s
    mfu: float = 0.4
    gen_mfu: float = 0.1  # generation is memory-bandwidth bound; our assumption until benchmarks/ measures it
    peak_tflops: float = 989.0  # H100 SXM dense BF16 (NVIDIA datasheet: 989.4 TFLOP/s)
    tp: int = 1  # tensor-parallel size of a generation engine
    precision: str = "mixed"
    attention: str = "flash"  # flash (SDPA/FlashAttention: no s^2 term) | eager
    prompt_tokens: int = 512  # assumed mean prompt length for generation stages (prompts are not read)

    def __post_init__(self) -> None:
        for key in ("gpus", "nodes", "tp", "prompt_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')}: must be >= 1, got {getattr(self, key)}")
        if self.zero not in (0, 1, 2, 3):
            raise ConfigError(f"--zero: must be 0, 1, 2 or 3, got {self.zero}")
        for key in ("mfu", "gen_mfu"):
            if not 0 < getattr(self, key) <= 1:
                raise ConfigError(f"--{key.replace('_', '-')}: must be in (0, 1], got {getattr(self, key)}")
        if self.gpu_mem_gib <= 0 or self.peak_tflops <= 0:
            raise ConfigError("--gpu-mem and --gpu-peak-tflops must be > 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"--attention: expected one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if self.gpus * self.nodes % self.tp:
            raise ConfigError(f"--tp {self.tp} must divide the {self.gpus * self.nodes} GPUs")

    @property
    def world(self) -> int:
        return self.gpus * self.nodes

    def hours(self, flops: float, mfu: float) -> float:
        """GPU-hours = FLOPs / (MFU * peak FLOP/s) / 3600."""
        return flops / (mfu * self.peak_tflops * 1e12) / 3600


@dataclass(frozen=True)
class Count:
    """A size that may be exact, an upper bound (`exact=False`, printed with <=) or unknown (None)."""

    value: float | None
    exact: bool = True

    def __mul__(self, k: float | Count) -> Count:
        if isinstance(k, Count):
            if self.value is None or k.value is None:
                return UNKNOWN
            return Count(self.value * k.value, self.exact and k.exact)
        return Count(None if self.value is None else self.value * k, self.exact)

    __rmul__ = __mul__

    def __add__(self, other: Count) -> Count:
        if self.value is None or other.value is None:
            return UNKNOWN
        return Count(self.value + other.value, self.exact and other.exact)

    def at_most(self, cap: int) -> Count:
        """Capped by a `max_*` knob (0 = no cap): unknown capped by c is <= c."""
        if cap <= 0:
            return self
        if self.value is None:
            return Count(cap, False)
        if cap < self.value:
            return Count(cap, self.exact)
        return self

    def bound(self) -> Count:
        return Count(self.value, False)

    def __str__(self) -> str:
        if self.value is None:
            return "unknown"
        return ("" if self.exact else "<= ") + _num(self.value)


UNKNOWN = Count(None, False)


def _num(x: float) -> str:
    if abs(x) >= 1e6:
        return f"{x:.3g}".replace("e+0", "e").replace("e+", "e")
    if float(x).is_integer() or abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.2g}"


# ---------------------------------------------------------------------------------------------
# Model configs and shapes
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelShape:
    spec: str
    source: str  # where the config came from
    model_type: str
    params: int  # exact, tied weights counted once
    layer_params: int  # one decoder layer
    root_params: int  # everything outside the decoder layers (embeddings, final norm, LM head)
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    qk_norm: bool  # Qwen3's per-head RMSNorm on q and k
    swiglu: bool
    linears: list[tuple[str, int, int]] = field(default_factory=list, repr=False)  # (name, in, out), no LM head

    def lora_params(self, r: int, targets: list[str]) -> int:
        """LoRA adds r*(in + out) per adapted Linear; [] = every Linear but the LM head (PEFT's all-linear)."""
        chosen = [(i, o) for name, i, o in self.linears if not targets or name.rsplit(".", 1)[-1] in targets]
        return sum(r * (i + o) for i, o in chosen)

    def lora_inputs(self, targets: list[str]) -> int:
        """Sum of in_features of the adapted Linears of one layer (LoRA dropout keeps a copy of each input)."""
        first = [(name, i) for name, i, _ in self.linears if ".0." in f".{name}."]
        return sum(i for name, i in first if not targets or name.rsplit(".", 1)[-1] in targets)


def read_model_config(spec: str, where: str, producers: dict[str, Step] | None = None) -> tuple[dict, str]:
    """(config dict, where it came from) for a model spec, without downloading anything.

    Order: a local folder's config.json (a LoRA adapter folder: its base model's); an upstream
    step's output folder that does not exist yet: the model that step trains; the Hugging Face
    cache; the table of published configs."""
    path = repo_path(spec)  # relative folders are repo-relative, as in the notebooks
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text(encoding="utf-8")), str(path / "config.json")
    if (path / "adapter_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        config, source = read_model_config(base, where, producers)
        return config, f"{source} (base of LoRA adapter {path})"
    for step in (producers or {}).values():
        if (spec == str(step.run_dir) or spec.startswith(str(step.run_dir) + os.sep)) and "model" in step.params:
            config, source = read_model_config(step.params["model"], where, producers)
            return config, f"{source}, trained by step {step.name}"
    if spec in ("tiny-random",) or spec.startswith("packaged:"):
        from ..inference.models import cache_dir

        built = cache_dir() / spec.removeprefix("packaged:") / "config.json"
        if built.is_file():
            return json.loads(built.read_text(encoding="utf-8")), str(built)
    if "/" in spec and not Path(spec).is_absolute() and not spec.startswith((".", "~")):
        cached = _hub_cache_config(spec)
        if cached:
            return json.loads(Path(cached).read_text(encoding="utf-8")), cached
    if spec in KNOWN_CONFIGS:
        return dict(KNOWN_CONFIGS[spec]), "built-in table of published configs (nebula_utils/launch/planner.py)"
    raise ConfigError(
        f"{where}: no config.json for model '{spec}': not a local folder, not in the Hugging Face cache "
        f"and not in the planner's table ({', '.join(sorted(KNOWN_CONFIGS))}); download its config.json "
        "(huggingface-cli download <id> config.json) or pass a local folder"
    )


def _hub_cache_config(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an invalid repo id: not a Hub model
        return None
    return found if isinstance(found, str) else None


_SHAPES: dict[str, ModelShape] = {}


def model_shape(config: dict[str, Any], spec: str = "", source: str = "") -> ModelShape:
    """Build the model on the meta device (no memory, no weights) and count its parameters."""
    key = json.dumps(config, sort_keys=True, default=str)
    if key in _SHAPES:
        return ModelShape(**{**asdict(_SHAPES[key]), "spec": spec, "source": source})
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = {k: v for k, v in config.items() if k not in ("transformers_version",)}
    model_type = config.get("model_type")
    if not model_type:
        raise ConfigError(f"{source or spec}: config has no 'model_type'")
    try:
        cfg = AutoConfig.for_model(**config)
    except ValueError as exc:
        raise ConfigError(f"{source or spec}: {exc}") from None
    # torch's meta device rather than accelerate.init_empty_weights(): with transformers 5.23 the
    # latter leaves tied embeddings untied (Qwen3-0.6B counted 752M instead of 596M).
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    text = cfg.get_text_config()
    layers = next(
        m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == text.num_hidden_layers
    )
    layer_params = max(sum(p.numel() for p in layer.parameters()) for layer in layers)
    total = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings()
    names = [n for n, _ in model.named_modules()]
    heads = text.num_attention_heads
    shape = ModelShape(
        spec=spec,
        source=source,
        model_type=model_type,
        params=total,
        layer_params=layer_params,
        root_params=total - sum(p.numel() for p in layers.parameters()),
        hidden=text.hidden_size,
        layers=text.num_hidden_layers,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        intermediate=text.intermediate_size,
        vocab=text.vocab_size,
        qk_norm=any(n.endswith("self_attn.q_norm") for n in names),
        swiglu=any(n.endswith("mlp.gate_proj") for n in names),
        linears=[
            (n, m.in_features, m.out_features)
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head
        ],
    )
    _SHAPES[key] = shape
    return shape


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


def layer_activation_bytes(
    shape: ModelShape, tokens: int, seq: int, act_bytes: int, attention: str = "flash", lora: dict | None = None
) -> int:
    """Bytes autograd saves in one decoder layer for `tokens` (= micro-batch * seq) tokens
    (Korthikanti et al. 2022's per-layer count applied to the Qwen3/Llama layer; see the module doc)."""
    B, F = act_bytes, FP32
    h, a, kv = shape.hidden, shape.heads, shape.kv_heads
    hq, hk = a * shape.head_dim, kv * shape.head_dim
    per_token = 2 * (F * h + F + 2 * B * h)  # input and post-attention RMSNorm
    if shape.qk_norm:
        per_token += F * (hq + hk) + F * (a + kv) + B * (hq + hk)
    if attention == "flash":
        per_token += B * (2 * hq + 2 * hk) + F * a
    else:  # eager: the s^2 terms of Korthikanti's 5*a*s/h
        per_token += 4 * B * hq + F * a * seq + (B * a * seq if B != F else 0)
    per_token += 4 * B * shape.intermediate  # SwiGLU (approximation for other MLPs)
    if lora and lora["dropout"] > 0:
        # PEFT keeps adapters in fp32: per adapted Linear the dropout mask (1 byte on CUDA), the
        # dropped fp32 input and the fp32 LoRA-A output. Approximate: frozen Linears skip saving inputs.
        per_token += (1 + F) * shape.lora_inputs(lora["targets"]) + F * lora["r"] * lora["modules"]
    return per_token * tokens


def root_activation_bytes(shape: ModelShape, tokens: int, seq: int, act_bytes: int) -> int:
    """Saved tensors outside the layers: int64 input ids and labels, the final RMSNorm, the cos/sin
    RoPE tables, and the fp32 log-probabilities the cross-entropy keeps (4*V per token)."""
    B, F = act_bytes, FP32
    norm = F * shape.hidden + F + 2 * B * shape.hidden
    return tokens * (8 + 8 + norm + F * shape.vocab) + 2 * seq * shape.head_dim * B


def training_memory(
    shape: ModelShape,
    hw: Hardware,
    micro_batch: int,
    seq: int,
    checkpointing: bool,
    trainable: int,
    lora: dict | None = None,
    liger: bool = False,
    attention: str | None = None,
    logit_seq: int | None = None,
) -> dict[str, float]:
    """Bytes per GPU: model states (ZeRO paper), gathered ZeRO-3 weights, activations, logits.
    `attention`: flash | eager for this step (None = the hardware default, --attention);
    `logit_seq`: positions per sequence the loss needs logits for (None = all `seq`; GRPO: the
    completion only, TRL's logits_to_keep)."""
    w, g, k, act = PRECISIONS[hw.precision]
    n, z = hw.world, hw.zero
    # LoRA: the frozen base plus the adapters (`trainable`); full fine-tuning: every parameter.
    full_weights = w * (shape.params + trainable) if lora else w * shape.params
    tokens = micro_batch * seq
    per_layer = layer_activation_bytes(shape, tokens, seq, act, attention or hw.attention, lora)
    root = root_activation_bytes(shape, tokens, seq, act)
    logit_tokens = micro_batch * (logit_seq or seq)
    root -= (tokens - (0 if liger else logit_tokens)) * FP32 * shape.vocab  # Liger: no full log-prob matrix
    mem = {
        "weights": full_weights / (n if z >= 3 else 1),
        "gradients": g * trainable / (n if z >= 2 else 1),
        "optimizer": k * trainable / (n if z >= 1 else 1),
        # FSDP2's root unit (embeddings, final norm, LM head) stays gathered for the step; two decoder
        # layers are gathered at a time (running + prefetched).
        "gathered": w * (shape.root_params + 2 * shape.layer_params) if z >= 3 and n > 1 else 0,
        "activations_none": shape.layers * per_layer + root,
        "activations_ckpt": shape.layers * act * tokens * shape.hidden + per_layer + root,
        "logits": 0 if liger else logit_tokens * shape.vocab * (act + (FP32 if act != FP32 else 0)),
    }
    mem["activations"] = mem["activations_ckpt"] if checkpointing else mem["activations_none"]
    mem["total"] = sum(mem[k] for k in ("weights", "gradients", "optimizer", "gathered", "activations", "logits"))
    return mem


def kv_bytes_per_token(shape: ModelShape, tp: int = 1, dtype_bytes: int = 2) -> float:
    """KV cache = 2 (K and V) * layers * kv_heads * head_dim * bytes, per token; kv heads split over
    the tensor-parallel ranks (replicated when there are fewer heads than ranks)."""
    return 2 * shape.layers * math.ceil(shape.kv_heads / tp) * shape.head_dim * dtype_bytes


def generation_memory(shape: ModelShape, hw: Hardware, sequences: int, seq_tokens: int) -> dict[str, float]:
    """Bytes per GPU of a generation engine: bf16 weights split over tp ranks + the KV cache of
    `sequences` concurrent sequences of `seq_tokens` tokens; how many such sequences fit."""
    weights = 2 * shape.params / hw.tp
    kv_seq = kv_bytes_per_token(shape, hw.tp) * seq_tokens
    free = HEADROOM * hw.gpu_mem_gib * GIB - weights
    return {
        "weights": weights,
        "kv_cache": kv_seq * sequences,
        "kv_per_token": kv_bytes_per_token(shape, hw.tp),
        "total": weights + kv_seq * sequences,
        "max_sequences": max(0, int(free // kv_seq)),
    }


def frozen_weights(shape: ModelShape, hw: Hardware, sharded: bool = True) -> float:
    """Bytes per GPU of a frozen model (a reference or a teacher): weights only, no gradients and no
    optimizer state (ZeRO paper: only trained parameters carry the 2 + K bytes). TRL wraps a
    reference/teacher with the same DeepSpeed/FSDP engine as the policy (prepare_deepspeed), so
    ZeRO-3 shards it over the N GPUs; `sharded=False`: a full copy on every GPU (51_mopd's local
    teacher pool moves whole models onto each device)."""
    w = PRECISIONS[hw.precision][0]
    return w * shape.params / (hw.world if sharded and hw.zero >= 3 else 1)


# ---------------------------------------------------------------------------------------------
# Per-stage estimates
# ---------------------------------------------------------------------------------------------


@dataclass
class StagePlan:
    step: str
    stage: str
    run_id: str
    kind: str  # train | generate | data (not modelled)
    model: dict[str, Any] | None = None
    memory: dict[str, float] = field(default_factory=dict)  # bytes per GPU
    tokens: Count = UNKNOWN
    flops: Count = UNKNOWN
    gpu_hours: Count = UNKNOWN
    fits: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    outputs: dict[str, Count] = field(default_factory=dict)  # sub-folder -> rows it will hold ("*": any other)
    rollout: StagePlan | None = None  # a training step's own generation (GRPO, OPD, RSFT)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("tokens", "flops", "gpu_hours"):
            c = getattr(self, key)
            out[key] = {"value": c.value, "exact": c.exact}
        out["outputs"] = {k: {"value": c.value, "exact": c.exact} for k, c in self.outputs.items()}
        return out


class _Context:
    """What estimators need: the pipeline, the hardware, earlier plans (for sizes of outputs that
    do not exist yet) and the params folder (suites)."""

    def __init__(self, pipeline: Pipeline, hw: Hardware, params_dir: Path):
        self.pipeline, self.hw, self.params_dir = pipeline, hw, params_dir
        self.plans: dict[str, StagePlan] = {}
        self.producers: dict[str, Step] = {}

    def where(self, step: Step) -> str:
        return f"{self.pipeline.source}: step '{step.name}'"

    def shape(self, step: Step, key: str, spec: str | None = None) -> ModelShape:
        spec = step.params[key] if spec is None else spec
        config, source = read_model_config(spec, f"{self.where(step)}: key '{key}'", self.producers)
        return model_shape(config, spec, source)

    def step_hw(self, step: Step) -> Hardware:
        """The hardware of one step: a stage's `tensor_parallel_size` > 1 replaces --tp for it."""
        tp = min(step.params.get("tensor_parallel_size", 1), self.hw.world)  # capped as at run time (engine_tp)
        if tp <= 1 or tp == self.hw.tp:
            return self.hw
        if self.hw.world % tp:
            raise ConfigError(
                f"{self.where(step)}: key 'tensor_parallel_size': {tp} does not divide the {self.hw.world} GPUs"
            )
        return replace(self.hw, tp=tp)

    def split(self, step: Step, unit_key: str, fallback_key: str) -> int:
        """The per-process knob a `global_batch_size` derives (train.batch.split_global_batch, as the
        stage does at run time, with the planner's GPUs as processes); else `fallback_key`'s value."""
        from ..train.batch import split_global_batch

        p = step.params
        if not p.get("global_batch_size"):
            return p[fallback_key]
        try:
            return split_global_batch(p["global_batch_size"], p[unit_key], self.hw.world)
        except ConfigError as exc:
            raise ConfigError(f"{self.where(step)}: {exc} (--gpus x --nodes = {self.hw.world} processes)") from None

    def rows(self, data: str) -> Count:
        """Rows of a data version: its version.json (or .jsonl lines) when it exists; else what the
        producing step's plan says it will write; else unknown."""
        if not data:
            return UNKNOWN  # "the newest one under results/": not knowable before the run
        path = repo_path(data)
        if (path / "version.json").is_file():
            return Count(json.loads((path / "version.json").read_text(encoding="utf-8"))["num_rows"])
        if path.suffix == ".jsonl" and path.is_file():
            with path.open(encoding="utf-8") as fh:
                return Count(sum(1 for line in fh if line.strip()))
        for step in self.producers.values():
            if data.startswith(str(step.run_dir) + os.sep):
                sub = data[len(str(step.run_dir)) + 1 :]
                outputs = self.plans[step.name].outputs
                return outputs.get(sub, outputs.get("*", UNKNOWN))
        return UNKNOWN


def _model_info(shape: ModelShape, trainable: int | None = None) -> dict[str, Any]:
    info = {"spec": shape.spec, "source": shape.source, "model_type": shape.model_type, "params": shape.params}
    if trainable is not None:
        info["trainable"] = trainable
    return info


# ---- training steps: the trained model, the step's batch, and what a stage adds to it (forward-only
# models, rollouts). One function per idea; each stage's estimator below only combines them.


@dataclass
class Policy:
    """The model a training step updates and how (LoRA, checkpointing, Liger, attention kernel)."""

    shape: ModelShape
    trainable: int
    lora: dict | None
    checkpointing: bool
    liger: bool
    attention: str

    @property
    def flops_per_token(self) -> int:
        """Kaplan et al. 2020: 6N per trained token (2N forward + 4N backward); LoRA: 4N + 6N_adapter
        (the frozen base computes input gradients, 2N, but no weight gradients)."""
        return 4 * self.shape.params + 6 * self.trainable if self.lora else 6 * self.shape.params

    @property
    def recompute(self) -> float:
        """Full activation checkpointing re-runs each layer's forward in backward: +2N per token of
        hardware work, a factor on the hours (MFU stays PaLM's model-FLOPs utilisation)."""
        if not self.checkpointing:
            return 1.0
        adapter = self.trainable if self.lora else 0
        return (self.flops_per_token + 2 * (self.shape.params + adapter)) / self.flops_per_token


def _attention(p: dict[str, Any], hw: Hardware) -> str:
    """A step's attention model: `attn_implementation: eager` materialises the s x s scores; sdpa and
    flash_attention_2 do not (memory-efficient kernels); "" (library default) = --attention."""
    impl = p.get("attn_implementation", "")
    return hw.attention if not impl else ("eager" if impl == "eager" else "flash")


def _policy(step: Step, ctx: _Context, key: str = "model") -> Policy:
    p = step.params
    shape = ctx.shape(step, key)
    overrides = p.get("trl_overrides") or {}
    trainable, lora = shape.params, None
    if p.get("use_lora"):
        targets = list(p["lora_target_modules"])
        trainable = shape.lora_params(p["lora_r"], targets)
        modules = sum(
            1 for n, _, _ in shape.linears if ".0." in f".{n}." and (not targets or n.split(".")[-1] in targets)
        )
        lora = {"r": p["lora_r"], "targets": targets, "dropout": p["lora_dropout"], "modules": modules}
    ckpt = bool(p.get("gradient_checkpointing") or overrides.get("gradient_checkpointing"))
    return Policy(shape, trainable, lora, ckpt, bool(overrides.get("use_liger_kernel")), _attention(p, ctx.hw))


def _hours(flops: Count, hw: Hardware, mfu: float, factor: float = 1.0) -> Count:
    """GPU-hours = FLOPs / (MFU x peak FLOP/s) / 3600, x `factor` (hardware work beyond the model FLOPs)."""
    return Count(None if flops.value is None else hw.hours(flops.value, mfu) * factor, flops.exact)


def _sequences(p: dict[str, Any], rows: Count, global_batch: int) -> Count:
    """Sequences a trainer steps through: max_steps x global batch, else rows x epochs."""
    if p["max_steps"] > 0:
        return Count(p["max_steps"] * global_batch)
    return rows * p["num_train_epochs"]


def _total(plan: StagePlan, hw: Hardware) -> None:
    """Peak bytes per GPU of a training step: model states + frozen weights + the larger of what is
    alive at once. A rollout in the step (`in_step`: the trainer generates between optimizer steps)
    replaces the activations; vLLM colocated keeps its reservation for the whole run; a `separate`
    phase (RSFT samples, then trains) peaks on its own; a `server` runs on other GPUs."""
    m = plan.memory
    states = m["weights"] + m["gradients"] + m["optimizer"] + m["gathered"] + m.get("frozen", 0)
    transient = m["activations"] + m["logits"] + m.get("frozen_logits", 0)
    mode, rollout = plan.details.get("rollout_mode"), m.get("rollout", 0)
    if mode == "colocate":
        m["total"] = states + transient + rollout
    elif mode == "in_step":
        m["total"] = states + max(transient, rollout)
    elif mode == "separate":
        m["total"] = max(states + transient, rollout)
    else:
        m["total"] = states + transient
    plan.fits = m["total"] <= HEADROOM * hw.gpu_mem_gib * GIB


def _train(
    step: Step,
    ctx: _Context,
    pol: Policy,
    micro: int,
    seq: int,
    sequences: Count,
    rows: Count,
    global_batch: int,
    unit: str = "sequences",
    logit_seq: int | None = None,
) -> StagePlan:
    """The trained model's part of a step: `sequences` of <= `seq` tokens, `micro` per forward pass
    and GPU; memory (training_memory), FLOPs (6N per token) and hours (x recompute)."""
    hw = ctx.hw
    mem = training_memory(
        pol.shape, hw, micro, seq, pol.checkpointing, pol.trainable, pol.lora, pol.liger, pol.attention, logit_seq
    )
    tokens = (sequences * seq).bound()  # truncation at `seq`: token counts are upper bounds
    plan = StagePlan(step.name, step.notebook, step.run_id, "train", _model_info(pol.shape, pol.trainable), mem)
    plan.tokens = tokens
    plan.flops = tokens * pol.flops_per_token
    plan.gpu_hours = _hours(plan.flops, hw, hw.mfu, pol.recompute)
    policy_flops = plan.flops
    plan.details = {
        "micro_batch": micro,
        "seq": seq,
        "global_batch": global_batch,
        "unit": unit,
        "sequences": sequences,
        "rows": rows,
        "checkpointing": pol.checkpointing,
        "liger": pol.liger,
        "attention": pol.attention,
        "lora": pol.lora,
        "flops_per_token": pol.flops_per_token,
        "recompute_factor": pol.recompute,
        "formula": "FLOPs = (4N + 6N_lora) * tokens" if pol.lora else "FLOPs = 6N * tokens",
        "policy_flops": policy_flops,
        "hours": {"policy": plan.gpu_hours},
        "forward": [],
    }
    _total(plan, hw)
    return plan


def _add_forward(
    plan: StagePlan,
    hw: Hardware,
    role: str,
    shape: ModelShape,
    tokens: Count,
    memory: float = 0.0,
    logits: float = 0.0,
) -> None:
    """A forward-only pass in a training step (a reference or a teacher, or the policy's own no-grad
    log-probs): 2N FLOPs per token (Kaplan: forward only) at the training MFU, plus the model's
    weights when it is another model (`memory`, frozen_weights) and logits it keeps for the loss."""
    flops = tokens * (2 * shape.params)
    hours = _hours(flops, hw, hw.mfu)
    plan.flops = plan.flops + flops
    plan.gpu_hours = plan.gpu_hours + hours
    plan.details["hours"][role] = hours
    plan.details["forward"].append({"role": role, "spec": shape.spec, "params": shape.params, "tokens": tokens})
    plan.memory["frozen"] = plan.memory.get("frozen", 0.0) + memory
    plan.memory["frozen_logits"] = plan.memory.get("frozen_logits", 0.0) + logits
    _total(plan, hw)


def _add_rollout(plan: StagePlan, ctx: _Context, gen: StagePlan, mode: str, reserve: float = 0.0) -> None:
    """A training step's own sampling (`gen`, from _generation: 2N per generated or prompt token at
    the generation MFU) and its memory by `mode`: colocate = a vLLM engine in the training process
    reserving `reserve` bytes of every GPU (vllm_gpu_memory_utilization; its weights and KV cache
    live inside); in_step = the trainer generates with the policy (under ZeRO-3 TRL gathers its full
    bf16 weights for generation, ds3_gather_for_generation) + the KV cache of the batch; separate =
    an earlier phase (RSFT); server = other GPUs (vLLM servers), not counted here."""
    hw = ctx.hw
    plan.rollout = gen
    plan.details["rollout_mode"] = mode
    gathered = gen.memory["weights"] if hw.zero >= 3 and hw.world > 1 else 0.0
    plan.memory["rollout"] = {
        "colocate": reserve,
        "in_step": gathered + gen.memory["kv_cache"],
        "separate": gen.memory["total"],
        "server": 0.0,
    }[mode]
    if mode == "colocate":
        kv_seq = gen.memory["kv_per_token"] * gen.details["seq_tokens"]
        gen.memory["max_sequences"] = max(0, int((reserve - gen.memory["weights"]) // kv_seq))
        if gen.memory["max_sequences"] < 1:
            plan.notes.append("vLLM reservation is smaller than its weights + one sequence: raise its memory share")
    plan.gpu_hours = plan.gpu_hours + gen.gpu_hours
    plan.details["hours"]["rollout"] = gen.gpu_hours
    _total(plan, hw)
    if mode == "colocate" and gen.memory["max_sequences"] < 1:
        plan.fits = False


def _reference(step: Step, ctx: _Context, pol: Policy) -> tuple[ModelShape, float]:
    """(reference model, its bytes per GPU): `ref_model`, else a frozen copy of the starting model;
    under LoRA without `ref_model` the base with adapters off is the reference (no extra weights)."""
    if step.params.get("ref_model"):
        shape = ctx.shape(step, "ref_model")
        return shape, frozen_weights(shape, ctx.hw)
    return pol.shape, 0.0 if pol.lora else frozen_weights(pol.shape, ctx.hw)


def plan_sft(step: Step, ctx: _Context) -> StagePlan:
    p = step.params
    pol = _policy(step, ctx)
    micro, seq = p["per_device_train_batch_size"], p["max_length"]
    global_batch = micro * ctx.split(step, "per_device_train_batch_size", "gradient_accumulation_steps") * ctx.hw.world
    rows = ctx.rows(p["data"]).at_most(p["max_samples"])
    plan = _train(step, ctx, pol, micro, seq, _sequences(p, rows, global_batch), rows, global_batch)
    plan.notes.append(f"tokens <= sequences x max_length ({seq}); padding-free/packed runs process fewer")
    if rows.value is None and p["max_steps"] == 0:
        plan.notes.append("dataset size unknown before upstream steps run: set max_samples or max_steps to bound it")
    plan.outputs = {"model": Count(1)}
    return plan


def plan_dpo(step: Step, ctx: _Context) -> StagePlan:
    """DPO: per pair a chosen and a rejected sequence through the policy (6N per token) and the
    frozen reference (2N per token: forward only, once per pair even with precompute_ref_log_probs)."""
    p = step.params
    pol = _policy(step, ctx)
    micro = p["per_device_train_batch_size"]
    global_batch = micro * ctx.split(step, "per_device_train_batch_size", "gradient_accumulation_steps") * ctx.hw.world
    rows = ctx.rows(p["data"]).at_most(p["max_samples"])
    pairs = _sequences(p, rows, global_batch)
    # TRL's DPOTrainer concatenates chosen and rejected: 2 x micro sequences per forward pass.
    plan = _train(step, ctx, pol, 2 * micro, p["max_length"], pairs * 2, rows, global_batch, unit="pairs")
    ref, ref_bytes = _reference(step, ctx, pol)
    _add_forward(plan, ctx.hw, "reference", ref, plan.tokens, memory=ref_bytes)
    plan.notes.append(f"tokens <= pairs x 2 x max_length ({p['max_length']})")
    plan.outputs = {"model": Count(1)}
    return plan


def plan_kto(step: Step, ctx: _Context) -> StagePlan:
    """KTO: unpaired examples (a pair gives a desirable and an undesirable one) through the policy
    (6N per token); loss `kto` also scores a mismatched KL batch with the policy (no grad, 2N) and
    the reference scores both (2N each)."""
    p = step.params
    pol = _policy(step, ctx)
    micro = p["per_device_train_batch_size"]
    global_batch = micro * ctx.split(step, "per_device_train_batch_size", "gradient_accumulation_steps") * ctx.hw.world
    rows = (ctx.rows(p["data"]) * 2).at_most(p["max_samples"])
    plan = _train(step, ctx, pol, micro, p["max_length"], _sequences(p, rows, global_batch), rows, global_batch)
    plan.details["unit"] = "examples"
    ref, ref_bytes = _reference(step, ctx, pol)
    kl = p["loss_type"] == "kto"
    if kl:
        _add_forward(plan, ctx.hw, "policy KL batch (no grad)", pol.shape, plan.tokens)
    _add_forward(plan, ctx.hw, "reference", ref, plan.tokens * (2 if kl else 1), memory=ref_bytes)
    plan.notes.append("examples = 2 per pair of the input (chosen desirable, rejected undesirable)")
    plan.outputs = {"model": Count(1)}
    return plan


def plan_rsft(step: Step, ctx: _Context) -> StagePlan:
    """RSFT: k answers per prompt from the policy (generation), then SFT on <= one kept answer per prompt."""
    p = step.params
    prompts = ctx.rows(p["data"]).at_most(p["max_prompts"])
    gen = _generation(step, ctx, "model", prompts, p["k"], p["max_new_tokens"], p["batch_size"])
    pol = _policy(step, ctx)
    micro = p["per_device_train_batch_size"]
    global_batch = micro * ctx.split(step, "per_device_train_batch_size", "gradient_accumulation_steps") * ctx.hw.world
    kept = prompts.bound()
    plan = _train(step, ctx, pol, micro, p["max_length"], _sequences(p, kept, global_batch), kept, global_batch)
    _add_rollout(plan, ctx, gen, "separate")
    plan.notes.append("kept answers <= prompts (one passing answer per prompt at most)")
    plan.outputs = {"data": kept, "model": Count(1)}
    return plan


GRPO_ROLLOUT_MODES = {"vllm_colocate": "colocate", "vllm_server": "server", "transformers": "in_step"}


def plan_grpo(step: Step, ctx: _Context) -> StagePlan:
    """GRPO: rollouts (prompts x num_generations completions), policy training on prompt + completion
    (6N per token), old-policy log-probs (2N) when vLLM samples (TRL's importance-sampling correction)
    or num_iterations > 1, and the reference forward (2N) when beta > 0."""
    p, hw = step.params, ctx.hw
    pol = _policy(step, ctx)
    g, accum, mu = p["num_generations"], p["gradient_accumulation_steps"], p["num_iterations"]
    prompts_pp = ctx.split(step, "num_generations", "prompts_per_step")
    if prompts_pp * g % accum:
        raise ConfigError(
            f"{ctx.where(step)}: key 'gradient_accumulation_steps': {prompts_pp * g} completions per process "
            f"do not split into {accum} passes"
        )
    seq = hw.prompt_tokens + p["max_completion_length"]
    completions = Count(p["max_steps"] * prompts_pp * g * hw.world)  # trained on: one batch per optimizer step
    rows = ctx.rows(p["data"]).at_most(p["max_prompts"])
    micro, completion = prompts_pp * g // accum, p["max_completion_length"]
    plan = _train(step, ctx, pol, micro, seq, completions, rows, prompts_pp * g * hw.world, "completions", completion)
    # one generation serves num_iterations optimizer steps (TRL: generate_every = steps_per_generation x mu)
    prompts = Count(math.ceil(p["max_steps"] / mu) * prompts_pp * hw.world)
    rollout = "vllm_colocate" if p["rollout"] == "auto" else p["rollout"]
    vllm = rollout != "transformers"
    sampled = (prompts * (g * seq)).bound()
    if vllm or mu > 1:
        _add_forward(plan, hw, "old-policy log-probs", pol.shape, sampled)
    if p["beta"] > 0:
        ref, ref_bytes = _reference(step, ctx, pol)
        _add_forward(plan, hw, "reference", ref, sampled, memory=ref_bytes)
    heldout = Count(p["heldout_prompts"] * p["heldout_samples"] * 2 * p["max_completion_length"], False)
    gen = _generation(step, ctx, "model", prompts, g, p["max_completion_length"], prompts_pp, heldout, hf=not vllm)
    reserve = p["vllm_gpu_memory_utilization"] * hw.gpu_mem_gib * GIB
    _add_rollout(plan, ctx, gen, GRPO_ROLLOUT_MODES[rollout], reserve)
    if p["rollout"] == "auto":
        plan.notes.append("rollout auto: planned as vllm_colocate (what it picks on CUDA with vLLM)")
    plan.notes.append(f"completion tokens <= max_completion_length; prompt length assumed {hw.prompt_tokens}")
    plan.outputs = {"model": Count(1)}
    return plan


def _plan_on_policy_distill(
    step: Step, ctx: _Context, teacher: ModelShape, teacher_bytes: float, server: bool = False
) -> StagePlan:
    """OPD and MOPD: the student samples one completion per prompt (generation), the teacher scores
    prompt + completion (forward only, 2N_teacher per token), the student trains on them (6N per
    token); both full-vocabulary distributions are alive for the divergence (teacher logits:
    (B + 4) * V bytes per token, as the student's)."""
    from ..train.distill import sample_budget

    p, hw = step.params, ctx.hw
    pol = _policy(step, ctx)
    micro = p["per_device_train_batch_size"]
    accum = ctx.split(step, "per_device_train_batch_size", "gradient_accumulation_steps")
    prompts = ctx.rows(p["data"]).at_most(p["max_prompts"])
    requested = Count(p["num_samples"]) if p["num_samples"] else prompts
    samples = UNKNOWN
    if requested.value is not None:
        budget = sample_budget(int(requested.value), micro, accum, hw.world)
        samples = Count(budget.samples, requested.exact)
    seq = hw.prompt_tokens + p["max_completion_length"]
    plan = _train(step, ctx, pol, micro, seq, samples, prompts, micro * accum * hw.world, unit="samples")
    act = PRECISIONS[hw.precision][3]
    logits = micro * seq * teacher.vocab * (act + (FP32 if act != FP32 else 0))
    _add_forward(plan, hw, "teacher", teacher, plan.tokens, memory=teacher_bytes, logits=0 if server else logits)
    overrides = p.get("trl_overrides") or {}
    vllm = bool(overrides.get("use_vllm")) or server
    gen = _generation(step, ctx, "model", samples, 1, p["max_completion_length"], micro, hf=not vllm)
    mode = "server" if server or overrides.get("vllm_mode", "colocate") == "server" else "colocate"
    reserve = overrides.get("vllm_gpu_memory_utilization", 0.3) * hw.gpu_mem_gib * GIB  # TRL 1.16 default 0.3
    _add_rollout(plan, ctx, gen, mode if vllm else "in_step", reserve)
    plan.notes.append(f"samples = the budget rounded up to whole steps of {micro * accum * hw.world}")
    plan.outputs = {"model": Count(1)}
    return plan


def plan_opd(step: Step, ctx: _Context) -> StagePlan:
    teacher = ctx.shape(step, "teacher")
    return _plan_on_policy_distill(step, ctx, teacher, frozen_weights(teacher, ctx.hw))


def plan_mopd(step: Step, ctx: _Context) -> StagePlan:
    """MOPD: as OPD, each prompt scored by the teacher its label routes it to. The split of the
    budget over teachers depends on the labels of the data (known after 14_classify_sample runs), so
    teacher FLOPs are counted at the largest teacher's size (exact when all teachers are one size).
    Memory, local backend: the `max_resident_teachers` largest teachers, whole, on every GPU (the
    pool moves full models; the others wait in CPU memory or on disk); vllm_servers: none here."""
    p = step.params
    teachers = [ctx.shape(step, "teacher")] + [ctx.shape(step, f"teachers.{t}", s) for t, s in p["teachers"].items()]
    by_size = sorted(teachers, key=lambda t: t.params, reverse=True)
    server = p["backend"] == "vllm_servers"
    resident = 0.0 if server else sum(frozen_weights(t, ctx.hw, False) for t in by_size[: p["max_resident_teachers"]])
    plan = _plan_on_policy_distill(step, ctx, by_size[0], resident, server)
    sizes = {t.params for t in teachers}
    if len(sizes) > 1:
        plan.flops = plan.flops.bound()
        plan.notes.append("teacher FLOPs at the largest teacher's size: an upper bound (routing split unknown)")
    plan.details["teachers"] = {"default": p["teacher"], **p["teachers"]}
    plan.notes.append(
        f"{len(teachers)} teachers; samples per teacher follow the data's `{p['route_by']}` labels "
        f"(unknown before the run): the total {plan.details['sequences']} is split among them"
    )
    if server:
        plan.notes.append("vllm_servers: the teachers' and student's vLLM servers run on other GPUs (not counted)")
    return plan


def _generation(
    step: Step,
    ctx: _Context,
    key: str,
    prompts: Count,
    n: int,
    max_new: int,
    batch: int,
    extra: Count | None = None,
    hf: bool | None = None,
) -> StagePlan:
    """A sampling stage: `prompts` x `n` samples of <= `max_new` tokens from model `step.params[key]`.
    `hf`: the transformers engine (None = read the step's `backend`)."""
    hw = ctx.step_hw(step)
    shape = ctx.shape(step, key)
    # transformers backend: one generate() call holds batch x n sequences; vLLM (what `auto` picks on
    # a CUDA machine with vLLM installed) pages the KV cache and schedules as many as fit, so it
    # needs room for one full sequence.
    if hf is None:
        hf = step.params.get("backend") in ("transformers", "hf")
    concurrent = batch * n if hf else 1
    seq_tokens = hw.prompt_tokens + max_new
    mem = generation_memory(shape, hw, concurrent, seq_tokens)
    generated = (prompts * (n * max_new)).bound()  # sequences stop at EOS, so an upper bound
    prefill = prompts * hw.prompt_tokens  # prefix caching shares a prompt across its n samples
    if extra is not None:
        generated = generated + extra
    tokens = generated + prefill
    flops = tokens * (2 * shape.params)
    plan = StagePlan(step.name, step.notebook, step.run_id, "generate", _model_info(shape), mem)
    plan.tokens, plan.flops = tokens, flops
    plan.gpu_hours = _hours(flops, hw, hw.gen_mfu)
    plan.fits = mem["total"] <= HEADROOM * hw.gpu_mem_gib * GIB
    plan.details = {
        "prompts": prompts,
        "samples_per_prompt": n,
        "max_new_tokens": max_new,
        "generated_tokens": generated,
        "prefill_tokens": prefill,
        "concurrent_sequences": concurrent,
        "engine": "transformers generate()" if hf else f"vLLM (paged KV cache, tp {hw.tp})",
        "tp": 1 if hf else hw.tp,
        "seq_tokens": seq_tokens,
        "formula": "FLOPs = 2N * (generated + prompt tokens)",
    }
    plan.notes.append(f"prompt length assumed {hw.prompt_tokens} tokens (--prompt-tokens)")
    return plan


def plan_distill(step: Step, ctx: _Context) -> StagePlan:
    p = step.params
    prompts = ctx.rows(p["data"]).at_most(p["max_prompts"])
    synth = Count(0)
    if p["synthesis"] != "none":
        # each attempt writes <= synth_max_new_tokens and adds at most one prompt
        synth = Count(p["synth_n"] * p["synth_max_new_tokens"], False)
        prompts = prompts + Count(p["synth_n"], False)
    plan = _generation(step, ctx, "teacher", prompts, p["k"], p["max_new_tokens"], p["batch_size"], synth)
    if p["synthesis"] != "none" and p["synth_model"] not in ("", p["teacher"]):
        plan.notes.append(f"synthesis model {p['synth_model']} counted at the teacher's size")
    plan.outputs = {"distill": prompts.bound()}
    return plan


def plan_difficulty(step: Step, ctx: _Context) -> StagePlan:
    p = step.params
    prompts = ctx.rows(p["data"]).at_most(p["max_prompts"])
    plan = _generation(step, ctx, "policy", prompts, p["n_samples"], p["max_new_tokens"], p["batch_size"])
    plan.outputs = {"graded": prompts.bound(), "rl": prompts.bound()}
    return plan


def plan_eval(step: Step, ctx: _Context) -> StagePlan:
    from ..evaluate.suites import load_suite, select

    p = step.params
    suite = p["suite"]
    suite_file = repo_path(suite) if suite.endswith((".yaml", ".yml")) else ctx.params_dir / "suites" / f"{suite}.yaml"
    benchmarks = select(load_suite(suite_file), p["part"], p["benchmarks"])
    items = Count(0)
    for b in benchmarks:
        known = Count(b.n) if b.harness == "verifiable" and b.n else UNKNOWN
        items = items + known.at_most(p["limit"])
    max_new = p["max_gen_toks"]
    if max_new == 0:
        plan = _generation(step, ctx, "model", items, 1, 1, p["batch_size"])
        plan.tokens = plan.flops = plan.gpu_hours = UNKNOWN
        plan.notes.append("max_gen_toks 0 = each task's own budget: tokens unknown")
    else:
        plan = _generation(step, ctx, "model", items, 1, max_new, p["batch_size"])
    plan.details["benchmarks"] = [b.name for b in benchmarks]
    plan.notes.append("lm-eval log-likelihood tasks score prompts without generating: counted at the budget")
    return plan


def plan_patch(step: Step, ctx: _Context) -> StagePlan:
    """17_patch: `n_samples` answers per scored prompt (prompts_per_category of each category: at
    most the input's verifiable rows), as 13_difficulty."""
    p = step.params
    prompts = ctx.rows(p["data"]).bound()
    plan = _generation(step, ctx, "model", prompts, p["n_samples"], p["max_new_tokens"], p["batch_size"])
    if p["prompts_per_category"]:
        plan.notes.append(
            f"prompts <= the input's rows (prompts_per_category {p['prompts_per_category']} x categories)"
        )
    plan.outputs = {"patch": prompts.at_most(p["max_rows"])}
    return plan


def _schema(ctx: _Context, data: str) -> str:
    """The schema a data path will hold: its version.json when it exists, else the sub-folder name
    the producing step writes (e.g. 12_filter's `preference`)."""
    path = repo_path(data) if data else None
    if path is not None and (path / "version.json").is_file():
        return json.loads((path / "version.json").read_text(encoding="utf-8")).get("schema", "")
    return Path(data).name if data else ""


def plan_preference_data(step: Step, ctx: _Context) -> StagePlan:
    """30_preference_data: on-policy sampling (k answers per prompt from `policy`) when the source
    is on_policy (auto: when `data` is not a preference version); else pairing only (CPU)."""
    p = step.params
    source = p["source"]
    if source == "auto":
        source = "groups" if _schema(ctx, p["data"]) in ("preference", "pairs") else "on_policy"
    prompts = ctx.rows(p["data"]).at_most(p["max_prompts"])
    if source == "groups":
        plan = _passthrough("pairs")(step, ctx)
        plan.outputs = {"pairs": prompts.bound()}
        return plan
    plan = _generation(step, ctx, "policy", prompts, p["k"], p["max_new_tokens"], p["batch_size"])
    plan.outputs = {"pairs": prompts.bound()}
    return plan


def plan_data_mix(step: Step, ctx: _Context) -> StagePlan:
    """10_data_sft_mix: no GPU work; its output sizes follow from its knobs (upper bounds: sources
    may hold fewer rows, dedup drops some). HumanEval's train split has 74 problems, shared by SFT and RL."""
    p = step.params
    shared = 1 if p["shared_data_dir"] else 0
    code_sft = min(p["sft_code_n"], HUMANEVAL_TRAIN)
    sft = len(p["sft_math_tasks"]) * p["sft_math_per_task"] + code_sft + shared * 3 * p["shared_per_source"]
    rl = (
        len(p["rl_math_tasks"]) * p["rl_math_per_task"]
        + p["rl_ifeval_n"]
        + min(p["rl_code_n"], HUMANEVAL_TRAIN - code_sft)
        + shared * p["shared_per_source"]  # GSM8K train problems after the SFT ones
    )
    plan = StagePlan(step.name, step.notebook, step.run_id, "data")
    plan.outputs = {"sft": Count(sft, False), "rl": Count(rl, False)}
    plan.notes.append(f"CPU data step: writes <= {sft:,} sft rows and <= {rl:,} rl prompts (from its knobs)")
    return plan


def plan_curriculum(step: Step, ctx: _Context) -> StagePlan:
    """16_curriculum: mixes of `data` (each at most its rows) and an RL pool of `rl_data` (<= rl_size)."""
    p = step.params
    plan = StagePlan(step.name, step.notebook, step.run_id, "data")
    plan.outputs = {"*": ctx.rows(p["data"]).bound()}
    if p["rl_data"]:
        plan.outputs["rl_pool"] = ctx.rows(p["rl_data"]).at_most(p["rl_size"]).bound()
    plan.notes.append("CPU data step: no GPU work modelled")
    return plan


def _passthrough(*subs: str):
    """A data stage that only drops rows: each output holds at most the input's rows."""

    def plan(step: Step, ctx: _Context) -> StagePlan:
        rows = ctx.rows(step.params.get("data", "")).bound()
        out = StagePlan(step.name, step.notebook, step.run_id, "data")
        out.outputs = {sub: rows for sub in subs}
        out.notes.append("CPU data step: no GPU work modelled")
        if step.params.get("judge_model"):
            out.notes.append(f"judge model {step.params['judge_model']}: its generation is not modelled")
        return out

    return plan


HUMANEVAL_TRAIN = 74  # problems in the HumanEval train split 10_data_sft_mix draws from (its sft_code_n doc)

ESTIMATORS = {
    "10_data_sft_mix": plan_data_mix,
    "11_distill": plan_distill,
    "12_filter": _passthrough("sft", "preference"),
    "13_difficulty": plan_difficulty,
    "14_classify_sample": _passthrough("data"),
    "15_decontam": _passthrough("data"),
    "16_curriculum": plan_curriculum,
    "17_patch": plan_patch,
    "20_sft": plan_sft,
    "30_preference_data": plan_preference_data,
    "31_dpo": plan_dpo,
    "32_kto": plan_kto,
    "33_rsft": plan_rsft,
    "40_grpo": plan_grpo,
    "50_opd": plan_opd,
    "51_mopd": plan_mopd,
    "60_eval": plan_eval,
}


def plan_pipeline(
    path: str | Path, hw: Hardware, results_root: str | Path | None = None, params_dir: Path = PARAMS_DIR
) -> list[StagePlan]:
    """Build (and so validate) every step of a pipeline file, then estimate each one."""
    pipeline = load_pipeline(path, results_root, params_dir)
    ctx = _Context(pipeline, hw, params_dir)
    plans = []
    for step in pipeline.steps:
        # load_pipeline merges and type-checks the layers; building the stage dataclass also runs
        # its value checks (check()), as the notebook's first cell will.
        build_config(stage_config_class(step.notebook), step.notebook, step.injected(), ctx.where(step))
        estimator = ESTIMATORS.get(step.notebook)
        if estimator is None:
            plan = StagePlan(step.name, step.notebook, step.run_id, "data")
            plan.notes.append("validated; no compute model for this stage")
        else:
            plan = estimator(step, ctx)
        ctx.plans[step.name] = plan
        ctx.producers[step.name] = step
        plans.append(plan)
    return plans


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _gib(x: float) -> str:
    return f"{x / GIB:.2f}"


_TRAIN_MEMORY = ("weights", "gradients", "optimizer", "gathered", "activations")


ROLLOUT_MODES = {
    "colocate": "vLLM colocated (reserved for the run)",
    "in_step": "generated by the trainer between steps",
    "separate": "an earlier phase of the step",
    "server": "vLLM server(s) on other GPUs: not counted",
}


def _train_lines(plan: StagePlan, hw: Hardware) -> list[str]:
    mem, d = plan.memory, plan.details
    parts = " | ".join(f"{key} {_gib(mem[key])}" for key in _TRAIN_MEMORY)
    extra = "".join(f" | {label} {_gib(mem[key])}" for key, label in _EXTRA_MEMORY if mem.get(key))
    mode = d.get("rollout_mode")
    if mode:
        extra += f" | rollout {_gib(mem['rollout'])} ({ROLLOUT_MODES[mode]})"
    recompute = f" (x{d['recompute_factor']:.2f} hardware work for recompute)" if d["checkpointing"] else ""
    lines = [
        f"  batch     micro {d['micro_batch']} x {d['seq']} tokens, global {d['global_batch']} {d['unit']}, "
        f"checkpointing {'on' if d['checkpointing'] else 'off'}, attention {d['attention']}",
        f"  GiB/GPU   {parts} (checkpointed {_gib(mem['activations_ckpt'])} / none {_gib(mem['activations_none'])}) "
        f"| logits {_gib(mem['logits'])}{extra} | total {_gib(mem['total'])} of {hw.gpu_mem_gib:g} -> "
        f"{'fits' if plan.fits else 'DOES NOT FIT'}",
        f"  tokens    {plan.tokens} (rows {d['rows']}, {d['unit']} {d['sequences']})   "
        f"{d['formula']} = {d['policy_flops']}{recompute}",
    ]
    for f in d["forward"]:
        lines.append(
            f"  forward   {f['role']}: {f['spec']} ({_num(f['params'])} parameters), "
            f"FLOPs = 2N * {f['tokens']} tokens = {f['tokens'] * (2 * f['params'])}"
        )
    if plan.rollout is not None:
        lines += [
            line.replace("  GiB/GPU  ", "  rollout  ", 1).replace("  tokens   ", "  rollout  ", 1)
            for line in _generate_lines(plan.rollout, hw)
        ]
    if len(d["hours"]) > 1:
        lines.append("  hours     " + " + ".join(f"{role} {h}" for role, h in d["hours"].items()))
    return lines


_EXTRA_MEMORY = (("frozen", "frozen weights"), ("frozen_logits", "teacher logits"))


def _generate_lines(plan: StagePlan, hw: Hardware) -> list[str]:
    mem, d = plan.memory, plan.details
    return [
        f"  GiB/GPU   {d['engine']}: weights {_gib(mem['weights'])} | KV cache {_gib(mem['kv_cache'])} "
        f"({d['concurrent_sequences']} sequence(s) x {d['seq_tokens']} tokens, "
        f"{mem['kv_per_token'] / 1024:.0f} KiB/token) | total {_gib(mem['total'])} of {hw.gpu_mem_gib:g} -> "
        f"{'fits' if plan.fits else 'DOES NOT FIT'}; KV room for {mem['max_sequences']} full sequences",
        f"  tokens    {plan.tokens} = generated {d['generated_tokens']} + prompts {d['prefill_tokens']} "
        f"({d['prompts']} prompts x {d['samples_per_prompt']} samples x <= {d['max_new_tokens']} new)   "
        f"{d['formula']} = {plan.flops}",
    ]


def format_plan(plans: list[StagePlan], hw: Hardware, source: str = "") -> str:
    w, g, k, _ = PRECISIONS[hw.precision]
    lines = [
        f"plan for {source}: {hw.world} GPU(s) = {hw.nodes} node(s) x {hw.gpus}, ZeRO-{hw.zero}, "
        f"{hw.precision} precision (weights {w} B, grads {g} B, optimizer {k} B per trainable param), "
        f"{hw.gpu_mem_gib:g} GiB per GPU, peak {hw.peak_tflops:g} TFLOP/s, "
        f"MFU {hw.mfu:g} (train) / {hw.gen_mfu:g} (generate), attention {hw.attention}, tp {hw.tp}",
    ]
    known, unknown = Count(0), []
    for plan in plans:
        lines += ["", f"{plan.step}  [{plan.stage}, {plan.run_id}]  {plan.kind}"]
        if plan.model:
            m = plan.model
            trainable = f", trainable {_num(m['trainable'])}" if m.get("trainable") not in (None, m["params"]) else ""
            lines.append(f"  model     {m['spec']}: {m['params']:,} parameters{trainable}  (config: {m['source']})")
        if plan.kind == "train":
            lines += _train_lines(plan, hw)
        elif plan.kind == "generate":
            lines += _generate_lines(plan, hw)
        if plan.kind != "data":
            hours = plan.gpu_hours
            wall = Count(None if hours.value is None else hours.value / hw.world, hours.exact)
            mfu = f"{hw.mfu if plan.kind == 'train' else hw.gen_mfu:g}"
            if plan.rollout is not None:
                mfu += f" (train) / {hw.gen_mfu:g} (rollout)"
            lines.append(f"  GPU-hours {hours} at MFU {mfu}  (wall-clock {wall} h on {hw.world} GPU(s))")
            if hours.value is None:
                unknown.append(plan.step)
            else:
                known = known + hours
        lines += [f"  note      {note}" for note in plan.notes]
    lines += ["", f"total GPU-hours: {known}" + (f" + unknown for {', '.join(unknown)}" if unknown else "")]
    return "\n".join(lines)


def main_plan(args: Any) -> int:
    hw = Hardware(
        gpus=args.gpus,
        nodes=args.nodes,
        zero=args.zero,
        gpu_mem_gib=args.gpu_mem,
        mfu=args.mfu,
        gen_mfu=args.gen_mfu,
        peak_tflops=args.gpu_peak_tflops,
        tp=args.tp,
        precision=args.precision,
        attention=args.attention,
        prompt_tokens=args.prompt_tokens,
    )
    plans = plan_pipeline(args.pipeline, hw, args.results)
    if args.json:
        print(json.dumps({"hardware": asdict(hw), "steps": [p.to_dict() for p in plans]}, indent=1, default=str))
    else:
        print(format_plan(plans, hw, args.pipeline))
    return 1 if args.check and any(p.fits is False for p in plans) else 0
