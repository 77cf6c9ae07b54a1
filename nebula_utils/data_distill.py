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
from typing import Any

from .config import ConfigError, StageConfig

# The synthesized prompts have never been checked against benchmarks (14/15 do that).
SYNTH_NOTE = "synthesized prompts are new text: run decontamination before training on them"


@dataclasses.dataclass
class DistillConfig(StageConfig):
    data: str  # sft or rl data version; pipelines pass "@10_data_sft_mix/sft"
    max_prompts: int  # 0 = every prompt of `data`; else a seeded sample
    teacher: str  # model spec of the teacher
    backend: str  # auto | transformers | vllm
    batch_size: int  # transformers backend: prompts per generate call
    k: int  # teacher samples per prompt (>= 2: a group needs something to compare)
    temperature: float
    top_p: float
    max_new_tokens: int
    include_original: bool  # keep an sft row's own answer as one more candidate (generator "dataset")
    synthesis: str  # none | self_instruct | evol_instruct | magpie
    synth_n: int  # synthesis attempts (each kept one adds a prompt)
    synth_model: str  # "" = the teacher
    synth_temperature: float
    synth_max_new_tokens: int
    synth_allow_truncated: bool  # keep a synthesized prompt the model did not finish (tiny models never do)
    evol_operations: list[str]
    evol_model_check: bool  # ask the synthesis model whether an evolved prompt makes sense
    verifier_workers: int  # threads for sandboxed code verification

    def check(self) -> None:
        from .data.synthesis import SCHOOLS

        if not self.data:
            raise ConfigError("11_distill: key 'data' is empty (pass a data version, e.g. \"@10_data_sft_mix/sft\")")
        if self.synthesis not in SCHOOLS:
            raise ConfigError(f"11_distill: key 'synthesis' = {self.synthesis!r} (known: {', '.join(SCHOOLS)})")
        if self.k < 2:
            raise ConfigError(f"11_distill: key 'k' = {self.k}: a candidate group needs at least 2 teacher samples")


def sampling(cfg: DistillConfig) -> Any:
    from .generation import SamplingParams

    return SamplingParams(n=cfg.k, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                          top_p=cfg.top_p, seed=cfg.seed, logprobs=True)


def synth_sampling(cfg: DistillConfig) -> Any:
    from .generation import SamplingParams

    return SamplingParams(n=1, max_new_tokens=cfg.synth_max_new_tokens, temperature=cfg.synth_temperature,
                          seed=cfg.seed)


def load_prompts(cfg: DistillConfig) -> tuple[list[dict], dict[str, Any], dict[str, Any]]:
    """(prompt records, input manifests, the `select` step) from the input data version."""
    from .data.distillation import prompt_records
    from .data.mixing import select_subset
    from .data.versions import load_version, read_manifests

    cfg.check()
    manifests = read_manifests(cfg.data)
    ds = load_version(cfg.data)
    ds, step = select_subset(ds, cfg.max_prompts, cfg.seed)
    return prompt_records(ds, manifests["version"]["schema"]), manifests, step


def make_generators(cfg: DistillConfig) -> tuple[Any, Any]:
    """(teacher, synthesis model); the same object when synth_model is empty or equal."""
    from .generation import make_generator

    teacher = make_generator(cfg.teacher, cfg.backend, cfg.device, cfg.batch_size)
    if cfg.synthesis == "none" or cfg.synth_model in ("", cfg.teacher):
        return teacher, teacher
    return teacher, make_generator(cfg.synth_model, cfg.backend, cfg.device, cfg.batch_size)


def synthesize(cfg: DistillConfig, generator: Any, records: list[dict]) -> Any:
    """Run the configured school; None when synthesis is off."""
    from .data import synthesis as S

    params, loose = synth_sampling(cfg), cfg.synth_allow_truncated
    if cfg.synthesis == "self_instruct":
        seeds = [r["prompt"][-1]["content"] for r in records]
        return S.self_instruct(generator, seeds, cfg.synth_n, params, seed=cfg.seed, allow_truncated=loose)
    if cfg.synthesis == "evol_instruct":
        return S.evol_instruct(generator, records, cfg.synth_n, params, seed=cfg.seed, operations=cfg.evol_operations,
                               model_check=cfg.evol_model_check, allow_truncated=loose)
    if cfg.synthesis == "magpie":
        magpie_params = dataclasses.replace(params, temperature=params.temperature or 1.0)
        return S.magpie(generator, cfg.synth_n, magpie_params, allow_truncated=loose)
    return None


def write_distilled(cfg: DistillConfig, rows: list[dict], manifests: dict, steps: list[dict], out_dir: Path,
                    teacher: Any, synth_generator: Any | None) -> Any:
    """Write the candidate groups as a preference version with the inherited manifests + new steps."""
    from .data.distillation import group_dataset
    from .data.manifests import processing_step, source_entry
    from .data.versions import save_version

    ds = group_dataset(rows)
    # every prompt (selected + synthesized) yields one group: nothing is dropped at this step
    distill_step = processing_step("distill", count_in=len(ds), count_out=len(ds),
                                   params={"k": cfg.k, "include_original": cfg.include_original,
                                           "sampling": sampling(cfg).to_dict(), "generator": teacher.spec()})
    sources = manifests["source"]["sources"] + [source_entry(f"teacher:{cfg.teacher}", path=cfg.teacher,
                                                             license="model outputs: the teacher's licence applies")]
    isolation = {k: v for k, v in manifests["evaluation_isolation"].items() if k != "content_hash"}
    isolation["inherited_from"] = manifests["version"]["content_hash"]
    if synth_generator is not None:
        sources.append(source_entry(f"synthesis:{cfg.synthesis}", path=synth_generator.model_spec,
                                    license="model outputs", filters={"school": cfg.synthesis}))
        isolation["notes"] = list(isolation.get("notes", [])) + [SYNTH_NOTE]
    return save_version(ds, out_dir, "preference", sources, manifests["processing"]["steps"] + steps + [distill_step],
                        parents=[manifests["version"]["content_hash"]], isolation=isolation)


def candidate_frame(ds: Any) -> Any:
    """One row per candidate: group, task, generator, finish reason, tokens, scores, chosen/rejected."""
    import json

    import pandas as pd

    rows = []
    for g in ds:
        meta = json.loads(g["candidate_meta"])
        for j, cand in enumerate(g["candidates"]):
            rows.append({"group": g["id"], "task": g["task"], "generator": cand["generator"],
                         "finish_reason": meta[j]["finish_reason"], "tokens": meta[j]["num_tokens"],
                         "role": "chosen" if j == g["chosen"] else "rejected" if j == g["rejected"] else "",
                         **json.loads(cand["scores"])})
    return pd.DataFrame(rows)


def summary_metrics(frame: Any) -> dict[str, Any]:
    """Truncation rate and mean verifier score of the teacher's candidates (None when not defined)."""
    teacher = frame[frame["generator"] != "dataset"]
    verified = teacher[[c for c in frame.columns if c.startswith("verifier:")]].stack().dropna()
    return {
        "truncated_rate": {"value": float((teacher["finish_reason"] == "length").mean()) if len(teacher) else None,
                           "n": len(teacher)},
        "teacher_verifier_mean": {"value": float(verified.mean()) if len(verified) else None, "n": len(verified)},
    }
