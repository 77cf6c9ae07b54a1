"""Small real data versions for tests (reasoning-gym, HumanEval), built with the library's own code."""

from __future__ import annotations

import json
from pathlib import Path


def small_sft_version(tmp_path: Path, planted: bool) -> Path:
    from nebula_utils.data.mixing import build_mix
    from nebula_utils.data.schema import to_dataset
    from nebula_utils.data.sources import humaneval_problems, humaneval_sft, humaneval_split_ids, reasoning_gym_sft
    from nebula_utils.data.versions import save_version

    parts = {
        "chain_sum": reasoning_gym_sft("chain_sum", 10, 0),
        "lcm": reasoning_gym_sft("lcm", 10, 0),
        "code": humaneval_sft(10),
    }
    if planted:
        eval_ids = set(humaneval_split_ids("eval"))
        p = [x for x in humaneval_problems() if x["task_id"] in eval_ids][2]
        dup = parts["lcm"].dataset[0]
        rows = [
            {
                "id": "planted:leak",
                "source": "planted",
                "license": "MIT",
                "task": "code",
                "messages": [
                    {"role": "user", "content": p["prompt"]},
                    {"role": "assistant", "content": p["canonical_solution"]},
                ],
            },
            dict(dup) | {"id": "planted:dup"},
        ]
        parts["planted"] = type(parts["lcm"])(
            to_dataset("sft", rows), parts["lcm"].source, parts["lcm"].step | {"count_in": 2, "count_out": 2}
        )
    mix, step = build_mix({k: s.dataset for k, s in parts.items()}, "sft", 0, name="test_mix")
    out = tmp_path / ("planted" if planted else "clean")
    save_version(mix, out, "sft", [s.source for s in parts.values()], [s.step for s in parts.values()] + [step])
    return out


def small_mix(out: Path) -> Path:
    """A small 10_data_sft_mix output (out/sft + out/rl versions), built with the stage's own functions."""
    from nebula_utils.data.mixing import write_mixed_version
    from nebula_utils.stages.data_sft_mix import rl_parts, sft_parts
    from tests.conftest import build_stage_config

    cfg = build_stage_config(
        "10_data_sft_mix",
        sft_math_tasks=["chain_sum"],
        sft_math_per_task=3,
        sft_code_n=2,
        sft_ifeval_n=0,  # every row answered: the tests reading this mix train on it or count its answers
        rl_math_tasks=["chain_sum"],
        rl_math_per_task=3,
        rl_ifeval_n=2,
        rl_ifeval_max_instructions=1,
        rl_code_n=2,
        shared_data_dir="",
        shared_per_source=0,
    )
    write_mixed_version(sft_parts(cfg, out / "quarantine"), "sft", out / "sft", 0, name="sft")
    write_mixed_version(rl_parts(cfg), "rl", out / "rl", 0, name="rl")
    return out


def small_distill_version(out: Path, sft_version: Path) -> Path:
    """Candidate groups (11_distill's output) from tiny-random on 4 prompts, written in process."""
    from nebula_utils.data.distillation import distill, prompt_records
    from nebula_utils.data.mixing import select_from_version
    from nebula_utils.inference.generation import make_generator
    from nebula_utils.stages.distill import write_distilled
    from tests.conftest import build_stage_config

    cfg = build_stage_config(
        "11_distill", data=str(sft_version), teacher="tiny-random", max_prompts=4, k=2, max_new_tokens=16
    )
    ds, manifests, step = select_from_version(cfg.data, cfg.max_prompts, cfg.seed)
    teacher = make_generator(cfg.teacher, "transformers", "cpu", cfg.batch_size)
    groups = distill(
        teacher,
        prompt_records(ds, manifests["version"]["schema"]),
        cfg.sampling(cfg.k, logprobs=True),
        cfg.include_original,
        cfg.verifier_workers,
    )
    write_distilled(cfg, groups, manifests, [step], out, teacher, None)
    return out


def balanced_steps(path: Path) -> list[dict]:
    """The processing steps of a data version, asserting each balances (in = out + filtered + quarantined)."""
    from nebula_utils.data.versions import read_manifests

    steps = read_manifests(path)["processing"]["steps"]
    for s in steps:
        assert s["count_in"] == s["count_out"] + s["filtered"] + s["quarantined"], s
        assert s["count_in"] == s["count_out"] + sum(s["drop_reasons"].values()), s
    return steps


# 60_eval at smoke size on tiny-random, without ../shared (only the fast verifiable path runs).
EVAL_SMOKE = {
    "model": "tiny-random",
    "suite": "verifiable",
    "limit": 2,
    "max_gen_toks": 8,
    "device": "cpu",
    "data_root": "/nonexistent/shared/data",
    "bootstrap_resamples": 200,
}


def rl_version(out: Path, rows: list[dict]) -> Path:
    """An `rl` data version from short rows {prompt, verifier, reference[, difficulty, task]}."""
    from nebula_utils.data.manifests import processing_step
    from nebula_utils.data.schema import to_dataset
    from nebula_utils.data.versions import save_version

    full = [
        {
            "id": f"test:{i}",
            "source": "test",
            "license": "MIT",
            "task": r.get("task", "math_reasoning"),
            "prompt": r["prompt"],
            "messages": [{"role": "user", "content": r["prompt"]}],
            "verifier": r["verifier"],
            "reference": r["reference"],
            "difficulty": r.get("difficulty"),
        }
        for i, r in enumerate(rows)
    ]
    step = processing_step("test_rows", count_in=len(full), count_out=len(full))
    save_version(to_dataset("rl", full), out, "rl", {"name": "test", "path": "tests", "license": "MIT"}, [step])
    return out


def perturbed_model(out: Path, seed: int = 1, scale: float = 0.5, extra_token: str = "") -> Path:
    """tiny-random with seeded noise on every weight (a different teacher with the same tokenizer),
    saved to `out`; `extra_token` adds a token to its tokenizer (a teacher that does NOT share it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nebula_utils.inference.models import resolve_model_path

    if (out / "config.json").is_file():
        return out
    src = resolve_model_path("tiny-random")
    model = AutoModelForCausalLM.from_pretrained(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    tok = AutoTokenizer.from_pretrained(src)
    if extra_token:
        tok.add_tokens([extra_token])
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def copied_model(out: Path, spec: str = "tiny-random") -> Path:
    """A copy of a model folder under another path (the same weights named by a different spec)."""
    import shutil

    from nebula_utils.inference.models import resolve_model_path

    if not (out / "config.json").is_file():
        shutil.copytree(resolve_model_path(spec), out)
    return out


def routed_prompts(path: Path, per_task: int = 4) -> Path:
    """A .jsonl of chat prompts with task labels: `per_task` math_reasoning rows ("What is i plus i?")
    and `per_task` code rows ("Write a Python function f_i ...")."""
    import json

    rows = [
        {"id": f"m{i}", "task": "math_reasoning", "messages": [{"role": "user", "content": f"What is {i} plus {i}?"}]}
        for i in range(per_task)
    ] + [
        {
            "id": f"c{i}",
            "task": "code",
            "messages": [{"role": "user", "content": f"Write a Python function f_{i} that returns {i}."}],
        }
        for i in range(per_task)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def small_pairs_version(out: Path, distill_version: Path) -> Path:
    """30_preference_data's pairs from candidate groups (e.g. small_distill_version), written in process."""
    from nebula_utils.data.mixing import select_from_version
    from nebula_utils.data.preference import build_pairs
    from nebula_utils.data.versions import load_version
    from nebula_utils.stages.preference_data import write_pairs
    from tests.conftest import build_stage_config

    cfg = build_stage_config("30_preference_data", data=str(distill_version), max_length_ratio=0.0)
    rows, manifests, step = select_from_version(cfg.data, 0, cfg.seed)
    pairs, drops = build_pairs(list(rows), cfg.rules())
    write_pairs(cfg, pairs, drops, len(rows), manifests, step, out)
    assert len(load_version(out)) == len(pairs) > 0
    return out


def word_limit_rl_version(out: Path, n_math: int = 2) -> Path:
    """An rl version tiny-random can partly pass: two prompts with a word limit (format verifier,
    `max_words`) that any short answer meets, beside reasoning-gym chain_sum prompts it never solves."""
    from nebula_utils.data.manifests import processing_step, source_entry
    from nebula_utils.data.mixing import write_mixed_version
    from nebula_utils.data.schema import to_dataset
    from nebula_utils.data.sources import Sourced, reasoning_gym_rl

    asks = ["Describe the water cycle in at most 60 words.", "Explain what a prime number is in at most 60 words."]
    rows = [
        {
            "id": f"word_limit:{i}",
            "source": "tests/word_limit",
            "license": "MIT",
            "task": "complex_if",
            "prompt": ask,
            "messages": [{"role": "user", "content": ask}],
            "verifier": "format",
            "reference": {"max_words": 60, "prompt": ask},
        }
        for i, ask in enumerate(asks)
    ]
    limits = Sourced(
        to_dataset("rl", rows),
        source_entry("tests/word_limit", path="tests/factories.py", license="MIT"),
        processing_step("generate:word_limit", count_in=len(rows), count_out=len(rows)),
    )
    parts = {"math": reasoning_gym_rl("chain_sum", n_math, 0), "limits": limits}
    return write_mixed_version(parts, "rl", out, 0, name="word_limit_rl").path


# Teacher answers for 10_data_sft_mix's IFEval-style prompts (seed 0 -> 2000): written to pass or
# fail the constraints `if_filter_run` picks (no commas; lowercase + no commas).
IF_NO_COMMA = (
    "Start with the heaviest books on the bottom shelf. Put the books you read most often at eye level "
    "and keep a small gap at the end of each shelf so that new books still fit."
)
IF_COMMAS = "First, take every book off the shelf. Next, sort them by size, topic or colour. Finally, put them back."
IF_LOWER_NO_COMMA = (
    "bees collect nectar from flowers and carry it back to the hive. there they pass it from bee to bee "
    "and fan it with their wings until most of the water is gone and the honey is thick."
)


def if_filter_run(out: Path) -> tuple[Path, dict[str, str]]:
    """10_data_sft_mix's default IF prompts -> hand-written teacher candidates (k=2) -> 12_filter's
    stage functions with its defaults. Three groups: a single no-comma prompt answered once right
    and once wrong ("pass"), a second one answered wrong twice ("fail"), and a lowercase + no-comma
    prompt answered right once ("two"). Returns the 12_filter run folder and {key: group id}."""
    from nebula_utils.data.crossverify import cross_verify
    from nebula_utils.data.distillation import build_groups, group_dataset, prompt_records
    from nebula_utils.data.manifests import processing_step
    from nebula_utils.data.mixing import write_mixed_version
    from nebula_utils.data.versions import derive_version, load_version
    from nebula_utils.inference.generation import Completion, SamplingParams
    from nebula_utils.stages import filter as F
    from nebula_utils.stages.data_sft_mix import sft_parts
    from tests.conftest import build_stage_config

    mix = build_stage_config("10_data_sft_mix", sft_math_tasks=[], sft_code_n=0)
    sft = write_mixed_version(sft_parts(mix, out / "quarantine"), "sft", out / "sft", 0, name="if").path
    records = prompt_records(load_version(sft), "sft")
    by_ids: dict[tuple, list[dict]] = {}
    for rec in records:
        by_ids.setdefault(tuple(json.loads(rec["reference"])["instruction_id_list"]), []).append(rec)
    single, two = by_ids[("punctuation:no_comma",)], by_ids[("change_case:english_lowercase", "punctuation:no_comma")]
    picked = {"pass": single[0], "fail": single[1], "two": two[0]}
    answers = {"pass": [IF_NO_COMMA, IF_COMMAS], "fail": [IF_COMMAS, IF_COMMAS], "two": [IF_LOWER_NO_COMMA, IF_COMMAS]}
    completions = [[Completion(a, "stop", len(a.split()), -1.0) for a in answers[k]] for k in picked]
    rows = build_groups(list(picked.values()), completions, SamplingParams(n=2), "teacher", include_original=True)
    distill = derive_version(
        sft,
        group_dataset(rows),
        out / "distill",
        processing_step(
            "select+distill", count_in=len(records), count_out=len(rows), drop_reasons={"not_picked": len(records) - 3}
        ),
        schema="preference",
    )
    cfg = build_stage_config("12_filter", data=str(distill.path), verifier_workers=1)
    groups = F.load_groups(cfg)
    (out / "filter").mkdir()
    F.write_outputs(cfg, groups, cross_verify(groups, cfg.rules()), out / "filter")
    return out / "filter", {k: r["id"] for k, r in picked.items()}
