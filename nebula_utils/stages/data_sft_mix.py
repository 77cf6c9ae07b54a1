"""Stage 10_data_sft_mix: an SFT mix and an RL prompt pool from offline real sources.

SFT parts: reasoning-gym math items with worked answers, HumanEval `train`-split problems with
their canonical solutions, IFEval-style constraint prompts as prompt-only rows (no dataset answer:
11_distill's teacher writes it and 12_filter keeps it only when the ifeval verifier passes it), and
(only when `shared_data_dir` is set) GSM8K train, MMLU dev and the LLaMA-Factory Alpaca demo. RL
parts: reasoning-gym math prompts, IFEval-style constraint prompts (another seed), HumanEval
`train` problems not used for SFT, and GSM8K train problems after those used for SFT when shared
data is on.

Both are written as data versions (`<run_dir>/sft`, `<run_dir>/rl`) whose isolation manifest
records the lineage check against the HumanEval `eval` split and any source derived from a
benchmark. Data modules are imported inside the functions: resolving this stage's config must
not import datasets or torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import StageConfig, doc
from ..paths import repo_path


@dataclasses.dataclass
class SFTMixConfig(StageConfig):
    sft_math_tasks: list[str] = doc(
        "reasoning-gym tasks with a worked-answer renderer (gsm_symbolic is left out: "
        "its templates are GSM8K test problems)"
    )
    sft_math_per_task: int = doc("SFT items generated per math task")
    sft_code_n: int = doc(
        "HumanEval train-split problems with canonical solutions (of 74; the other 90 stay for eval)"
    )
    sft_ifeval_n: int = doc(
        "IFEval-style constraint prompts as prompt-only SFT rows: 11_distill's teacher answers them "
        "and the ifeval verifier gates the answer in 12_filter; unanswered ones are filtered there"
    )
    sft_ifeval_max_instructions: int = doc(
        "constraints per SFT IF prompt, at most (2: about half hold two and go to the complex mix)"
    )
    rl_math_tasks: list[str] = doc("reasoning-gym tasks for RL prompts (any with a math-verifiable answer)")
    rl_math_per_task: int = doc("RL prompts per math task")
    rl_ifeval_n: int = doc("IFEval-style constraint prompts of the RL pool (another seed than the SFT ones)")
    rl_ifeval_max_instructions: int = doc("constraints per IF prompt, at most (a 135M model rarely meets three)")
    rl_code_n: int = doc("HumanEval train-split problems for RL, after the SFT ones")
    shared_data_dir: str = doc('"" = off; else a folder like ../shared/data (adds GSM8K train, MMLU dev, Alpaca demo)')
    shared_per_source: int = doc("rows taken from each shared source")

    def check(self) -> None:
        for key in (
            "sft_math_per_task",
            "sft_code_n",
            "sft_ifeval_n",
            "rl_math_per_task",
            "rl_ifeval_n",
            "rl_code_n",
            "shared_per_source",
        ):
            self.at_least(key, 0)
        self.at_least("sft_ifeval_max_instructions", 1)
        self.at_least("rl_ifeval_max_instructions", 1)


def sft_parts(cfg: SFTMixConfig, quarantine_dir: Path) -> dict[str, Any]:
    """Part name -> Sourced (dataset, source entry, processing step) for the SFT mix."""
    from ..data import sources as S

    parts = {f"math/{t}": S.reasoning_gym_sft(t, cfg.sft_math_per_task, cfg.seed) for t in cfg.sft_math_tasks}
    parts["code/humaneval"] = S.humaneval_sft(cfg.sft_code_n, split="train")
    if cfg.sft_ifeval_n:
        parts["complex_if/ifeval_constraints"] = S.ifeval_constraint_prompts(
            cfg.sft_ifeval_n,
            cfg.seed + S.SFT_IFEVAL_SEED_OFFSET,
            max_instructions=cfg.sft_ifeval_max_instructions,
            kind="sft",
        )
    if cfg.shared_data_dir:
        parts.update(_shared_sft_parts(cfg, quarantine_dir))
    return parts


def _shared_sft_parts(cfg: SFTMixConfig, quarantine_dir: Path) -> dict[str, Any]:
    from ..data import sources as S
    from ..data.ingest import ingest_file

    root, n = _shared_root(cfg.shared_data_dir), cfg.shared_per_source
    alpaca = root / "llamafactory_demo" / "alpaca_en_demo.json"
    ds, report = ingest_file(
        str(alpaca),
        fmt="alpaca",
        source_name="alpaca_en_demo",
        limit=n,
        license="unverified: LLaMA-Factory demo data",
        quarantine_path=str(quarantine_dir / "alpaca_en_demo.jsonl"),
    )
    return {
        "math/gsm8k_train": S.shared_gsm8k(root, "train", n, kind="sft"),
        "knowledge/mmlu_dev": S.shared_mmlu(root, "dev", n),
        "chat/alpaca_en_demo": S.Sourced(ds, report.to_source(), report.to_step()),
    }


def _shared_root(path: str) -> Path:
    root = repo_path(path)
    if not root.is_dir():
        raise FileNotFoundError(f'shared_data_dir={path!r}: no such folder (use "" to leave shared data out)')
    return root


def rl_parts(cfg: SFTMixConfig) -> dict[str, Any]:
    """Part name -> Sourced for the RL prompt pool."""
    from ..data import sources as S

    seed = cfg.seed + S.RL_SEED_OFFSET
    parts = {f"math/{t}": S.reasoning_gym_rl(t, cfg.rl_math_per_task, seed) for t in cfg.rl_math_tasks}
    parts["complex_if/ifeval_constraints"] = S.ifeval_constraint_prompts(
        cfg.rl_ifeval_n, seed, max_instructions=cfg.rl_ifeval_max_instructions
    )
    parts["code/humaneval"] = S.humaneval_rl(cfg.rl_code_n, split="train", start=cfg.sft_code_n)
    if cfg.shared_data_dir:
        root = _shared_root(cfg.shared_data_dir)
        parts["math/gsm8k_train"] = S.shared_gsm8k(
            root, "train", cfg.shared_per_source, kind="rl", start=cfg.shared_per_source
        )
    return parts


def row_lengths(ds: Any) -> Any:
    """One row per sample: task, source, turns, prompt and answer length in characters."""
    import pandas as pd

    chat = ds["messages"]
    answered = [m[-1]["role"] == "assistant" for m in chat]
    answers = [m[-1]["content"] if a else "" for m, a in zip(chat, answered)]
    prompts = ["\n".join(t["content"] for t in (m[:-1] if a else m)) for m, a in zip(chat, answered)]
    return pd.DataFrame(
        {
            "task": ds["task"],
            "source": ds["source"],
            "turns": [len(m) for m in chat],
            "prompt_chars": [len(p) for p in prompts],
            "answer_chars": [len(a) for a in answers],
        }
    )


def mix_table(frame: Any) -> Any:
    """Rows and median lengths per task and source (answer length only when there are answers)."""
    table = (
        frame.groupby(["task", "source"])
        .agg(
            rows=("turns", "size"),
            median_prompt_chars=("prompt_chars", "median"),
            median_answer_chars=("answer_chars", "median"),
        )
        .reset_index()
    )
    return table if frame["answer_chars"].any() else table.drop(columns="median_answer_chars")


def processing_table(manifests: dict[str, Any]) -> Any:
    """The processing manifest as a table (one row per step)."""
    import pandas as pd

    rows = [
        {
            "step": s["name"],
            "in": s["count_in"],
            "out": s["count_out"],
            "filtered": s["filtered"],
            "quarantined": s["quarantined"],
            "drop_reasons": s["drop_reasons"],
        }
        for s in manifests["processing"]["steps"]
    ]
    return pd.DataFrame(rows)


def isolation_table(manifests_by_version: dict[str, dict[str, Any]]) -> Any:
    """One row per (version, benchmark) of the isolation manifests, with the notes."""
    import pandas as pd

    rows = [
        {"version": name} | bench | {"notes": "; ".join(m["evaluation_isolation"]["notes"])}
        for name, m in manifests_by_version.items()
        for bench in m["evaluation_isolation"]["benchmarks"]
    ]
    return pd.DataFrame(rows)
