"""MOPD through the real TRL DistillationTrainer subclass on tiny models: routing sends each row to
its teacher, one teacher is plain OPD bit for bit, the pool bounds the teachers held, params move."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import build_stage_config
from tests.factories import copied_model, perturbed_model, routed_prompts


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_path):
    root = tmp_path_factory.mktemp("mopd_models")
    return {
        # the student and teacher "same" hold tiny-random's weights under two names; "other" is perturbed
        "student": str(copied_model(root / "student")),
        "same": str(copied_model(root / "same")),
        "other": str(perturbed_model(root / "other", seed=1)),
    }


def config(models, data, **over):
    values = dict(
        model=models["student"],
        teacher=models["other"],
        data=str(data),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_completion_length=8,
        learning_rate=1e-2,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        logging_steps=1,
    )
    return build_stage_config("51_mopd", **(values | over))


def make_trainer(cfg, out, steps, pool=None):
    """OPD (TRL's own DistillationTrainer) when `pool` is None, else MOPDTrainer over `pool`."""
    from trl import DistillationTrainer

    from nebula_utils.train.distill import load_causal_lm, load_prompts, student_tokenizer
    from nebula_utils.train.mopd import MOPDTrainer, route_prompts

    prompts = route_prompts(load_prompts(cfg.data, cfg.max_prompts, cfg.seed), cfg.teachers, cfg.route_by)
    common = dict(
        model=load_causal_lm(cfg.model),
        args=cfg.to_trl(out, steps),
        train_dataset=prompts,
        processing_class=student_tokenizer(cfg.model),
    )
    if pool is None:
        return DistillationTrainer(teacher_model=load_causal_lm(cfg.teacher), **common)
    return MOPDTrainer(teachers=pool, **common)


def make_pool(cfg, loader=None, offload="cpu"):
    from nebula_utils.train.mopd import TeacherPool, load_frozen, teacher_specs

    return TeacherPool(teacher_specs(cfg.teacher, cfg.teachers), "cpu", 1, offload, loader=loader or load_frozen)


def losses(trainer, keys=("loss", "grad_norm", "entropy")):
    return [tuple(h[k] for k in keys) for h in trainer.state.log_history if "loss" in h]


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_one_teacher_is_plain_opd_exactly(tmp_path, models):
    cfg = config(models, routed_prompts(tmp_path / "p.jsonl"))
    opd = make_trainer(cfg, tmp_path / "opd", steps=3)
    before = weights(opd.model)
    opd.train()
    mopd = make_trainer(cfg, tmp_path / "mopd", steps=3, pool=make_pool(cfg))
    mopd.train()
    assert losses(opd) == losses(mopd) and len(losses(opd)) == 3
    assert losses(opd)[0][0] > 0  # the perturbed teacher disagrees with the student
    after_opd, after_mopd = weights(opd.model), weights(mopd.model)
    assert all(torch.equal(after_opd[k], after_mopd[k]) for k in after_opd)  # identical weights, bit for bit
    assert any(not torch.equal(before[k], after_opd[k]) for k in before)  # and training moved them
    assert dict(mopd.teacher_samples) == {"default": 12}


def test_routing_sends_each_row_to_its_teacher(tmp_path, models):
    from nebula_utils.inference.models import load_tokenizer
    from nebula_utils.train.mopd import load_frozen

    seen: dict[str, list[str]] = {}
    tok = load_tokenizer(models["student"])

    def loader(path, dtype):
        model = load_frozen(path, dtype)
        name = "same" if path == models["same"] else "other"

        def hook(module, args, kwargs):
            seen.setdefault(name, []).extend(tok.batch_decode(kwargs["input_ids"], skip_special_tokens=True))

        model.base_model.register_forward_pre_hook(hook, with_kwargs=True)
        return model

    # math prompts -> "same" (the student's own weights: divergence exactly 0 before the first
    # update), code prompts -> "other" (perturbed: divergence > 0)
    cfg = config(
        models, routed_prompts(tmp_path / "p.jsonl"), teacher=models["same"], teachers={"code": models["other"]}
    )
    pool = make_pool(cfg, loader)
    trainer = make_trainer(cfg, tmp_path / "mopd", steps=2, pool=pool)
    before = weights(trainer.model)
    trainer.train()

    assert dict(trainer.teacher_samples) == {"default": 4, "code": 4}  # one epoch of 4 + 4 rows
    assert len(seen["same"]) == 4 and all("What is" in t and "Write a" not in t for t in seen["same"])
    assert len(seen["other"]) == 4 and all("Write a Python function" in t for t in seen["other"])
    first = trainer.state.log_history[0]
    if first.get("mopd/default/divergence") is not None:  # step 1 drew math rows
        assert first["mopd/default/divergence"] == pytest.approx(0.0, abs=1e-6)
    if first.get("mopd/code/divergence") is not None:
        assert first["mopd/code/divergence"] > 0.01
    assert first["mopd/default/samples"] + first["mopd/code/samples"] == 4
    # on a CPU device with CPU offload both teachers simply stay loaded (nothing to move)
    assert pool.stats["loads"] == 2 and pool.stats["peak_on_device"] == 2 and pool.stats["evictions"] == 0
    after = weights(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_disk_offload_holds_one_teacher_and_changes_no_number(tmp_path, models):
    from nebula_utils.train.mopd import load_frozen

    held: list[int] = []
    pool_ref: list = []

    def loader(path, dtype):
        held.append(len(pool_ref[0].models) + 1)  # teachers loaded once this one is
        return load_frozen(path, dtype)

    cfg = config(
        models, routed_prompts(tmp_path / "p.jsonl"), teacher=models["same"], teachers={"code": models["other"]}
    )
    disk = make_pool(cfg, loader, offload="disk")
    pool_ref.append(disk)
    on_disk = make_trainer(cfg, tmp_path / "disk", steps=2, pool=disk)
    on_disk.train()
    in_ram = make_trainer(cfg, tmp_path / "ram", steps=2, pool=make_pool(cfg))
    in_ram.train()
    assert max(held) == 1 and disk.stats["peak_on_device"] == 1  # never two teachers loaded at once
    assert disk.stats["loads"] >= 2 and disk.stats["evictions"] >= 1
    assert losses(on_disk) == losses(in_ram)


def test_move_frozen_keeps_ties_and_leaves_saved_tensors_intact(tiny_model_path):
    from nebula_utils.train.mopd import load_frozen, move_frozen

    model = load_frozen(tiny_model_path)
    head = model.get_output_embeddings().weight
    saved = head.detach().clone()
    move_frozen(model, "meta")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    assert model.get_output_embeddings().weight.device.type == "meta"
    assert head.device.type == "cpu" and torch.equal(head, saved)  # what autograd saved is untouched


def test_unknown_teacher_id_and_reserved_name_are_clear_errors(tmp_path, models):
    from nebula_utils.train.mopd import TeacherPool, teacher_specs

    with pytest.raises(ValueError, match="'default' is reserved"):
        teacher_specs("x", {"default": "y"})
    pool = TeacherPool({"default": models["same"]})
    with pytest.raises(KeyError, match="unknown teacher_id 'code'"):
        pool.get("code")


@pytest.mark.gpu
def test_on_cuda_one_resident_teacher_swaps_without_changing_a_number(tmp_path, models):
    """The GPU path (not run on the CPU-only CI): with max_resident=1 the two teachers take turns on
    the device (moved with new tensors, so the lm_head autograd saved stays valid through backward)
    and every loss equals the run that keeps both resident."""
    from nebula_utils.train.mopd import TeacherPool, load_frozen, teacher_specs

    cfg = config(
        models, routed_prompts(tmp_path / "p.jsonl"), teacher=models["same"], teachers={"code": models["other"]}
    )
    cfg.device = "cuda"
    runs = {}
    for resident in (1, 2):
        pool = TeacherPool(teacher_specs(cfg.teacher, cfg.teachers), "cuda", resident, "cpu", loader=load_frozen)
        trainer = make_trainer(cfg, tmp_path / f"r{resident}", steps=3, pool=pool)
        trainer.train()
        runs[resident] = (losses(trainer), dict(pool.stats))
    # equal up to CUDA's atomic-add order in the embedding backward (bit equality is a CPU property)
    assert [pytest.approx(x, rel=1e-4) for x in runs[1][0]] == runs[2][0]
    assert runs[1][1]["peak_on_device"] == 1 and runs[1][1]["moves_to_device"] >= 3
    assert runs[2][1]["peak_on_device"] == 2 and runs[2][1]["moves_to_device"] == 2
