"""Model specs: tiny-random, packaged GGUF conversion, local folders, offline Hub ids."""

import pytest

from nebula_utils.inference.models import (
    ModelNotAvailable,
    chatml_template,
    load_model_and_tokenizer,
    resolve_model_path,
)


def test_tiny_random_is_deterministic_and_has_generation_markers(tiny_model_path):
    model, tok = load_model_and_tokenizer("tiny-random", device="cpu")
    assert "{% generation %}" in tok.chat_template
    assert model.config.num_hidden_layers == 2 and model.config.model_type == "qwen3"
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}],
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(masked).startswith("hello there")
    assert resolve_model_path("tiny-random") == tiny_model_path  # cached, not rebuilt


def test_packaged_smollm2_converts_and_answers():
    model, tok = load_model_and_tokenizer("packaged:smollm2-135m-instruct", device="cpu")
    assert model.config.num_hidden_layers == 30  # SmolLM2-135M
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][enc["input_ids"].shape[1] :])


def test_hub_id_offline_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotAvailable, match="Qwen/Qwen3-8B-Base.*not in the local Hugging Face cache"):
        resolve_model_path("Qwen/Qwen3-8B-Base")


def test_local_folder_and_bad_folder(tiny_model_path, tmp_path):
    assert resolve_model_path(tiny_model_path) == tiny_model_path
    with pytest.raises(ModelNotAvailable, match="neither config.json"):
        resolve_model_path(str(tmp_path))


def test_template_inserts_default_system_only_when_asked():
    from jinja2 import Environment
    from transformers.utils.chat_template_utils import _compile_jinja_template

    msgs = [{"role": "user", "content": "q"}]
    plain = _compile_jinja_template(chatml_template()).render(messages=msgs, add_generation_prompt=True)
    smol = _compile_jinja_template(chatml_template("Be nice")).render(messages=msgs, add_generation_prompt=True)
    assert plain == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    assert smol.startswith("<|im_start|>system\nBe nice<|im_end|>\n")
    assert Environment  # jinja2 is the engine transformers uses
