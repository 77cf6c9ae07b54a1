"""Stage 11_distill: response distillation (k teacher samples per prompt), with an optional
instruction-synthesis school that adds new prompts first (self_instruct | evol_instruct | magpie).

Reads an `sft` or `rl` data version (`data`), writes `<run_dir>/distill`: a `preference`-schema
version of candidate groups (see nebula_utils.data.distillation). Its manifests inherit the
input's sources, steps and isolation record and add: the teacher (and synthesis model) as
sources, a `select` step, a `synthesize:<school>` step with its drop reasons, and the `distill`
step with the sampling params and the generator spec. Heavy modules are imported inside the
functions: resolving this stage's config must not import datasets or torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, StageConfig, doc
from ._shared import SamplingFields

# The synthesized prompts have never been checked against benchmarks (14/15 do that).
SYNTH_NOTE = "synthesized prompts are new text: run decontamination before training on them"


@dataclasses.dataclass
class DistillConfig(SamplingFields, StageConfig):
    upstream: ClassVar[dict[str, str]] = {"data": "10_data_sft_mix/sft"}
    builtin_inputs: ClassVar[dict[str, str]] = {"data": "sft"}

    data: str = doc(
        'sft or rl data version to take prompts from; "" = the newest 10_data_sft_mix/sft '
        'under results/ (pipelines pass "@10_data_sft_mix/sft")'
    )
    max_prompts: int = doc("0 = every prompt of `data`; else a seeded sample of this many")
    teacher: str = doc("model spec of the teacher that writes the candidate answers")
    k: int = doc("teacher samples per prompt; >= 2, since self-consistency compares them")
    include_original: bool = doc('an sft row\'s own answer joins its group as generator "dataset"')
    synthesis: str = doc("instruction-synthesis school run first: none | self_instruct | evol_instruct | magpie")
    synth_n: int = doc("synthesis attempts (each kept one adds a prompt)")
    synth_model: str = doc('model spec of the synthesis model; "" = the teacher')
    synth_temperature: float = doc("synthesis sampling temperature (Magpie and Self-Instruct sample at 1.0)")
    synth_max_new_tokens: int = doc("token budget of one synthesized prompt")
    synth_allow_truncated: bool = doc("keep a synthesized prompt the model did not finish (tiny models never do)")
    evol_operations: list[str] = doc("Evol-Instruct operations to draw from")
    evol_model_check: bool = doc("ask the synthesis model whether an evolved prompt makes sense")
    verifier_workers: int = doc("threads for sandboxed code verification of the candidates")

    def check(self) -> None:
        from ..data.synthesis import EVOL_OPERATIONS, SCHOOLS

        self.check_sampling()
        self.one_of("synthesis", SCHOOLS)
        if self.k < 2:
            raise ConfigError(f"key 'k': a candidate group needs at least 2 teacher samples, got {self.k}")
        self.all_in("evol_operations", EVOL_OPERATIONS)
        for key in ("max_prompts", "synth_n"):
            self.at_least(key, 0)
        self.at_least("synth_max_new_tokens", 1)
        self.at_least("verifier_workers", 1)


def synth_sampling(cfg: DistillConfig) -> Any:
    """One sample per synthesis attempt, at the synthesis temperature and budget."""
    return dataclasses.replace(
        cfg.sampling(1), max_new_tokens=cfg.synth_max_new_tokens, temperature=cfg.synth_temperature, top_p=1.0
    )


def make_generators(cfg: DistillConfig) -> tuple[Any, Any]:
    """(teacher, synthesis model); the same object when synth_model is empty or equal."""
    teacher = cfg.make_generator(cfg.teacher, "distill")
    if cfg.synthesis == "none" or cfg.synth_model in ("", cfg.teacher):
        return teacher, teacher
    return teacher, cfg.make_generator(cfg.synth_model, "synthesize")


def synthesize(cfg: DistillConfig, generator: Any, records: list[dict]) -> Any:
    """Run the configured school; None when synthesis is off."""
    from ..data import synthesis as S

    params, loose = synth_sampling(cfg), cfg.synth_allow_truncated
    if cfg.synthesis == "self_instruct":
        seeds = [r["prompt"][-1]["content"] for r in records]
        return S.self_instruct(generator, seeds, cfg.synth_n, params, seed=cfg.seed, allow_truncated=loose)
    if cfg.synthesis == "evol_instruct":
        return S.evol_instruct(
            generator,
            records,
            cfg.synth_n,
            params,
            seed=cfg.seed,
            operations=cfg.evol_operations,
            model_check=cfg.evol_model_check,
            allow_truncated=loose,
        )
    if cfg.synthesis == "magpie":
        magpie_params = dataclasses.replace(params, temperature=params.temperature or 1.0)
        return S.magpie(generator, cfg.synth_n, magpie_params, allow_truncated=loose)
    return None


def write_distilled(
    cfg: DistillConfig,
    rows: list[dict],
    manifests: dict,
    steps: list[dict],
    out_dir: Path,
    teacher: Any,
    synth_generator: Any | None,
) -> Any:
    """Write the candidate groups as a preference version with the inherited manifests + new steps."""
    from ..data.distillation import group_dataset
    from ..data.manifests import processing_step, source_entry
    from ..data.versions import inherited_isolation, save_version

    ds = group_dataset(rows)
    # every prompt (selected + synthesized) yields one group: nothing is dropped at this step
    distill_step = processing_step(
        "distill",
        count_in=len(ds),
        count_out=len(ds),
        params={
            "k": cfg.k,
            "include_original": cfg.include_original,
            "sampling": cfg.sampling(cfg.k, logprobs=True).to_dict(),
            "generator": teacher.spec(),
        },
    )
    sources = manifests["source"]["sources"] + [
        source_entry(
            f"teacher:{cfg.teacher}", path=cfg.teacher, license="model outputs: the teacher's licence applies"
        )
    ]
    if synth_generator is not None:
        sources.append(
            source_entry(
                f"synthesis:{cfg.synthesis}",
                path=synth_generator.model_spec,
                license="model outputs",
                filters={"school": cfg.synthesis},
            )
        )
    isolation = inherited_isolation(manifests, [SYNTH_NOTE] if synth_generator is not None else [])
    return save_version(
        ds,
        out_dir,
        "preference",
        sources,
        manifests["processing"]["steps"] + steps + [distill_step],
        parents=[manifests["version"]["content_hash"]],
        isolation=isolation,
    )


def candidate_frame(ds: Any) -> Any:
    """One row per candidate: group, task, generator, finish reason, tokens, scores, chosen/rejected."""
    import json

    import pandas as pd

    rows = []
    for g in ds:
        meta = json.loads(g["candidate_meta"])
        for j, cand in enumerate(g["candidates"]):
            rows.append(
                {
                    "group": g["id"],
                    "task": g["task"],
                    "generator": cand["generator"],
                    "finish_reason": meta[j]["finish_reason"],
                    "tokens": meta[j]["num_tokens"],
                    "role": "chosen" if j == g["chosen"] else "rejected" if j == g["rejected"] else "",
                    **json.loads(cand["scores"]),
                }
            )
    return pd.DataFrame(rows)


def summary_metrics(frame: Any) -> dict[str, Any]:
    """Truncation rate and mean verifier score of the teacher's candidates (None when not defined)."""
    teacher = frame[frame["generator"] != "dataset"]
    verified = teacher[[c for c in frame.columns if c.startswith("verifier:")]].stack().dropna()
    return {
        "truncated_rate": {
            "value": float((teacher["finish_reason"] == "length").mean()) if len(teacher) else None,
            "n": len(teacher),
        },
        "teacher_verifier_mean": {"value": float(verified.mean()) if len(verified) else None, "n": len(verified)},
    }
