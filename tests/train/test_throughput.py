"""Throughput accounting of training: token counts, padding, the cached matmul peak, the bf16
decision and the metrics train_sft reports."""

import json

import pytest
import torch

from nebula_utils.config import ConfigError
from nebula_utils.inference import cpu
from nebula_utils.train import throughput as T


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh peak cache (only the peak's: NEBULA_CACHE also holds the models)."""
    monkeypatch.setattr(T, "cache_root", lambda: tmp_path / "cache")
    return tmp_path / "cache"


def test_token_counter_counts_real_target_and_padded_positions(tiny_model_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    counter = T.TokenCounter().attach(model)
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, 7, 8, 9], [-100, 6, 7, -100, -100]])
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=labels)
    model.eval()
    model(input_ids=ids, attention_mask=mask)  # evaluation forwards are not training tokens
    counter.detach()
    model.train()
    model(input_ids=ids, attention_mask=mask)  # detached: not counted
    assert (counter.slots, counter.tokens, counter.target_tokens, counter.batches) == (10, 8, 5, 1)
    assert counter.padding_fraction == pytest.approx(0.2)


def test_peak_is_measured_once_and_cached(cache):
    first = T.peak_flops("float32", threads=1, n=256)
    again = T.peak_flops("float32", threads=1, n=256)
    assert first["flops_per_s"] > 1e8 and not first["cached"]
    assert again["cached"] and again["flops_per_s"] == first["flops_per_s"]
    table = json.loads((cache / "peak_flops.json").read_text())
    assert list(table) == [first["key"]] and "float32" in first["key"] and "1 threads" in first["key"]
    assert not T.peak_flops("float32", threads=1, n=256, refresh=True)["cached"]


def test_the_cache_keeps_the_best_peak_seen(cache):
    """A peak is a maximum: a lower reading (a busy neighbour) never replaces a higher one."""
    kept = T.remember_peak("bfloat16", 6.5e11, threads=2, n=256)
    assert kept["flops_per_s"] == 6.5e11
    assert T.remember_peak("bfloat16", 4.0e11, threads=2, n=256)["flops_per_s"] == 6.5e11
    assert T.remember_peak("bfloat16", 8.1e11, threads=2, n=256)["flops_per_s"] == 8.1e11
    assert T.peak_flops("bfloat16", threads=2, n=256)["flops_per_s"] == 8.1e11  # what training reads


def test_bf16_setting_is_decided_per_machine(cache, monkeypatch):
    assert T.resolve_bf16(False) == (False, "bf16: false")
    assert T.resolve_bf16(True)[0] is True
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))  # a CI-like CPU without native bf16
    use, why = T.resolve_bf16("auto")
    assert use is False and "reports no amx_bf16/avx512_bf16" in why
    assert not (cache / "peak_flops.json").exists()  # nothing measured: the flags already decide


def test_bf16_auto_follows_the_measured_matmul_ratio(cache, monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    peaks = {"bfloat16": 4e11, "float32": 1e11}
    monkeypatch.setattr(T, "measure_matmul_peak", lambda dtype, *a, **k: peaks[dtype])
    assert T.resolve_bf16("auto", threads=2)[0] is True
    peaks["bfloat16"] = 1.2e11  # bf16 barely faster (e.g. emulated): stay in fp32
    assert T.resolve_bf16("auto", threads=3)[0] is False


def test_tied_embeddings_count_once(tiny_model_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert T.count_params(model) == sum(unique.values())
    assert T.flops_per_token(model) == 6 * T.count_params(model)
    assert T.flops_per_token(model, lora=True) == 4 * T.count_params(model)


def test_bf16_key_is_checked(sft_config):
    for ok in ("auto", True, False):
        sft_config(bf16=ok)
    with pytest.raises(ConfigError, match="key 'bf16'"):
        sft_config(bf16="fast")


@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
def test_train_sft_reports_tokens_padding_and_mfu(sft_config, tmp_path, tiny_model_path, packing):
    from nebula_utils.train.sft import train_sft

    cfg = sft_config(packing=packing, max_steps=3, logging_steps=1, learning_rate=5e-3)
    metrics = train_sft(cfg, tmp_path / "run")
    pad = metrics["train/padding_fraction"]["value"]
    assert pad == 0.0 if packing else 0.1 < pad < 0.9  # the rows differ in length 4-fold
    assert metrics["timing/train_tokens_per_s"]["value"] > metrics["timing/train_target_tokens_per_s"]["value"] > 0
    assert metrics["train/tokens"]["value"] > metrics["train/target_tokens"]["value"] > 0
    mfu = metrics["timing/train_mfu"]
    assert 0 < mfu["value"] < 1 and mfu["precision"] == "float32" and mfu["peak_flops_per_s"] > 0
    assert mfu["n"] == 3 and mfu["flops_per_token"] > 0
    history = json.loads((tmp_path / "run" / "train_log.json").read_text())
    logged = [h for h in history if "loss" in h]
    assert len(logged) == 3 and all(h["tokens_per_s"] > 0 and 0 < h["mfu"] < 1 for h in logged)


def test_bf16_autocast_is_really_used_and_close_to_fp32(sft_config, tmp_path, tiny_model_path):
    """Forced bf16 on CPU trains (emulated where the CPU has no bf16 units) and its first loss,
    before any update, is within 2% of fp32 without being identical (autocast was applied)."""
    from nebula_utils.train.sft import train_sft

    first = {}
    for bf16 in (False, True):
        cfg = sft_config(bf16=bf16, max_steps=1, logging_steps=1)
        metrics = train_sft(cfg, tmp_path / f"run{int(bf16)}")
        first[bf16] = metrics["train/loss_first"]["value"]
        assert metrics["timing/train_mfu"]["precision"] == ("bfloat16" if bf16 else "float32")
    assert first[True] != first[False]
    assert abs(first[True] - first[False]) / first[False] < 0.02
