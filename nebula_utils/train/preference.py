"""Preference training with TRL: DPO (`DPOTrainer`) on pairs and KTO (`KTOTrainer`) on unpaired labels.

The stage configs (nebula_utils.stages.dpo / .kto) compose `trl.DPOConfig` / `trl.KTOConfig`; this
module loads the pairs from a `preference` data version, runs the trainer and returns metrics for
the stage's epilogue, as train.sft.train_sft does for SFT.

Reference model. Full fine-tuning with `ref_model=""`: TRL loads a frozen copy of the starting
checkpoint. With LoRA and `ref_model=""`: no copy at all; TRL computes the reference
log-probabilities with the adapters disabled, i.e. on the base weights (DPOTrainer/KTOTrainer
`use_adapter(..., adapter_name=None)`). A non-empty `ref_model` is loaded and passed explicitly.

Length-normalised DPO (Tülu 3): TRL 1.16's `loss_type="sigmoid_norm"` computes
-log sigmoid(beta * (logratio_chosen / |y_chosen| - logratio_rejected / |y_rejected|)) with the
log-ratios against the reference and |y| the completion token counts (dpo_trainer.py, the
`sigmoid_norm` branch of `_compute_loss`), which is Tülu 3's length-normalised DPO objective, so
no subclass is needed. Tülu 3 used beta = 5 with it: the per-token log-ratio is about |y| times
smaller than the summed one. TRL still logs `rewards/*` as beta * summed log-ratio.

Training curves: every logged step (loss, learning_rate, grad_norm, rewards/chosen|rejected|
accuracies|margins, logps/*) goes to <run_dir>/train_log.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..io import atomic_write_json

CURVE_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "learning_rate",
    "grad_norm",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "kl",
)


def load_preference_rows(path: str | Path, max_samples: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of a `preference` data version (pairs or KTO groups), a seeded sample of at most `max_samples`."""
    from ..data.versions import load_version, read_manifests

    p = Path(path)
    if not (p / "version.json").is_file():
        raise FileNotFoundError(f"{path}: no preference data (expected a data version folder with version.json)")
    schema = read_manifests(p)["version"]["schema"]
    if schema != "preference":
        raise ValueError(f"{path}: preference training reads a preference data version, got schema {schema!r}")
    ds = load_version(p)
    if max_samples and len(ds) > max_samples:
        ds = ds.shuffle(seed=seed).select(range(max_samples))
    return list(ds)


def dpo_dataset(path: str | Path, max_samples: int = 0, seed: int = 0):
    """TRL's conversational {prompt, chosen, rejected} dataset from the pairs of a preference version."""
    from datasets import Dataset

    from ..data.preference import dpo_rows

    rows = dpo_rows(load_preference_rows(path, max_samples, seed))
    if not rows:
        raise ValueError(f"{path}: no chosen/rejected pairs to train DPO on")
    return Dataset.from_list(rows)


def kto_dataset(path: str | Path, max_samples: int = 0, seed: int = 0):
    """TRL's unpaired {prompt, completion, label} dataset, shuffled with `seed`.

    KTOTrainer samples sequentially (its KL estimate pairs each completion with the previous
    prompt of the same batch), so the order is fixed here: pairs would otherwise sit as
    desirable/undesirable neighbours of one prompt."""
    from datasets import Dataset

    from ..data.preference import kto_rows

    rows = kto_rows(load_preference_rows(path, max_samples, seed))
    labels = {r["label"] for r in rows}
    if labels != {True, False}:
        raise ValueError(f"{path}: KTO needs desirable and undesirable examples, got labels {sorted(labels)}")
    return Dataset.from_list(rows).shuffle(seed=seed)


def _load_models(cfg: Any) -> tuple[Any, Any, Any]:
    """(policy, reference or None, tokenizer); precision as in SFT: the checkpoint's dtype (fp32 on CPU)."""
    from transformers import AutoModelForCausalLM

    from ..inference.models import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model), dtype="auto", **cfg.model_kwargs())
    ref = None
    if cfg.ref_model:
        ref = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(cfg.ref_model), dtype="auto", **cfg.model_kwargs()
        )
    return model, ref, tokenizer


def _finish(trainer: Any, result: Any, cfg: Any, run_dir: Path, n: int, unit: str, stage: str) -> dict[str, Any]:
    """Save the (merged) model with its model card and the log history; metrics for the epilogue."""
    from .model_card import card_for
    from .saving import save_trained

    history = trainer.state.log_history
    atomic_write_json(run_dir / "train_log.json", history)
    metrics = history_metrics(history, result.metrics, n, unit)
    merged = trainer.model.merge_and_unload() if cfg.use_lora else None
    card = card_for(cfg, run_dir, stage, metrics, stage.split("_", 1)[-1])
    save_trained(trainer, trainer.processing_class, run_dir / "model", merged, card=card)
    return metrics


def history_metrics(history: list[dict], result: dict[str, Any], n: int, unit: str) -> dict[str, Any]:
    """First/last/mean loss, the last logged reward accuracy and margin (TRL averages them over the
    logging window's batches), runtime, and the number of training examples."""

    def series(key: str) -> list[float]:
        return [h[key] for h in history if key in h and "train_runtime" not in h]

    losses = series("loss")
    metrics = {
        "train/loss_first": losses[0] if losses else None,
        "train/loss_last": losses[-1] if losses else None,
        "train/loss_mean": result.get("train_loss"),
        f"train/{unit}": n,
        "timing/train_runtime_s": result.get("train_runtime"),
    }
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "kl"):
        values = series(key)
        if values:
            metrics[f"train/{key.replace('/', '_')}_first"] = values[0]
            metrics[f"train/{key.replace('/', '_')}_last"] = values[-1]
    return {k: {"value": v, "n": n} for k, v in metrics.items() if v is not None}


def build_dpo_trainer(cfg: Any, run_dir: str | Path) -> Any:
    """TRL's DPOTrainer for `cfg` (nebula_utils.stages.dpo.DPOStageConfig), not yet trained."""
    from trl import DPOTrainer

    from .progress import ProgressCallback

    dataset = dpo_dataset(cfg.data, cfg.max_samples, cfg.seed)
    model, ref, tokenizer = _load_models(cfg)
    return DPOTrainer(
        model=model,
        ref_model=ref,
        args=cfg.to_trl(Path(run_dir) / "checkpoints"),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.lora_config(),
        callbacks=[ProgressCallback("dpo")],
    )


def _train(trainer: Any) -> tuple[Any, float]:
    """trainer.train() and the process CPU seconds it took (all threads; the machines are shared,
    so CPU time is the comparable number beside wall time)."""
    cpu = time.process_time()
    result = trainer.train()
    return result, time.process_time() - cpu


def train_dpo(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """DPO; saves <run_dir>/model (LoRA merged) and <run_dir>/train_log.json; returns the metrics."""
    trainer = build_dpo_trainer(cfg, run_dir)
    result, cpu = _train(trainer)
    metrics = _finish(trainer, result, cfg, Path(run_dir), len(trainer.train_dataset), "pairs", "31_dpo")
    return metrics | {"timing/train_cpu_s": {"value": cpu, "n": len(trainer.train_dataset)}}


def build_kto_trainer(cfg: Any, run_dir: str | Path) -> Any:
    """TRL's KTOTrainer for `cfg` (nebula_utils.stages.kto.KTOStageConfig) on unpaired examples."""
    from trl import KTOTrainer

    from .progress import ProgressCallback

    dataset = kto_dataset(cfg.data, cfg.max_samples, cfg.seed)
    model, ref, tokenizer = _load_models(cfg)
    return KTOTrainer(
        model=model,
        ref_model=ref,
        args=cfg.to_trl(Path(run_dir) / "checkpoints"),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=cfg.lora_config(),
        callbacks=[ProgressCallback("kto")],
    )


def train_kto(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """KTO; saves <run_dir>/model and <run_dir>/train_log.json; returns the metrics (with the desirable share)."""
    trainer = build_kto_trainer(cfg, run_dir)
    labels = trainer.train_dataset["label"]
    result, cpu = _train(trainer)
    metrics = _finish(trainer, result, cfg, Path(run_dir), len(labels), "examples", "32_kto")
    metrics["train/desirable_share"] = {"value": sum(labels) / len(labels), "n": len(labels)}
    metrics["timing/train_cpu_s"] = {"value": cpu, "n": len(labels)}
    return metrics


def curve_table(run_dir: str | Path):
    """The logged training curves of a finished run (one row per logging step) as a DataFrame."""
    import pandas as pd

    from ..io import read_json

    rows = [h for h in read_json(Path(run_dir) / "train_log.json") if "loss" in h and "train_runtime" not in h]
    frame = pd.DataFrame(rows)
    return frame[[c for c in CURVE_COLUMNS if c in frame.columns]]


def plot_curves(run_dir: str | Path, title: str = ""):
    """Loss, learning rate, grad norm and (DPO/KTO) rewards, margins and reward accuracy vs step."""
    import matplotlib.pyplot as plt

    frame = curve_table(run_dir)
    panels = [
        ("loss", ["loss"]),
        ("learning rate", ["learning_rate"]),
        ("grad norm", ["grad_norm"]),
        ("rewards", ["rewards/chosen", "rewards/rejected", "rewards/margins"]),
        ("reward accuracy", ["rewards/accuracies"]),
    ]
    panels = [(name, [c for c in cols if c in frame.columns]) for name, cols in panels]
    panels = [(name, cols) for name, cols in panels if cols]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3), squeeze=False)
    for ax, (name, cols) in zip(axes[0], panels):
        for col in cols:
            ax.plot(frame["step"], frame[col], marker=".", label=col.split("/")[-1])
        ax.set(title=name, xlabel="step")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(cols) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
