"""Stage 30_preference_data: chosen/rejected pairs from candidate groups, guarded against length bias.

Two sources (`source`):
  groups      the candidate groups of a `preference` version (12_filter's `preference` output, or
              11_distill's groups), re-paired by a score signal with a minimum margin
  on_policy   Tülu 3's on-policy data: `policy` answers each prompt of `data` k times, the rule
              verifiers score the answers, best is paired against worst by the same rules
  auto        groups when `data` is a preference version, on_policy for an sft or rl version

Writes <run_dir>/pairs: a `preference` version (the whole candidate group per row, chosen/rejected
and the `preference_reason`) whose processing manifest adds a `select` step, an `on_policy_sample`
step when sampling, and a `pair` step whose drop reasons balance. The pairing rules are
nebula_utils.data.preference.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, StageConfig, doc
from ._shared import SamplingFields

SOURCES = ("auto", "groups", "on_policy")
ON_POLICY_NOTE = "on-policy answers are new model text; their prompts keep the parent's isolation record"


@dataclasses.dataclass
class PreferenceDataConfig(SamplingFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "12_filter/preference"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "rl"}

    data: str = doc(
        'candidate groups (preference version) or prompts (sft/rl version for on_policy); "" = the newest '
        "12_filter/preference"
    )
    source: str = doc("auto | groups | on_policy (auto: groups for a preference version, else on_policy)")
    max_prompts: int = doc("0 = every group / prompt of `data`; else a seeded sample of this many")
    signal: str = doc("score that orders candidates: verifier | judge | an exact score key (e.g. reward:<model>)")
    min_margin: float = doc("signal(chosen) - signal(rejected) must reach this (verifier scores are 0..1)")
    pass_threshold: float = doc("a candidate with a verifier score below this cannot be chosen (long or not)")
    max_length_ratio: float = doc(
        "length matching: max(words)/min(words) of a pair at most this; 0 = off (then length may explain the preference)"
    )
    keep_long_useless: bool = doc("keep pairs whose rejected answer is longer than the ratio allows and not useful")
    policy: str = doc("on_policy: the current policy that answers (model spec or checkpoint, e.g. @20_sft/model)")
    k: int = doc("on_policy: answers sampled per prompt (>= 2 to have something to pair)")
    verifier_workers: int = doc("threads for sandboxed code verification")

    def check(self) -> None:
        self.check_sampling()
        self.one_of("source", SOURCES)
        self.at_least("max_prompts", 0)
        self.at_least("min_margin", 0.0)
        self.within("pass_threshold", 0.0, 1.0)
        if self.max_length_ratio and self.max_length_ratio < 1:
            raise ConfigError(f"key 'max_length_ratio': 0 (off) or >= 1, got {self.max_length_ratio}")
        self.at_least("k", 2)
        self.at_least("verifier_workers", 1)
        if not self.signal:
            raise ConfigError("key 'signal': name verifier, judge or a score key")

    def rules(self) -> Any:
        from ..data.preference import PairRules

        return PairRules(
            self.signal, self.min_margin, self.pass_threshold, self.max_length_ratio, self.keep_long_useless
        )


def resolve_source(cfg: PreferenceDataConfig, schema: str) -> str:
    if cfg.source == "auto":
        return "groups" if schema == "preference" else "on_policy"
    if cfg.source == "groups" and schema != "preference":
        raise ValueError(f"{cfg.data}: source 'groups' needs candidate groups (a preference version), got {schema}")
    return cfg.source


def load_input(cfg: PreferenceDataConfig) -> tuple[list[dict], dict, dict, str]:
    """(rows of the seeded selection, the input's manifests, the select step, the resolved source)."""
    from ..data.mixing import select_from_version

    ds, manifests, step = select_from_version(cfg.data, cfg.max_prompts, cfg.seed, ("preference", "sft", "rl"))
    return list(ds), manifests, step, resolve_source(cfg, manifests["version"]["schema"])


def sample_on_policy(cfg: PreferenceDataConfig, rows: list[dict], schema: str) -> tuple[list[dict], Any]:
    """(candidate groups answered by the policy, the generator)."""
    from ..data.distillation import prompt_records
    from ..data.preference import on_policy_groups, prompt_records_from_groups

    if schema == "preference":
        records = prompt_records_from_groups(rows)
    else:
        records = prompt_records(rows, schema)  # iterates rows: a list works as a Dataset
    generator = cfg.make_generator(cfg.policy, "preference: sample")
    groups = on_policy_groups(generator, records, cfg.sampling(cfg.k, logprobs=True), cfg.verifier_workers)
    return groups, generator


def write_pairs(
    cfg: PreferenceDataConfig,
    pairs: list[dict],
    drops: Any,
    n_groups: int,
    manifests: dict,
    select_step: dict,
    out_dir: Path,
    generator: Any = None,
) -> Any:
    """The pairs as a preference version; manifests inherited from `data` plus this stage's steps."""
    from ..data.distillation import group_dataset
    from ..data.manifests import processing_step, source_entry
    from ..data.versions import inherited_isolation, save_version

    steps = [select_step]
    sources = list(manifests["source"]["sources"])
    if generator is not None:
        steps.append(
            processing_step(
                "on_policy_sample",
                count_in=n_groups,
                count_out=n_groups,
                params={
                    "k": cfg.k,
                    "sampling": cfg.sampling(cfg.k, logprobs=True).to_dict(),
                    "generator": generator.spec(),
                },
            )
        )
        sources.append(source_entry(f"policy:{cfg.policy}", path=cfg.policy, license="model outputs"))
    steps.append(
        processing_step(
            f"pair:{cfg.signal}",
            count_in=n_groups,
            count_out=len(pairs),
            params=cfg.rules().to_dict(),
            drop_reasons=drops,
        )
    )
    return save_version(
        group_dataset(pairs),
        out_dir,
        "preference",
        sources,
        manifests["processing"]["steps"] + steps,
        parents=[manifests["version"]["content_hash"]],
        isolation=inherited_isolation(manifests, [ON_POLICY_NOTE] if generator is not None else []),
    )


def pair_metrics(before: list[dict], pairs: list[dict], n_groups: int, drops: Any) -> dict[str, Any]:
    """Pair counts and the length bias of the input's own pairs ("in") and of the written pairs, with CIs."""
    from ..data.preference import length_bias
    from ..stats import bootstrap_mean

    out: dict[str, Any] = {
        "pairs/groups_in": {"value": n_groups},
        "pairs/pairs": {"value": len(pairs), "n": n_groups},
        "pairs/pair_rate": {"value": len(pairs) / n_groups if n_groups else None, "n": n_groups},
    }
    for reason, count in sorted(drops.items()):
        out[f"pairs/dropped/{reason}"] = {"value": count, "n": n_groups}
    for label, rows in (("in", before), ("out", pairs)):
        bias = length_bias(rows)
        for key, values in bias.items():
            if values:
                out[f"pairs/{key}_{label}"] = bootstrap_mean(values).as_metric()
    return out


def plot_lengths(before: list[dict], pairs: list[dict], max_ratio: float, path: Path) -> Any:
    """Words of the chosen vs the rejected answer, for the input's pairs and the written pairs."""
    import matplotlib.pyplot as plt

    from ..data.preference import words

    fig, ax = plt.subplots(figsize=(5, 4))
    for rows, label, marker in ((before, "input pairs", "x"), (pairs, "written pairs", "o")):
        xy = [
            (words(r["candidates"][r["rejected"]]["content"]), words(r["candidates"][r["chosen"]]["content"]))
            for r in rows
            if r.get("chosen") is not None and r.get("rejected") is not None
        ]
        if xy:
            ax.scatter(*zip(*xy), marker=marker, label=f"{label} (n={len(xy)})", alpha=0.7)
    top = max([1, *ax.get_xlim(), *ax.get_ylim()])
    ax.plot([1, top], [1, top], color="grey", lw=0.8)
    if max_ratio:
        ax.plot([1, top], [max_ratio, top * max_ratio], color="grey", ls="--", lw=0.8, label=f"ratio {max_ratio:g}")
        ax.plot([max_ratio, top * max_ratio], [1, top], color="grey", ls="--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="rejected answer (words)", ylabel="chosen answer (words)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig
