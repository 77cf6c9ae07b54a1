"""Loss-mask audit (nebula_utils.train.loss_mask) on examples prepared by TRL's real SFTTrainer."""

import copy

import pytest

from nebula_utils.inference.models import load_tokenizer
from nebula_utils.train.loss_mask import CLOSE, OPEN, LossMaskError, audit_trainer, check_template, count_trained
from nebula_utils.train.sft import load_sft_dataset, prepare_sft

# Parts of tiny-random's chat template (SmolLM2's tokenizer with nebula_utils.inference.models'
# ChatML template, whose {% generation %} markers wrap the reply and its <|im_end|>; TRL keeps a
# template that has markers as it is).
REPLY = "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
USER = "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
END_ONLY = [(REPLY, "{{- message['content'] }}{% generation %}{{- '<|im_end|>' }}{% endgeneration %}")]
ON_USER = [
    (REPLY, "{{- message['content'] + '<|im_end|>' }}"),
    (USER, "{% generation %}" + USER + "{% endgeneration %}"),
]
NO_MARKERS = [(REPLY, "{{- message['content'] + '<|im_end|>' }}")]


def retemplated(pairs):
    """A copy of tiny-random's tokenizer with parts of its chat template replaced."""
    tok = copy.deepcopy(load_tokenizer("tiny-random"))
    for old, new in pairs:
        assert old in tok.chat_template, old
        tok.chat_template = tok.chat_template.replace(old, new)
    return tok


def build_trainer(cfg, tokenizer, tmp_path):
    from trl import SFTTrainer

    from nebula_utils.inference.models import resolve_model_path

    return SFTTrainer(
        model=resolve_model_path("tiny-random"),
        args=cfg.to_trl(tmp_path / "o"),
        train_dataset=load_sft_dataset(cfg.data),
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
def test_markers_template_passes_and_marks_only_assistant_tokens(sft_config, tmp_path, tiny_model_path, packing):
    cfg = sft_config(packing=packing)
    job = prepare_sft(cfg, tmp_path / "run")
    audit = job.audit
    (ex,) = audit.examples
    assert "tiny-random" in audit.template and "patched by TRL" not in audit.template  # our template has markers
    assert ex.assistant_tokens > 0 and ex.assistant_trained == ex.assistant_tokens
    assert set(ex.other_trained) == {"<|im_end|>"}  # the end of the reply is trained: the model learns to stop
    assert ex.trained == ex.assistant_trained + 1
    row = load_sft_dataset(cfg.data)[0]["messages"]
    user, reply = row[0]["content"], row[1]["content"]
    assert f"{OPEN}{reply}<|im_end|>{CLOSE}" in ex.text
    assert user in ex.text and f"{OPEN}{user}" not in ex.text and ex.text.count(OPEN) == 1
    # the fraction covers every row TRL prepared (packed rows when packing) and matches the labels
    labels = job.trainer.train_dataset["labels"]
    assert (audit.dataset_tokens, audit.dataset_trained) == (
        sum(map(len, labels)),
        sum(t != -100 for lab in labels for t in lab),
    )
    assert 0.2 < audit.trained_fraction < 0.95
    saved = (tmp_path / "run" / "loss_mask_audit.txt").read_text()
    assert saved == audit.report() and f"{audit.trained_fraction:.1%}" in saved


def test_template_without_generation_markers_fails_with_a_clear_error(sft_config, tmp_path, tiny_model_path):
    plain = retemplated(NO_MARKERS)
    assert "generation %" not in plain.chat_template
    with pytest.raises(LossMaskError, match=r"chat template of tiny-random .* has no \{% generation %\} markers"):
        check_template(plain, "tiny-random", assistant_only_loss=True)
    check_template(plain, "tiny-random", assistant_only_loss=False)  # full-sequence loss needs no markers
    # What TRL 1.16 itself does with this template: a generic error at construction (no model named).
    # If a TRL upgrade starts patching or silently training instead, this tells us.
    with pytest.raises(ValueError, match="not training-compatible"):
        build_trainer(sft_config(), plain, tmp_path)


# markers around the end-of-turn token only (the reply's text is never trained), or on the user turn
@pytest.mark.parametrize("pairs", [END_ONLY, ON_USER], ids=["end-of-turn-only", "user-turn"])
def test_misplaced_markers_train_no_assistant_token_and_fail(sft_config, tmp_path, tiny_model_path, pairs):
    tok = retemplated(pairs)
    cfg = sft_config()
    trainer = build_trainer(cfg, tok, tmp_path)  # TRL prepares the data without complaint
    total, trained = count_trained(trainer.train_dataset)
    assert 0 < trained < total
    with pytest.raises(LossMaskError, match=r"tiny-random \(chat template sha256 \w+\) trains no assistant token"):
        audit_trainer(trainer, load_sft_dataset(cfg.data), "tiny-random")


def test_prepare_sft_stops_before_training_on_a_bad_template(sft_config, tmp_path, tiny_model_path):
    from tests.factories import copied_model

    folder = copied_model(tmp_path / "m")
    retemplated(END_ONLY).save_pretrained(folder)
    with pytest.raises(LossMaskError, match=f"{folder}.*trains no assistant token"):
        prepare_sft(sft_config(model=str(folder)), tmp_path / "run")
    assert not list((tmp_path / "run").glob("checkpoints/checkpoint-*")) and not (tmp_path / "run" / "model").exists()
    assert "⟦<|im_end|>⟧" in (tmp_path / "run" / "loss_mask_audit.txt").read_text()  # left to look at


def test_a_one_character_reply_is_found_after_the_user_turn_that_contains_it(tmp_path, tiny_model_path):
    from nebula_utils.train.loss_mask import audit_example

    tok = load_tokenizer("tiny-random")
    messages = [{"role": "user", "content": "say 0"}, {"role": "assistant", "content": "0"}]
    ids = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    labels = [t if m else -100 for t, m in zip(ids["input_ids"], ids["assistant_masks"])]
    ex = audit_example(tok, 0, ids["input_ids"], labels, messages)
    assert (ex.assistant_tokens, ex.assistant_trained, ex.other_trained) == (1, 1, ["<|im_end|>"])
    assert ex.text.endswith("say 0<|im_end|>\n<|im_start|>assistant\n⟦0<|im_end|>⟧\n")


def test_a_row_truncated_to_its_prompt_is_skipped_and_noted(sft_config, tmp_path, tiny_model_path):
    import json

    rows = [[{"role": "user", "content": "word " * 100}, {"role": "assistant", "content": "long"}]] + [
        [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"{i} it is"}] for i in range(4)
    ]
    data = tmp_path / "trunc.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    audit = prepare_sft(sft_config(data=str(data), max_length=48), tmp_path / "run").audit
    (ex,) = audit.examples
    assert ex.row == 1 and ex.assistant_trained == ex.assistant_tokens == 3  # "1 it is" (3 tokens)
    assert "1 row(s) before the audited one dropped" in audit.report() and "max_length=48" in audit.report()
