"""The preference audit set: well-formed, scored from real log-probabilities, and it moves when a model
is trained to prefer one side."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from nebula_utils.evaluate.preference_audit import (
    CATEGORIES,
    audit_metrics,
    audit_table,
    load_audit_pairs,
    score_pairs,
    sequence_logprobs,
)


def test_audit_set_has_every_category_with_enough_pairs():
    pairs = load_audit_pairs()
    counts = Counter(p["category"] for p in pairs)
    assert set(counts) == set(CATEGORIES)
    assert all(10 <= n <= 20 for n in counts.values()), counts
    assert all(p["preferred"] != p["dispreferred"] for p in pairs)
    # the long-vacuous answers really are the long ones, so the category tests length bias
    vacuous = [p for p in pairs if p["category"] == "short_correct_vs_long_vacuous"]
    assert all(len(p["dispreferred"].split()) > 4 * len(p["preferred"].split()) for p in vacuous)


@pytest.mark.parametrize(
    "line,message",
    [
        ({"id": "a", "category": "correction_vs_sycophancy", "prompt": "q", "preferred": "x"}, "lacks dispreferred"),
        ({"id": "a", "category": "nope", "prompt": "q", "preferred": "x", "dispreferred": "y"}, "unknown category"),
        (
            {"id": "a", "category": "correction_vs_sycophancy", "prompt": " ", "preferred": "x", "dispreferred": "y"},
            "'prompt'",
        ),
    ],
)
def test_bad_audit_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "audit.jsonl"
    good = {"id": "ok", "category": "correction_vs_sycophancy", "prompt": "q", "preferred": "x", "dispreferred": "y"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=rf"audit.jsonl:2: .*{message}"):
        load_audit_pairs(path)


def test_sequence_logprobs_are_the_answer_tokens_of_one_forward_pass(tiny_model_path):
    from nebula_utils.inference.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("tiny-random", device="cpu")
    prompts = ["What is 2 + 2?", "Name a prime number.", "Say hi."]
    answers = ["4", "Seven is a prime number, since its only divisors are 1 and 7.", "Hi!"]
    batched = sequence_logprobs(model, tok, prompts, answers, batch_size=3)  # padded together
    for prompt, answer, (logp, n) in zip(prompts, answers, batched):
        messages = [{"role": "user", "content": prompt}]
        head = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
        ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
        n_head = len(tok(head, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        expected = lp[n_head - 1 :].gather(-1, ids[0, n_head:, None]).sum()
        assert n == ids.shape[1] - n_head and n >= len(tok(answer, add_special_tokens=False)["input_ids"]) + 1
        assert logp == pytest.approx(float(expected), rel=1e-4)


def audit_pairs_version(tmp_path, category: str):
    """The audit pairs of one category as a preference version (preferred = chosen): training data
    that teaches exactly what the audit then measures."""
    from nebula_utils.data.distillation import group_dataset
    from nebula_utils.data.manifests import processing_step, source_entry
    from nebula_utils.data.versions import save_version

    rows = [
        {
            "id": p["id"],
            "source": "preference_audit",
            "license": "MIT",
            "task": "general_chat",
            "prompt": [{"role": "user", "content": p["prompt"]}],
            "candidates": [{"content": p["preferred"]}, {"content": p["dispreferred"]}],
            "chosen": 0,
            "rejected": 1,
            "preference_reason": "audit: preferred answer",
        }
        for p in load_audit_pairs()
        if p["category"] == category
    ]
    step = processing_step("audit_pairs", count_in=len(rows), count_out=len(rows))
    source = source_entry("preference_audit", path="nebula_utils/assets/preference_audit.jsonl", license="MIT")
    return save_version(group_dataset(rows), tmp_path / "audit_pairs", "preference", source, [step]).path


def test_a_model_trained_to_prefer_one_side_scores_accordingly(tmp_path, stage_config, tiny_model_path):
    """DPO on the sycophancy pairs (correction preferred): the implicit reward then favours the
    correction on every one of them, the trained model's own preference moves toward it, and the
    scores are different numbers from the reference's."""
    from nebula_utils.train.preference import train_dpo

    category = "correction_vs_sycophancy"
    data = audit_pairs_version(tmp_path, category)
    cfg = stage_config(
        "31_dpo",
        model="tiny-random",
        data=str(data),
        max_steps=6,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        warmup_ratio=0.0,
        per_device_train_batch_size=4,
        logging_steps=1,
        audit=False,
    )
    train_dpo(cfg, tmp_path / "run")
    pairs = [p for p in load_audit_pairs() if p["category"] in (category, "factual_plain_vs_polished_wrong")]
    frame = score_pairs(pairs, str(tmp_path / "run" / "model"), "tiny-random", device="cpu")
    assert not (frame.p_logp == frame.ref_p_logp).any()  # real log-probs of two different models
    metrics = audit_metrics(frame)
    assert metrics[f"audit_reward/{category}"]["value"] == 1.0
    assert metrics[f"audit_reward/{category}"]["n"] == 13
    assert metrics[f"audit/{category}"]["value"] > metrics[f"audit_ref/{category}"]["value"]
    low, high = metrics["audit/all"]["ci95"]
    assert low <= metrics["audit/all"]["value"] <= high and metrics["audit/all"]["n"] == len(pairs)
    table = audit_table(metrics)
    assert list(table["category"]) == ["all", "factual_plain_vs_polished_wrong", category]
