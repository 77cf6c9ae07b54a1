"""DPO and KTO through TRL's real trainers on the tiny random model and real pipeline pairs
(tiny-random's truncated answers rejected, the dataset's verified answers chosen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nebula_utils.config import ConfigError
from tests.factories import small_distill_version, small_mix, small_pairs_version


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, tiny_model_path) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    mix = small_mix(root / "mix")
    return small_pairs_version(root / "pairs", small_distill_version(root / "distill", mix / "sft"))


def config(stage: str, stage_config, data: Path, **over):
    values = dict(
        model="tiny-random",
        data=str(data),
        max_steps=4,
        learning_rate=5e-3,
        per_device_train_batch_size=2,
        max_length=160,
        logging_steps=1,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        audit=False,
    )
    return stage_config(stage, **(values | over))


def weights(path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def changed(before: dict, after: dict) -> list[str]:
    return [k for k in before if not torch.equal(before[k], after[k])]


def test_dpo_changes_weights_and_logs_rewards_margins_accuracies(tmp_path, pairs, stage_config, tiny_model_path):
    from nebula_utils.train.preference import curve_table, train_dpo

    cfg = config("31_dpo", stage_config, pairs)
    metrics = train_dpo(cfg, tmp_path)
    assert changed(weights(tiny_model_path), weights(tmp_path / "model"))
    card = (tmp_path / "model" / "README.md").read_text()  # train.model_card: parent and data hash
    assert "stage: 31_dpo" in card and "parent:\n    spec: tiny-random" in card and "content_hash:" in card
    curves = curve_table(tmp_path)
    assert len(curves) == 4
    for col in ("loss", "learning_rate", "grad_norm", "rewards/accuracies", "rewards/margins", "rewards/chosen"):
        assert curves[col].notna().all(), col
    assert curves["loss"].iloc[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: log 2
    # after 4 steps at a high LR the chosen (verified) answers out-score the rejected ones
    assert metrics["train/rewards_margins_last"]["value"] > metrics["train/rewards_margins_first"]["value"] == 0
    assert metrics["train/rewards_accuracies_last"]["value"] >= 0.5
    assert metrics["train/pairs"]["value"] == metrics["train/loss_first"]["n"] > 0


def test_full_dpo_has_a_frozen_copy_as_reference_and_lora_the_base_weights(
    tmp_path, pairs, stage_config, tiny_model_path
):
    from peft import PeftModel

    from nebula_utils.train.preference import build_dpo_trainer

    full = build_dpo_trainer(config("31_dpo", stage_config, pairs, max_steps=1), tmp_path / "full")
    assert full.ref_model is not None and full.ref_model is not full.model
    full.train()
    start = weights(tiny_model_path)
    assert not changed(start, full.ref_model.state_dict()) and changed(start, full.model.state_dict())
    lora = build_dpo_trainer(config("31_dpo", stage_config, pairs, use_lora=True), tmp_path / "lora")
    # TRL computes the reference with the adapters disabled: no second model in memory
    assert lora.ref_model is None and isinstance(lora.model, PeftModel)


def test_lora_dpo_saves_a_merged_checkpoint_that_differs_from_the_start(
    tmp_path, pairs, stage_config, tiny_model_path
):
    from nebula_utils.inference.models import load_model
    from nebula_utils.train.preference import train_dpo

    train_dpo(config("31_dpo", stage_config, pairs, use_lora=True, learning_rate=5e-2), tmp_path)
    model = load_model(str(tmp_path / "model"), device="cpu")
    assert not hasattr(model, "peft_config")
    diff = changed(weights(tiny_model_path), {k: v for k, v in model.state_dict().items()})
    assert diff and all("proj" in k for k in diff)  # only the adapted linear layers moved


def test_sigmoid_norm_is_tulu3_length_normalised_dpo(tmp_path, pairs, stage_config):
    """TRL's `sigmoid_norm` loss equals Tülu 3's -log σ(β (Δ_c/|y_c| - Δ_r/|y_r|)), Δ = log π - log π_ref,
    recomputed here from log-probs scored by the audit's own scorer on the trained and the start model."""
    from nebula_utils.data.preference import dpo_rows
    from nebula_utils.evaluate.preference_audit import sequence_logprobs
    from nebula_utils.inference.models import load_model_and_tokenizer
    from nebula_utils.train.preference import build_dpo_trainer, load_preference_rows

    beta = 2.0
    cfg = config("31_dpo", stage_config, pairs, loss_type="sigmoid_norm", beta=beta, max_length=2048, max_steps=2)
    trainer = build_dpo_trainer(cfg, tmp_path)
    assert trainer.loss_types == ["sigmoid_norm"]
    trainer.train()
    trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, batch))

    rows = dpo_rows(load_preference_rows(pairs))
    prompts = [r["prompt"] for r in rows] * 2
    answers = [r["chosen"][0]["content"] for r in rows] + [r["rejected"][0]["content"] for r in rows]
    ref, tok = load_model_and_tokenizer("tiny-random", device="cpu")
    policy = trainer.model
    scored = [sequence_logprobs(m, tok, prompts, answers) for m in (policy, ref)]
    n = len(rows)
    deltas = [(scored[0][i][0] - scored[1][i][0]) / scored[0][i][1] for i in range(2 * n)]
    ours = torch.nn.functional.logsigmoid(beta * (torch.tensor(deltas[:n]) - torch.tensor(deltas[n:])))
    assert trl_loss == pytest.approx(float(-ours.mean()), rel=1e-3)
    assert trl_loss < 0.6931  # it trained: the pairs are no longer at log 2


def test_kto_trains_on_unpaired_labels(tmp_path, pairs, stage_config, tiny_model_path):
    from nebula_utils.train.preference import build_kto_trainer, curve_table, kto_dataset, train_kto

    data = kto_dataset(pairs)
    assert "chosen" not in data.column_names and set(data["label"]) == {True, False}
    cfg = config("32_kto", stage_config, pairs)
    trainer = build_kto_trainer(cfg, tmp_path / "peek")
    assert {"prompt_ids", "completion_ids", "KL_completion_ids", "label"} <= set(trainer.train_dataset.column_names)
    metrics = train_kto(cfg, tmp_path)
    assert changed(weights(tiny_model_path), weights(tmp_path / "model"))
    assert metrics["train/desirable_share"]["value"] == 0.5
    curves = curve_table(tmp_path)
    for col in ("loss", "kl", "rewards/chosen", "rewards/rejected"):
        assert col in curves.columns, col
    assert metrics["train/rewards_margins_last"]["value"] > 0  # desirable answers gained on undesirable ones


def test_trl_config_composition(tmp_path, pairs, stage_config):
    cfg = config("31_dpo", stage_config, pairs, loss_type="sigmoid_norm", beta=5.0, trl_overrides={"ld_alpha": 0.5})
    args = cfg.to_trl(tmp_path)
    assert args.loss_type == ["sigmoid_norm"] and args.beta == 5.0 and args.ld_alpha == 0.5
    from nebula_utils.train.throughput import resolve_bf16

    # bf16 decided per machine (as 20_sft), not TRL's default bf16=True
    assert args.bf16 is resolve_bf16("auto", "cpu")[0]
    assert args.activation_checkpointing is False and args.max_steps == 4
    with pytest.raises(ConfigError, match="unknown trl.DPOConfig field 'not_a_field'"):
        config("31_dpo", stage_config, pairs, trl_overrides={"not_a_field": 1}).to_trl(tmp_path)
    kto = config("32_kto", stage_config, pairs, desirable_weight=1.33).to_trl(tmp_path)
    assert kto.desirable_weight == 1.33 and kto.loss_type == "kto"


def test_preference_data_errors_name_the_path(tmp_path, pairs):
    from nebula_utils.train.preference import dpo_dataset, kto_dataset
    from tests.factories import small_mix

    with pytest.raises(FileNotFoundError, match="no preference data"):
        dpo_dataset(tmp_path / "missing")
    mix = small_mix(tmp_path / "mix")
    with pytest.raises(ValueError, match="got schema 'sft'"):
        kto_dataset(mix / "sft")
    assert json.loads((pairs / "version.json").read_text())["schema"] == "preference"


@pytest.mark.gpu
def test_dpo_and_the_audit_run_on_cuda_in_bf16(tmp_path, pairs, stage_config, tiny_model_path):
    """On CUDA the stage trains in bf16 (as 20_sft) and the audit scores on the GPU."""
    from nebula_utils.evaluate.preference_audit import load_audit_pairs, score_pairs
    from nebula_utils.train.preference import train_dpo

    cfg = config("31_dpo", stage_config, pairs, device="cuda", max_steps=2)
    assert cfg.to_trl(tmp_path / "args").bf16 is True
    metrics = train_dpo(cfg, tmp_path)
    assert metrics["train/loss_first"]["value"] == pytest.approx(0.6931, abs=1e-2)
    frame = score_pairs(load_audit_pairs()[:8], str(tmp_path / "model"), "tiny-random", device="cuda")
    assert frame["reward_margin"].notna().all()
