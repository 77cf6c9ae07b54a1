"""Multi-teacher on-policy distillation (MOPD) with local teachers: a subclass of TRL's
`DistillationTrainer` that routes each prompt to a domain teacher.

TRL 1.16 implements MOPD only in the experimental `AsyncDistillationTrainer`, whose teachers are
vLLM servers. Here the teachers are local models (CPU or one GPU), and everything but the teacher
lookup is TRL's own machinery: the student's rollouts, the batching, the chunked generalized-JSD
loss (`DistillationTrainer._compute_loss`, called once per teacher on that teacher's rows).

* **Routing.** Every training row carries a `teacher_id` (`route_prompts`: its task label, from
  14_classify_sample, mapped through the params' task -> teacher table; unlisted tasks go to
  "default"). After generation each row's teacher index joins the batch as a tensor, so TRL's
  shuffle and micro-batch split carry it along.
* **Exact decomposition.** In training the loss of a micro-batch is sum(divergence over its
  completion tokens) / N, with N the token count of the whole generation batch. Splitting the rows
  by teacher and adding the per-teacher losses gives the same sum, so routing changes which
  distribution each row is compared to and nothing else; with a single teacher the rows are not
  split at all and the step is plain OPD, bit for bit (tests/train/test_mopd.py).
* **Memory.** `TeacherPool` keeps at most `max_resident` teachers on the device (default 1: device
  memory is bounded by the largest teacher, not the sum); the others live on CPU (`offload: cpu`)
  or only on disk (`offload: disk`, reloaded when routed to again). The teachers of one micro-batch
  run one after the other, resident ones first. Autograd keeps each used teacher's lm_head matrix
  (and its hidden states) until the micro-batch's backward, so moves never happen in place: a moved
  teacher gets new tensors and the saved ones stay valid (Qwen3-8B's head is 151,669 x 4,096 =
  1.2 GB in bf16 per extra teacher per micro-batch).
* **Logging.** Per teacher: mean divergence per completion token (`mopd/<id>/divergence`), rows
  and completion tokens distilled (`mopd/<id>/samples`, cumulative), plus pool loads/moves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from trl import DistillationTrainer

DEFAULT_TEACHER = "default"
OFFLOAD = ("cpu", "disk")


def teacher_specs(default: str, routes: Mapping[str, str]) -> dict[str, str]:
    """teacher id -> model spec: "default" plus one id per routed task (the task name)."""
    if DEFAULT_TEACHER in routes:
        raise ValueError(f"'{DEFAULT_TEACHER}' is reserved for the default teacher; name a task instead")
    return {DEFAULT_TEACHER: default} | dict(routes)


def route_prompts(ds: Any, routes: Mapping[str, str], route_by: str = "task", where: str = "data") -> Any:
    """Add a `teacher_id` column: the row's `route_by` label when it has a route, else "default"."""
    if route_by not in ds.column_names:
        raise ValueError(f"{where}: rows have no '{route_by}' column to route by (columns: {ds.column_names})")
    labels = ds[route_by]
    ids = [label if label in routes else DEFAULT_TEACHER for label in labels]
    if "teacher_id" in ds.column_names:
        ds = ds.remove_columns("teacher_id")
    return ds.add_column("teacher_id", ids)


def routing_table(ds: Any, route_by: str = "task") -> Any:
    """Rows per (label, teacher id): what the routing did, for the notebook."""
    import pandas as pd

    frame = pd.DataFrame({route_by: ds[route_by], "teacher_id": ds["teacher_id"]})
    return frame.value_counts().rename("rows").reset_index().sort_values([route_by, "teacher_id"])


def move_frozen(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """Move a frozen model to `device` by giving it NEW parameter and buffer tensors.

    `module.to()` swaps `param.data` in place, which would also move the tensors autograd saved
    for the pending backward (the loss saves the teacher's lm_head weight); new tensors leave
    those intact. Tied weights stay tied (one new tensor per original parameter)."""
    new: dict[int, torch.nn.Parameter] = {}
    with torch.no_grad():
        for module in model.modules():
            for key, param in list(module._parameters.items()):
                if param is not None:
                    if id(param) not in new:
                        new[id(param)] = torch.nn.Parameter(param.detach().to(device), requires_grad=False)
                    module._parameters[key] = new[id(param)]
            for key, buf in list(module._buffers.items()):
                if buf is not None:
                    module._buffers[key] = buf.to(device)
    return model


def load_frozen(path: str, dtype: str = "auto") -> torch.nn.Module:
    """A teacher in eval mode without gradients; the global RNG is left untouched, so loading a
    teacher lazily mid-run does not change the student's sampling."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.eval().requires_grad_(False)


class TeacherPool:
    """Frozen teachers by id, loaded on first use, at most `max_resident` on the device at once.

    Ids that name the same checkpoint share one model. On a CUDA device, a teacher leaving the device
    moves to CPU (`offload="cpu"`) or is dropped and reloaded from disk when needed again
    (`offload="disk"`). On a CPU device "on the device" means loaded: `offload="cpu"` keeps every
    loaded teacher (nothing to move), `offload="disk"` keeps at most `max_resident` loaded.
    """

    def __init__(
        self,
        specs: Mapping[str, str],
        device: str = "cpu",
        max_resident: int = 1,
        offload: str = "cpu",
        dtype: str = "auto",
        loader: Callable[[str, str], torch.nn.Module] = load_frozen,
    ):
        from ..inference.models import resolve_model_path

        if offload not in OFFLOAD:
            raise ValueError(f"offload must be one of {', '.join(OFFLOAD)}, got {offload!r}")
        if max_resident < 1:
            raise ValueError(f"max_resident must be >= 1, got {max_resident}")
        self.specs = dict(specs)
        self.paths = {tid: resolve_model_path(spec) for tid, spec in self.specs.items()}
        self.device = torch.device(device)
        self.max_resident, self.offload, self.dtype, self.loader = max_resident, offload, dtype, loader
        self.models: dict[str, torch.nn.Module] = {}  # path -> loaded model (on the device or on CPU)
        self.on_device: list[str] = []  # paths, least recently used first
        self.stats = Counter({"loads": 0, "moves_to_device": 0, "evictions": 0, "peak_on_device": 0})

    @property
    def ids(self) -> list[str]:
        return list(self.specs)

    def is_on_device(self, teacher_id: str) -> bool:
        return self.paths[teacher_id] in self.on_device

    def get(self, teacher_id: str) -> torch.nn.Module:
        """The teacher's model on the device, evicting the least recently used beyond `max_resident`."""
        if teacher_id not in self.paths:
            raise KeyError(f"unknown teacher_id '{teacher_id}' (teachers: {', '.join(self.paths)})")
        path = self.paths[teacher_id]
        if path in self.on_device:
            self.on_device.remove(path)
            self.on_device.append(path)
            return self.models[path]
        while len(self.on_device) >= self.max_resident and not self._ram_is_device:
            self._evict(self.on_device[0])
        model = self.models.get(path)
        if model is None:
            model = self.models[path] = self.loader(path, self.dtype)
            self.stats["loads"] += 1
        if next(model.parameters()).device != self.device:
            move_frozen(model, self.device)
            self.stats["moves_to_device"] += 1
        self.on_device.append(path)
        self.stats["peak_on_device"] = max(self.stats["peak_on_device"], len(self.on_device))
        return model

    @property
    def _ram_is_device(self) -> bool:
        """On a CPU device with CPU offload, leaving the device would move nothing: keep all loaded."""
        return self.device.type == "cpu" and self.offload == "cpu"

    def _evict(self, path: str) -> None:
        self.on_device.remove(path)
        self.stats["evictions"] += 1
        if self.offload == "disk":
            del self.models[path]
        elif self.device.type != "cpu":
            move_frozen(self.models[path], "cpu")


def _rows(inputs: Mapping[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """The rows `keep` (bool mask over the batch) of every per-row entry; scalars unchanged."""
    n = keep.numel()
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n:
            out[key] = value[keep]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [v for v, k in zip(value, keep.tolist()) if k]
        else:
            out[key] = value
    return out


class MOPDTrainer(DistillationTrainer):
    """`DistillationTrainer` with the teacher chosen per row from a `TeacherPool` by the row's
    `teacher_id` column (see the module docstring). Single process only (CPU or one GPU)."""

    _tag_names = ["trl", "distillation", "mopd"]

    def __init__(self, *args: Any, teachers: TeacherPool, **kwargs: Any):
        kwargs.pop("teacher_model", None)
        super().__init__(*args, teacher_model=None, **kwargs)
        if self.accelerator.num_processes > 1:
            raise ValueError(
                "MOPDTrainer runs local teachers in one process; for several GPUs use vLLM teacher servers"
            )
        self.teachers = teachers
        teachers.device = self.accelerator.device  # the student's device: the loss needs both heads on one
        self.teacher_samples: Counter[str] = Counter()
        self.teacher_tokens: Counter[str] = Counter()

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        ids = self.teachers.ids
        unknown = sorted({str(x.get("teacher_id")) for x in inputs} - set(ids))
        if unknown:
            raise ValueError(f"rows routed to unknown teacher '{unknown[0]}' (teachers: {', '.join(ids)})")
        index = [ids.index(x["teacher_id"]) for x in inputs]
        output["teacher_index"] = torch.tensor(index, device=output["prompt_ids"].device)
        return output

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        ids = self.teachers.ids
        index = inputs["teacher_index"]
        present = [ids[i] for i in index.unique().tolist()]
        present.sort(key=lambda tid: not self.teachers.is_on_device(tid))  # no swap for the resident one
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        if num_items_in_batch is None:  # evaluation: one mean over the whole micro-batch, not per teacher
            num_items_in_batch = mask.sum().clamp(min=1)
        loss = entropy = n_valid = None
        for tid in present:
            keep = index == ids.index(tid)
            part = inputs if bool(keep.all()) else _rows(inputs, keep)
            self.teacher_model = self.teachers.get(tid)
            loss_t, entropy_t, n_t = super()._compute_loss(unwrapped_student, part, num_items_in_batch)
            self._log_teacher(tid, loss_t, n_t, int(keep.sum()), num_items_in_batch)
            loss = loss_t if loss is None else loss + loss_t
            entropy = entropy_t if entropy is None else entropy + entropy_t
            n_valid = n_t if n_valid is None else n_valid + n_t
        self.teacher_model = None  # the pool owns the teachers; keep no extra reference
        return loss, entropy, n_valid

    def _log_teacher(self, tid: str, loss: torch.Tensor, n_tokens: torch.Tensor, rows: int, denominator) -> None:
        mode = "train" if self.model.training else "eval"
        tokens = int(n_tokens)
        if tokens:  # the loss is sum/denominator: rescale to the mean divergence per token of this teacher
            self._metrics[mode][f"mopd/{tid}/divergence"].append(float(loss.detach()) * float(denominator) / tokens)
        if mode == "train":
            self.teacher_samples[tid] += rows
            self.teacher_tokens[tid] += tokens

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training:
            for tid in self.teachers.ids:
                logs[f"mopd/{tid}/samples"] = float(self.teacher_samples[tid])
            logs |= {f"mopd/pool/{k}": float(v) for k, v in self.teachers.stats.items()}
        super().log(logs, start_time)


def train_mopd(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """MOPD with local teachers (`cfg`: nebula_utils.stages.mopd.MOPDStageConfig): save the student
    to <run_dir>/model, the log to train_log.json; return metrics incl. per-teacher samples."""
    from ..inference.models import pick_device
    from .batch import world_size
    from .distill import (
        check_shared_tokenizer,
        load_causal_lm,
        load_prompts,
        run_and_save,
        sample_budget,
        student_tokenizer,
    )
    from .progress import ProgressCallback

    specs = teacher_specs(cfg.teacher, cfg.teachers)
    prompts = route_prompts(load_prompts(cfg.data, cfg.max_prompts, cfg.seed), cfg.teachers, cfg.route_by, cfg.data)
    used = {tid: specs[tid] for tid in dict.fromkeys(prompts["teacher_id"])}
    check_shared_tokenizer(cfg.model, used)
    budget = sample_budget(
        cfg.num_samples or len(prompts), cfg.per_device_train_batch_size, cfg.accumulation(), world_size()
    )
    tokenizer = student_tokenizer(cfg.model)
    pool = TeacherPool(used, pick_device(cfg.device), cfg.max_resident_teachers, cfg.teacher_offload)
    trainer = MOPDTrainer(
        model=load_causal_lm(cfg.model, **cfg.model_kwargs()),
        args=cfg.to_trl(Path(run_dir) / "checkpoints", budget.max_steps),
        train_dataset=prompts,
        processing_class=tokenizer,
        callbacks=[ProgressCallback("mopd")],
        teachers=pool,
    )
    metrics = run_and_save(trainer, tokenizer, run_dir, budget, len(prompts), cfg, "51_mopd")
    return metrics | teacher_metrics(trainer)


def teacher_metrics(trainer: MOPDTrainer) -> dict[str, Any]:
    """Per-teacher rows and tokens distilled, mean divergence over the run, and the pool's counters."""
    out: dict[str, Any] = {}
    history = trainer.state.log_history
    for tid in trainer.teachers.ids:
        rows = trainer.teacher_samples[tid]
        out[f"mopd/{tid}/samples"] = {"value": rows, "n": rows}
        out[f"mopd/{tid}/tokens"] = {"value": trainer.teacher_tokens[tid], "n": rows}
        div = [h[f"mopd/{tid}/divergence"] for h in history if h.get(f"mopd/{tid}/divergence") is not None]
        if div:
            out[f"mopd/{tid}/divergence_mean"] = {"value": sum(div) / len(div), "n": len(div)}
    out |= {f"mopd/pool/{k}": {"value": int(v), "n": None} for k, v in trainer.teachers.stats.items()}
    return out
