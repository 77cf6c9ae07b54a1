"""Packed SFT batches on CPU (TRL's bfd packing, padding-free rows): a packed sample must see
only itself, so its loss equals the loss of the same sample trained alone."""

import pytest
import torch

TOL = 1e-4  # fp32; observed differences are 0 to ~1e-6 (summation order of different matmul shapes)


def make_trainer(sft_config, tmp_path, model, packing: bool):
    from trl import SFTTrainer

    from nebula_utils.inference.models import load_tokenizer
    from nebula_utils.train.sft import load_sft_dataset

    cfg = sft_config(packing=packing)
    return SFTTrainer(
        model=model,
        args=cfg.to_trl(tmp_path / f"o{int(packing)}", bf16=False),
        train_dataset=load_sft_dataset(cfg.data),
        processing_class=load_tokenizer("tiny-random"),
    )


def token_nll(model, input_ids, labels, **kwargs) -> torch.Tensor:
    """Per-position NLL of the next token (0 where the next label is -100), shape [len - 1]."""
    with torch.no_grad():
        logits = model(input_ids=input_ids[None], **kwargs).logits[0, :-1].float()
    target = labels[1:]
    nll = torch.nn.functional.cross_entropy(logits, target.clamp(min=0), reduction="none")
    return nll * (target != -100)


def split_packed(batch) -> list[slice]:
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    return [slice(a, b) for a, b in zip(starts, starts[1:])]


def per_sequence_losses(model, trainer_unpacked, trainer_packed, **forward_overrides):
    """{sample input_ids: (unpacked mean NLL, packed mean NLL)} over every sample of the packed batches."""
    alone = {}
    for row in trainer_unpacked.train_dataset:
        ids, labels = torch.tensor(row["input_ids"]), torch.tensor(row["labels"])
        nll = token_nll(model, ids, labels)
        alone[tuple(row["input_ids"])] = nll.sum() / (labels[1:] != -100).sum()
    packed_rows = list(trainer_packed.train_dataset)
    pairs = {}
    for i in range(0, len(packed_rows), 4):
        batch = trainer_packed.data_collator(packed_rows[i : i + 4])
        inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "labels")} | forward_overrides
        nll = token_nll(model, batch["input_ids"][0], batch["labels"][0], **inputs)
        for seg in split_packed(batch):
            key = tuple(batch["input_ids"][0, seg].tolist())
            targets = (batch["labels"][0, seg][1:] != -100).sum()
            pairs[key] = (alone[key], nll[seg.start : seg.stop - 1].sum() / targets)
    return pairs


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_samples_do_not_attend_to_each_other(sft_config, tmp_path, tiny_model_path, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32, attn_implementation=attn)
    unpacked, packed = (
        make_trainer(sft_config, tmp_path, model, False),
        make_trainer(sft_config, tmp_path, model, True),
    )
    model.eval()
    assert "seq_lengths" in packed.train_dataset.column_names
    assert len(packed.train_dataset) < len(unpacked.train_dataset)  # several samples share a row
    pairs = per_sequence_losses(model, unpacked, packed)
    assert len(pairs) == len(unpacked.train_dataset)  # every sample found whole in a packed row
    worst = max(abs(float(a - b)) for a, b in pairs.values())
    assert worst < TOL, f"{attn}: per-sequence loss packed vs alone differs by {worst:.2e}"

    # Control: the same rows with positions that do not restart (plain concatenation) let later
    # samples see earlier ones, and the check above would catch it.
    n = packed.data_collator(list(packed.train_dataset)[:4])["input_ids"].shape[1]
    leaky = per_sequence_losses(model, unpacked, packed, position_ids=torch.arange(n)[None])
    assert max(abs(float(a - b)) for a, b in leaky.values()) > 100 * TOL


def test_packed_trainer_loss_equals_token_mean_of_samples_alone(sft_config, tmp_path, tiny_model_path):
    """The trainer's own loss (TRL's fused LM head) on a packed batch = the token-weighted mean of
    the same samples' losses computed one at a time."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32, attn_implementation="sdpa")
    unpacked, packed = (
        make_trainer(sft_config, tmp_path, model, False),
        make_trainer(sft_config, tmp_path, model, True),
    )
    model.eval()
    alone = {}
    for row in unpacked.train_dataset:
        ids, labels = torch.tensor(row["input_ids"]), torch.tensor(row["labels"])
        alone[tuple(row["input_ids"])] = (token_nll(model, ids, labels).sum(), (labels[1:] != -100).sum())
    batch = packed.data_collator(list(packed.train_dataset)[:4])
    with torch.no_grad():
        loss = packed.compute_loss(model, dict(batch))
    segs = [tuple(batch["input_ids"][0, s].tolist()) for s in split_packed(batch)]
    expected = sum(alone[k][0] for k in segs) / sum(alone[k][1] for k in segs)
    assert abs(float(loss) - float(expected)) < TOL


def test_attention_without_packed_masks_is_refused(tiny_model_path):
    from transformers import AutoModelForCausalLM

    from nebula_utils.train.sft import check_packing_attention

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation="sdpa")
    check_packing_attention(model, packing=True)
    model.config._attn_implementation = "some_custom_kernel"
    check_packing_attention(model, packing=False)
    with pytest.raises(ValueError, match="some_custom_kernel"):
        check_packing_attention(model, packing=True)


@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
def test_full_logits_loss_matches_trl_fused_loss_and_gradients(sft_config, tmp_path, tiny_model_path, packing):
    """The CPU trainer's full-logits loss = TRL's fused LM-head loss, value and gradients (fp32)."""
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from nebula_utils.inference.models import load_tokenizer
    from nebula_utils.train.sft import full_logits_trainer_class, load_sft_dataset

    cfg = sft_config(packing=packing)
    results = []
    for cls in (SFTTrainer, full_logits_trainer_class()):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
        trainer = cls(
            model=model,
            args=cfg.to_trl(tmp_path / cls.__name__, bf16=False),
            train_dataset=load_sft_dataset(cfg.data),
            processing_class=load_tokenizer("tiny-random"),
        )
        batch = trainer.data_collator(list(trainer.train_dataset)[:4])
        targets = (batch["labels"][:, 1:] != -100).sum()
        model.train()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=targets)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((float(loss), grads, trainer._metrics["train"]))
    (fused, fused_grads, fused_metrics), (full, full_grads, full_metrics) = results
    assert abs(fused - full) < 1e-5
    assert fused_grads.keys() == full_grads.keys()
    worst = max(float((fused_grads[n] - full_grads[n]).abs().max()) for n in fused_grads)
    scale = max(float(g.abs().max()) for g in fused_grads.values())  # observed: 0.54, differences 1e-7
    assert scale > 1e-2 and worst < 1e-5 * scale, f"largest gradient difference {worst:.2e} of {scale:.2e}"
    assert full_metrics["mean_token_accuracy"] == pytest.approx(fused_metrics["mean_token_accuracy"])
    assert full_metrics["num_tokens"] == fused_metrics["num_tokens"]
