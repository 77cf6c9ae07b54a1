"""Stage 12_filter: multi-dimensional cross-verification of distilled candidate groups.

Reads the `preference` version written by 11_distill (`data`), scores every candidate on every
dimension (nebula_utils.data.crossverify) and writes:
  <run_dir>/sft            kept groups as SFT samples (best kept candidate; `quality` = its dimension scores)
  <run_dir>/preference     groups with a kept and a dropped candidate as chosen/rejected pairs
  <run_dir>/dropped.jsonl  every dropped group with its reason and each candidate's verdicts
  <run_dir>/candidate_scores.csv  one row per candidate and dimension score (for reports)
Both versions add one balanced processing step to the distill version's manifests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, StageConfig, doc


@dataclasses.dataclass
class FilterConfig(StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "11_distill/distill"}

    data: str = doc('11_distill output (candidate groups); "" = the newest one under results/')
    keep_rules: dict[str, list[str]] = doc(
        "task -> dimensions (format, verifier, agreement, heuristics, judge) its "
        "kept answer must have passed; other applicable ones must not fail; "
        '"default" covers the other tasks'
    )
    min_verifier_score: float = doc("IFEval gives partial credit; 1.0 = every instruction followed")
    min_agreement: float = doc("share of teacher samples with the same final answer (k=4: 0.6 means 3 of 4)")
    min_words: int = doc("answers shorter than this many words fail the heuristics gate")
    max_words: int = doc("answers longer than this many words fail the heuristics gate")
    language: str = doc('expected language of the prose (langdetect code); "" = no check')
    min_language_prob: float = doc("langdetect probability the answer is in `language`")
    judge_model: str = doc('"" = no judge; else a model spec that rates answers 1-10')
    min_judge_score: float = doc("rescaled judge rating needed (1 -> 0, 10 -> 1)")
    teacher_only: bool = doc(
        "only teacher samples may become the SFT answer; false: a kept teacher answer still ranks first, "
        "and the dataset's own answer is the fallback when it passes the same gates (a 135M teacher "
        "fails most math: teacher-only would leave SFT a few dozen rows)"
    )
    verifier_workers: int = doc("threads for sandboxed code verification")

    def check(self) -> None:
        for key in ("min_verifier_score", "min_agreement", "min_language_prob", "min_judge_score"):
            self.within(key, 0.0, 1.0)
        self.at_least("min_words", 0)
        self.at_least("max_words", self.min_words)
        self.at_least("verifier_workers", 1)
        self.rules()

    def rules(self) -> Any:
        from ..data.crossverify import FilterRules

        try:
            return FilterRules(
                self.keep_rules,
                self.min_verifier_score,
                self.min_agreement,
                self.min_words,
                self.max_words,
                self.language,
                self.min_language_prob,
                self.min_judge_score,
                self.teacher_only,
                self.verifier_workers,
            )
        except ValueError as exc:
            raise ConfigError(f"key 'keep_rules': {exc}") from None


def make_judge(cfg: FilterConfig) -> Any:
    if not cfg.judge_model:
        return None
    from ..data.crossverify import LLMJudge
    from ..inference.generation import make_generator

    return LLMJudge(make_generator(cfg.judge_model, "auto", cfg.device))


def load_groups(cfg: FilterConfig) -> list[dict]:
    from ..data.versions import load_version, read_manifests

    schema = read_manifests(cfg.data)["version"]["schema"]
    if schema != "preference":
        raise ValueError(f"{cfg.data}: 12_filter reads candidate groups (preference schema), got {schema}")
    return list(load_version(cfg.data))


def _step(name: str, cfg: FilterConfig, n_in: int, n_out: int, drops: Any, **extra: Any) -> dict:
    from ..data.manifests import processing_step

    params = {
        k: getattr(cfg, k)
        for k in (
            "keep_rules",
            "min_verifier_score",
            "min_agreement",
            "min_words",
            "max_words",
            "language",
            "min_language_prob",
            "judge_model",
            "min_judge_score",
            "teacher_only",
        )
    }
    return processing_step(name, count_in=n_in, count_out=n_out, params=params, drop_reasons=drops, **extra)


def write_outputs(cfg: FilterConfig, groups: list[dict], result: Any, run_dir: Path) -> dict[str, Any]:
    """Write the sft and preference versions, dropped.jsonl and candidate_scores.csv; return VersionInfos."""
    from ..data import crossverify as C
    from ..data.distillation import group_dataset
    from ..data.schema import to_dataset
    from ..data.versions import derive_version
    from ..io import atomic_write_jsonl, atomic_write_text

    funnel = C.funnel(result)
    sft = to_dataset("sft", C.sft_rows(groups, result))
    sft_info = derive_version(
        cfg.data,
        sft,
        run_dir / "sft",
        _step(
            "cross_verify",
            cfg,
            len(groups),
            len(sft),
            C.drop_counts(result),
            candidate_funnel=funnel,
            answer_from=answer_sources(groups, result),
        ),
        schema="sft",
    )
    pairs, pair_drops = C.preference_rows(groups, result)
    pref = group_dataset(pairs)
    pref_info = derive_version(
        cfg.data,
        pref,
        run_dir / "preference",
        _step("cross_verify:pairs", cfg, len(groups), len(pref), pair_drops),
        schema="preference",
    )
    atomic_write_jsonl(run_dir / "dropped.jsonl", C.dropped_rows(result))
    atomic_write_text(run_dir / "candidate_scores.csv", C.dimension_frame(result).to_csv(index=False))
    return {"sft": sft_info, "preference": pref_info}


def answer_sources(groups: list[dict], result: Any) -> dict[str, dict[str, int]]:
    """Per task, how many kept SFT answers are the teacher's and how many the dataset's own."""
    out: dict[str, dict[str, int]] = {}
    for row, group in zip(groups, result.groups):
        if group["kept"]:
            who = "dataset" if row["candidates"][group["best"]]["generator"] == "dataset" else "teacher"
            task = out.setdefault(row["task"], {"teacher": 0, "dataset": 0})
            task[who] += 1
    return dict(sorted(out.items()))


def plot_funnel_and_scores(result: Any, path: Path) -> Any:
    """Left: the filter funnel (effective sample rate after each gate). Right: per-dimension scores."""
    import matplotlib.pyplot as plt

    from ..data.crossverify import GATES, dimension_frame, funnel

    rows, frame = funnel(result), dimension_frame(result)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].bar([r["gate"] for r in rows], [r["rate"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        axes[0].text(i, r["rate"], f"{r['candidates']}", ha="center", va="bottom")
    axes[0].set(title="filter funnel (candidates surviving each gate)", ylabel="effective sample rate", ylim=(0, 1.1))
    data = [frame[f"{g}_score"].dropna().astype(float) for g in GATES]
    axes[1].boxplot([d if len(d) else [float("nan")] for d in data], showmeans=True)
    axes[1].set_xticks(range(1, len(GATES) + 1), [f"{g}\n(n={len(d)})" for g, d in zip(GATES, data)])
    axes[1].set(title="per-dimension score distributions", ylabel="score", ylim=(-0.05, 1.05))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig
