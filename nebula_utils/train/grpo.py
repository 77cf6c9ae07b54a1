"""GRPO with verifiable rewards (RLVR) through TRL 1.16's GRPOTrainer.

The policy samples `num_generations` completions per prompt; the real verifiers score them
(nebula_utils.verifiers.rewards: math, IFEval, code in the sandbox, format), and TRL turns each
group's rewards into advantages. This module adds what the stage needs around TRL's trainer:

- Prompt pools: an `rl` data version filtered by difficulty band (13_difficulty's labels), a
  seeded held-out split, and the prompt as chat so the trainer applies the chat template.
- Zero-variance groups: a group whose completions all got the same reward (all right or all
  wrong) has advantage 0 for every completion, so it teaches nothing. TRL 1.16 logs
  `frac_reward_zero_std`, but only as a fraction and, under `scale_rewards="batch"` or
  `multi_objective_aggregation="normalize_then_sum"`, against the batch std rather than the group's.
  `VerifiableGRPOTrainer` counts them per step from the rewards themselves, split into all-pass
  and all-fail groups, and, with `filter_zero_variance`, masks their completions out of the loss.
  TRL 1.16 has no option for that (no dynamic sampling in GRPOConfig); the subclass hook is
  `_generate_and_score_completions`. Their policy-gradient term is already 0; masking removes
  their tokens from the loss normaliser (dapo/bnpo count active tokens, so uninformative groups
  dilute the informative ones) and from the KL term. DAPO additionally re-samples to refill the
  batch; that is not done here, so a filtered step trains on fewer completions (logged).
- Throughput: prompt+completion tokens/s and generated tokens/s per logging step, written into
  the same log entries as TRL's metrics (train_log.json).
- Held-out check: pass rate of the initial and the final policy on held-out prompts of the same
  pool, paired by prompt, and the reward-hacking guards applied to the final policy's completions
  (see `hacking_flags`).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_jsonl

UNLABELLED = "unlabelled"  # rows 13_difficulty has not graded (data.mixing uses the same word)
RL_COLUMNS = ("id", "task", "verifier", "reference", "difficulty")


# --------------------------------------------------------------------------- prompt pools


def load_rl_prompts(
    path: str | Path,
    difficulties: Sequence[str] = (),
    max_prompts: int = 0,
    seed: int = 0,
    tasks: Sequence[str] = (),
):
    """An `rl` data version (or .jsonl of rl rows) as GRPO prompts: `prompt` is the chat (so TRL
    applies the chat template), plus id, task, verifier, reference and difficulty.

    difficulties: keep rows whose `difficulty` label is one of these ([] = every row, unlabelled
    included); tasks: keep rows of these tasks ([] = all). Returns (dataset, {band: rows of the
    kept tasks before the difficulty filter}).
    """
    import datasets

    p = Path(path)
    if (p / "version.json").is_file():
        from ..data.versions import load_version

        ds = load_version(p)
    elif p.is_file() and p.suffix == ".jsonl":
        ds = datasets.load_dataset("json", data_files=str(p), split="train")
    else:
        raise FileNotFoundError(f"{path}: no RL data (expected an rl data version folder or a .jsonl file)")
    missing = [c for c in ("messages", "verifier", "reference") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path}: RL data needs columns messages, verifier, reference; missing {missing}")
    if "difficulty" not in ds.column_names:
        ds = ds.add_column("difficulty", [None] * len(ds))
    if tasks:
        found = Counter(ds["task"]) if "task" in ds.column_names else Counter()
        absent = [t for t in tasks if t not in found]
        if absent:  # a typo must not silently train on the other tasks only
            raise ValueError(f"{path}: no prompt of task {absent[0]!r} (tasks here: {dict(found)})")
        ds = ds.filter(lambda t: t in set(tasks), input_columns="task")
    bands = Counter(d or UNLABELLED for d in ds["difficulty"])
    if difficulties:
        if set(bands) == {UNLABELLED}:
            raise ValueError(
                f"{path}: no prompt has a difficulty label; grade it with 13_difficulty first or set difficulties: []"
            )
        wanted = set(difficulties)
        ds = ds.filter(lambda d: (d or UNLABELLED) in wanted, input_columns="difficulty")
        if not len(ds):
            raise ValueError(f"{path}: no prompt with difficulty in {sorted(wanted)} (bands: {dict(bands)})")
    if max_prompts and len(ds) > max_prompts:
        ds = ds.shuffle(seed=seed).select(range(max_prompts))
    ds = ds.map(lambda m: {"prompt": m}, input_columns="messages", remove_columns=["messages"])
    keep = ["prompt"] + [c for c in RL_COLUMNS if c in ds.column_names]
    return ds.select_columns(keep), dict(bands)


def split_heldout(ds, n: int, seed: int = 0):
    """(train, heldout): `n` seeded prompts held out of training for the before/after check."""
    if n <= 0:
        return ds, ds.select([])
    if n >= len(ds):
        raise ValueError(f"heldout_prompts={n} leaves no training prompt ({len(ds)} in the pool)")
    parts = ds.train_test_split(test_size=n, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def check_verifiers(ds, weights: Mapping[str, float]) -> None:
    """Every row's verifier must have a reward weight (else TRL fails mid-step with less context)."""
    found = Counter(ds["verifier"])
    missing = sorted(set(found) - set(weights))
    if missing:
        raise ValueError(
            f"key 'reward_weights': the data has rows for verifier(s) {missing} ({', '.join(str(found[m]) for m in missing)} "
            f"rows) but no weight for them; add them or choose data without them"
        )


# --------------------------------------------------------------------------- zero-variance groups


def _zero_groups(rewards, num_generations: int, atol: float = 1e-6):
    """(groups,) bool: every scorable reward of the group equal (TRL's nanstd == 0)."""
    import torch

    r = torch.as_tensor(rewards, dtype=torch.float64).view(-1, num_generations)
    valid = ~torch.isnan(r)
    hi = torch.where(valid, r, torch.full_like(r, -math.inf)).max(dim=1).values
    lo = torch.where(valid, r, torch.full_like(r, math.inf)).min(dim=1).values
    return (valid.sum(dim=1) <= 1) | ((hi - lo) <= atol)


def group_stats(rewards, passed, num_generations: int) -> dict[str, int]:
    """Count the groups of `num_generations` consecutive completions (TRL's layout: a prompt's
    completions are adjacent) whose rewards are all equal: zero variance, so zero advantage.

    rewards: (N,) total rewards (NaN = unscorable, ignored as TRL's nanstd does); passed: (N,) bool.
    Returns {groups, zero_variance, all_pass, all_fail}: all_pass / all_fail are the zero-variance
    groups in which every / no completion passed (equal partial credit, e.g. one of two IFEval
    instructions followed by every completion, counts as all_fail: nothing passed).
    """
    import torch

    zero = _zero_groups(rewards, num_generations)
    ok = torch.as_tensor(passed, dtype=torch.bool).view(-1, num_generations)
    return {
        "groups": int(zero.numel()),
        "zero_variance": int(zero.sum()),
        "all_pass": int((zero & ok.all(dim=1)).sum()),
        "all_fail": int((zero & ~ok.any(dim=1)).sum()),
    }


def zero_variance_rows(rewards, num_generations: int):
    """(N,) bool: the completion belongs to a zero-variance group."""
    return _zero_groups(rewards, num_generations).repeat_interleave(num_generations)


@functools.cache
def trainer_class() -> type:
    """VerifiableGRPOTrainer, defined on first use so that importing this module does not import TRL."""
    from trl import GRPOTrainer

    class VerifiableGRPOTrainer(GRPOTrainer):
        """GRPOTrainer + per-step zero-variance counts (optionally filtered), pass rate and tokens/s.

        `verifier_columns`: indices of the reward functions that are verifiers (a row's pass is
        its verifier's reward >= 1, as VerificationResult.passed for every verifier here); the
        other functions (the optional format reward) add to the total but not to the pass.
        """

        def __init__(self, *args, verifier_columns: Sequence[int], filter_zero_variance: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.verifier_columns = list(verifier_columns)
            self.filter_zero_variance = filter_zero_variance
            self._last_rewards_per_func = None
            self._generated_tokens = 0
            self._last_log = (time.perf_counter(), 0, 0)  # (time, input tokens seen, generated tokens)

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._last_rewards_per_func = rewards  # gathered over processes: every completion of every group
            self._generated_tokens += sum(len(ids) for ids in completion_ids_list)
            return rewards

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            import torch

            mode = "train" if self.model.training else "eval"
            per_func = self._last_rewards_per_func
            num_generations = self.num_generations if mode == "train" else self.num_generations_eval
            weights = self.reward_weights.to(per_func.device)
            total = (per_func * weights.unsqueeze(0)).nansum(dim=1)
            total[torch.isnan(per_func).all(dim=1)] = torch.nan  # unscorable rows, as TRL marks them
            verifier_scores = per_func[:, self.verifier_columns]
            passed = torch.nan_to_num(verifier_scores, nan=-1.0).max(dim=1).values >= 1.0 - 1e-6
            stats = group_stats(total, passed, num_generations)
            metrics = self._metrics[mode]
            metrics["pass_rate"].append(passed.float().mean().item())
            metrics["zero_variance/frac_groups"].append(stats["zero_variance"] / stats["groups"])
            metrics["zero_variance/all_pass_frac"].append(stats["all_pass"] / stats["groups"])
            metrics["zero_variance/all_fail_frac"].append(stats["all_fail"] / stats["groups"])
            metrics["zero_variance/groups"].append(float(stats["zero_variance"]))
            if self.filter_zero_variance and mode == "train":
                self._mask_zero_variance(out, total, num_generations, metrics)
            return out

        def _mask_zero_variance(self, out, total, num_generations, metrics) -> None:
            """Zero the loss mask of completions in zero-variance groups (see the module docstring)."""
            n_local = out["completion_ids"].shape[0]
            start = self.accelerator.process_index * n_local
            drop = zero_variance_rows(total, num_generations)[start : start + n_local].to(
                out["completion_mask"].device
            )
            out["completion_mask"] = out["completion_mask"] * (~drop).unsqueeze(1).to(out["completion_mask"].dtype)
            loss_mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
            out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
            metrics["zero_variance/filtered_completions"].append(float(self.accelerator.gather(drop.sum()).sum()))

        def train(self, *args, **kwargs):
            # the throughput clock starts with training, not when the trainer was built
            self._last_log = (time.perf_counter(), 0, self._generated_tokens)
            return super().train(*args, **kwargs)

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            # Here rather than in a TrainerCallback: Trainer.log appends the entry to log_history
            # before callbacks' on_log run, so a callback could not add to the saved history.
            if self.model.training and "loss" in logs:
                now, seen, gen = time.perf_counter(), self.state.num_input_tokens_seen, self._generated_tokens
                then, seen0, gen0 = self._last_log
                if now > then:
                    logs["tokens_per_s"] = (seen - seen0) / (now - then)
                    logs["generated_tokens_per_s"] = (gen - gen0) / (now - then)
                self._last_log = (now, seen, gen)
            super().log(logs, start_time)

    return VerifiableGRPOTrainer


# --------------------------------------------------------------------------- training


def grpo_progress():
    """ProgressCallback whose line shows what moves in RL (the GRPO loss sits near 0 by design):
    `grpo step 3/20 · reward 0.312 · pass 0.25 · zero-var 0.50 · 41 tok/s · ETA 4m10s`."""
    from ..runs import format_eta, report_progress
    from .progress import ProgressCallback

    class GRPOProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs or not state.max_steps:
                return
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(1, state.global_step) * (state.max_steps - state.global_step)
            report_progress(
                f"grpo step {state.global_step}/{state.max_steps} · reward {logs['reward']:.3f}"
                f" · pass {logs.get('pass_rate', 0):.2f} · zero-var {logs.get('zero_variance/frac_groups', 0):.2f}"
                f" · {logs.get('tokens_per_s', 0):.0f} tok/s · {format_eta(eta)}"
            )

    return GRPOProgress("grpo")


def build_trainer(cfg: Any, run_dir: str | Path, train_ds, model=None):
    """The VerifiableGRPOTrainer for a stage config (nebula_utils.stages.grpo.GRPOStageConfig)."""
    from transformers import AutoModelForCausalLM

    from ..inference.models import load_tokenizer, resolve_model_path
    from ..verifiers.rewards import VerifierReward, make_reward_funcs

    if len(train_ds) < cfg.step_prompts():  # TRL's RepeatSampler drops incomplete batches of prompts
        raise ValueError(
            f"the training pool has {len(train_ds)} prompts, fewer than prompts_per_step={cfg.step_prompts()}: "
            "no full step can be formed; lower prompts_per_step or heldout_prompts, or widen difficulties"
        )
    funcs, weights = make_reward_funcs(cfg.reward_weights, cfg.format_weight, workers=cfg.verifier_workers)
    tokenizer = load_tokenizer(cfg.model)
    if model is None:
        dtype = "auto" if cfg.use_cuda() else "float32"  # fp32 on CPU, as the trainer config (stages/grpo.py)
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.model), dtype=dtype, **cfg.model_kwargs())
    return trainer_class()(
        model=model,
        reward_funcs=funcs,
        args=cfg.to_trl(Path(run_dir) / "checkpoints", weights),
        train_dataset=train_ds,
        processing_class=tokenizer,
        callbacks=[grpo_progress()],
        verifier_columns=[i for i, f in enumerate(funcs) if isinstance(f, VerifierReward)],
        filter_zero_variance=cfg.filter_zero_variance,
    )


def train_grpo(trainer, cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Train a built trainer; save the policy to <run_dir>/model and the per-step log to
    <run_dir>/train_log.json. Returns the metrics for the epilogue."""
    from .saving import save_trained

    run_dir = Path(run_dir)
    start_cpu = time.process_time()
    result = trainer.train()
    cpu_s = time.process_time() - start_cpu
    history = trainer.state.log_history
    atomic_write_json(run_dir / "train_log.json", history)
    steps = [h for h in history if "loss" in h]
    n_steps = max(1, len(steps))
    # prompts_per_step is per process: under `accelerate launch` every process samples its own prompts
    completions = (
        trainer.state.global_step
        * cfg.step_prompts(trainer.accelerator.num_processes)
        * cfg.num_generations
        * trainer.accelerator.num_processes
    )
    runtime = result.metrics.get("train_runtime", 0.0)
    metrics: dict[str, Any] = {
        "train/steps": {"value": trainer.state.global_step, "n": trainer.state.global_step},
        "train/prompts": {"value": len(trainer.train_dataset), "n": len(trainer.train_dataset)},
        "train/completions": {"value": completions, "n": completions},
        "timing/train_runtime_s": {"value": runtime, "n": n_steps},
        # process CPU time next to wall time: the 2-core machine is shared, so wall time alone misleads
        "timing/train_cpu_s": {"value": cpu_s, "n": n_steps},
        "timing/s_per_step": {"value": runtime / n_steps, "n": n_steps},
    }
    for key, name in (
        ("reward", "reward"),
        ("pass_rate", "pass_rate"),
        ("zero_variance/frac_groups", "zero_variance_frac"),
        ("kl", "kl"),
        ("completions/mean_length", "completion_length"),
    ):
        values = [h[key] for h in steps if h.get(key) is not None]
        if values:
            metrics[f"train/{name}_first"] = {"value": values[0], "n": 1}
            metrics[f"train/{name}_last"] = {"value": values[-1], "n": 1}
            metrics[f"train/{name}_mean"] = {"value": sum(values) / len(values), "n": len(values)}
    for key in ("tokens_per_s", "generated_tokens_per_s"):
        values = [h[key] for h in steps if h.get(key) is not None]
        if values:
            metrics[f"timing/{key}"] = {"value": sum(values) / len(values), "n": len(values)}
    from .model_card import card_for

    card = card_for(cfg, run_dir, "40_grpo", metrics, "grpo")
    save_trained(trainer, trainer.processing_class, run_dir / "model", card=card)  # gathers ZeRO-3/FSDP shards
    return metrics


def step_table(run_dir: str | Path):
    """The per-step log of a finished run as a DataFrame, one row per optimizer step."""
    import json

    import pandas as pd

    rows = [r for r in json.loads(Path(run_dir, "train_log.json").read_text()) if "loss" in r]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- held-out check and hacking audit

# Audit reasons that name an ordinary failure rather than an exploit: a policy that answers
# wrongly or forgets the JSON is not hacking. Every other reason an audit attack must receive
# (answer spraying, hedging, echoing the prompt, degenerate repetition, keyword stuffing, early
# exit, empty or over-long answers) marks a completion as a suspected exploit.
ORDINARY_FAILURES = ("wrong answer", "no final answer", "failed:")


def hacking_signatures() -> list[str]:
    """The verifier-reason substrings the audit's attacks must receive, minus ordinary failures,
    read from nebula_utils/assets/reward_hacking_audit.jsonl so they follow the audit set."""
    from ..verifiers.audit import load_audit_cases

    reasons = {c["expected_reason"] for c in load_audit_cases() if not c["expected_passed"]}
    return sorted(r for r in reasons if not any(o in r for o in ORDINARY_FAILURES))


def hacking_flags(reasons: Sequence[str | None], signatures: Sequence[str]) -> list[str | None]:
    """For each verifier reason, the exploit signature it matches (None: not flagged)."""
    return [next((s for s in signatures if r and s in r), None) for r in reasons]


def sample_and_score(model, tokenizer, ds, cfg: Any, label: str) -> list[dict[str, Any]]:
    """`cfg.heldout_samples` completions per held-out prompt from `model` (the GRPO sampling
    temperature, seeded), scored by the same reward functions as training; one row per completion
    with score, passed, the verifier's reason and the hacking signature it matches."""
    from ..inference.generation import SamplingParams, TransformersGenerator
    from ..verifiers.rewards import VerifierReward

    if not len(ds):
        return []
    # As many sequences per generate call as one training step samples (prompts x samples each).
    per_call = max(1, cfg.step_prompts() * cfg.num_generations // cfg.heldout_samples)
    generator = TransformersGenerator(model, tokenizer, batch_size=per_call)
    generator.progress_label = "grpo: held-out"
    params = SamplingParams(
        n=cfg.heldout_samples,
        max_new_tokens=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
    )
    was_training = model.training
    model.eval()
    items = ds.to_list()
    groups = generator.generate_full([it["prompt"] for it in items], params)
    model.train(was_training)
    signatures = hacking_signatures()
    rows = []
    for name in sorted({it["verifier"] for it in items}):
        flat = [(it, j, c) for it, group in zip(items, groups) if it["verifier"] == name for j, c in enumerate(group)]
        logged: dict[str, list] = {}
        scores = VerifierReward(name, {name}, workers=cfg.verifier_workers)(
            prompts=[it["prompt"] for it, _, _ in flat],
            completions=[c.text for _, _, c in flat],
            verifier=[name] * len(flat),
            reference=[it["reference"] for it, _, _ in flat],
            log_extra=logged.__setitem__,
        )
        reasons = logged.get(f"{name}_reason", [None] * len(flat))
        for (it, j, c), score, reason, flag in zip(flat, scores, reasons, hacking_flags(reasons, signatures)):
            rows.append(
                {
                    "policy": label,
                    "id": it.get("id") or it["prompt"][-1]["content"][:80],
                    "sample": j,
                    "verifier": name,
                    "difficulty": it.get("difficulty"),
                    "score": score,
                    "passed": score >= 1.0 - 1e-6,
                    "reason": reason,
                    "hacking": flag,
                    "finish_reason": c.finish_reason,
                    "tokens": c.num_tokens,
                    "completion": c.text,
                }
            )
    return rows


def heldout_summary(rows: Sequence[Mapping[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Pass rate and hacking-flag rate before and after, per prompt (the mean over its samples)
    and paired by prompt for the deltas; 95% bootstrap intervals over prompts."""
    import numpy as np

    from ..stats import bootstrap_mean, paired_bootstrap

    def per_prompt(policy: str, key: str) -> dict[str, float]:
        acc: dict[str, list[float]] = {}
        for r in rows:
            if r["policy"] == policy:
                acc.setdefault(r["id"], []).append(float(bool(r[key])))
        return {k: float(np.mean(v)) for k, v in acc.items()}

    out: dict[str, Any] = {}
    for key, name in (("passed", "pass_rate"), ("hacking", "hacking_rate")):
        before, after = per_prompt("initial", key), per_prompt("final", key)
        for label, values in (("initial", before), ("final", after)):
            if values:
                out[f"heldout/{name}_{label}"] = bootstrap_mean(list(values.values()), resamples, seed).as_metric()
        common = sorted(set(before) & set(after))
        if common:
            delta = paired_bootstrap([before[k] for k in common], [after[k] for k in common], resamples, seed)
            out[f"heldout/{name}_delta"] = delta.as_metric()
    return out


def audit_verifiers(verifier_options: Mapping[str, Mapping] | None = None) -> dict[str, Any]:
    """The fixed audit set through the verifiers this run rewarded with: every known exploit must
    still get no credit and every control full credit (verifiers.audit.run_audit)."""
    from ..verifiers.audit import run_audit

    rows = run_audit(dict(verifier_options or {}))
    return {
        "cases": len(rows),
        "as_expected": sum(r["ok"] for r in rows),
        "failures": [r for r in rows if not r["ok"]],
    }


def write_heldout(run_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    return atomic_write_jsonl(Path(run_dir) / "heldout_samples.jsonl", list(rows))


def read_heldout(run_dir: str | Path) -> list[dict[str, Any]]:
    """The held-out samples write_heldout saved (initial and final policy), in order."""
    path = Path(run_dir) / "heldout_samples.jsonl"
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def train_grpo_stage(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """40_grpo's whole heavy step, with the (cfg, run_dir) signature every launchable train step has
    (nebula_utils.launch.job): the prompt pool and held-out split, the held-out prompts sampled with
    the starting policy, GRPO, the held-out prompts sampled again with the final policy. Writes
    model/, train_log.json and heldout_samples.jsonl (read_heldout) into run_dir; returns the
    training metrics."""
    pool, _ = load_rl_prompts(cfg.data, cfg.difficulties, cfg.max_prompts, cfg.seed, cfg.tasks)
    check_verifiers(pool, cfg.reward_weights)
    train_ds, heldout = split_heldout(pool, cfg.heldout_prompts, cfg.seed)
    trainer = build_trainer(cfg, run_dir, train_ds)
    initial = sample_and_score(trainer.model, trainer.processing_class, heldout, cfg, "initial")
    metrics = train_grpo(trainer, cfg, run_dir)
    final = sample_and_score(trainer.model, trainer.processing_class, heldout, cfg, "final")
    write_heldout(run_dir, initial + final)
    return metrics
