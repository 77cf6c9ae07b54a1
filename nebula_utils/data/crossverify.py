"""Multi-dimensional cross-verification of distilled candidate groups.

Every candidate of a group (see `distillation.py`) gets one `Dim` (score, passed, reason) per
dimension, in gate order:

  format      roles of the prompt, non-empty, not truncated (finish reason "length"), code that
              parses (`ast`), JSON that parses when the task asks for JSON
  verifier    the prompt's rule verifier: math final answer vs ground truth (math-verify), IFEval
              checkers (lm-eval), HumanEval tests in the sandbox; passed = score >= min_verifier_score
  agreement   self-consistency across the k teacher samples: the share of teacher samples whose
              final answer is equivalent to this one's (teacher samples of math-like tasks only)
  heuristics  length in words, the shared anti-hacking guards (empty, echo of the prompt,
              degenerate repetition), and the language (`langdetect`) of the prose
  judge       optional: an LLM judge's 1-10 rating, rescaled to [0, 1]

`passed=None` means the dimension does not apply (no verifier, not a math task, no judge).
A candidate is kept when (a) every dimension its task requires (`keep_rules[task]`, else
`keep_rules["default"]`) applied and passed, and (b) no applicable dimension failed: the
independent signals must agree. A dropped candidate's reason is its first failing gate as
`<gate>:<code>` (`no_signal:<gate>` when a required dimension did not apply).

A group is kept when at least one eligible candidate is kept; its best kept candidate becomes
the SFT answer. A dropped group carries the reason of the candidate that got furthest through
the gates. Counts: groups in = kept + dropped, and the drop reasons add up.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

GATES = ("format", "verifier", "agreement", "heuristics", "judge")
# langdetect guesses wildly on a few words; below 40 letters of prose the language is not judged.
LANGUAGE_MIN_LETTERS = 40
JudgeFn = Callable[[Sequence[str], Sequence[str]], Sequence[float | None]]


@dataclass(frozen=True)
class Dim:
    score: float | None
    passed: bool | None  # None: the dimension does not apply to this candidate
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


NA = Dim(None, None, "n/a")


@dataclass
class FilterRules:
    keep_rules: dict[str, list[str]]  # task (or "default") -> dimensions that must apply and pass
    min_verifier_score: float = 1.0
    min_agreement: float = 0.6  # with k=2 both samples must agree; with k=4, three of four
    min_words: int = 1
    max_words: int = 4000
    language: str = "en"  # "" = no language check
    min_language_prob: float = 0.5
    min_judge_score: float = 0.5
    teacher_only: bool = True  # the dataset's own answer may be chosen/rejected but not the SFT answer
    workers: int = 1

    def __post_init__(self) -> None:
        bad = {d for dims in self.keep_rules.values() for d in dims} - set(GATES)
        if bad:
            raise ValueError(f"keep_rules name unknown dimension(s) {sorted(bad)} (known: {', '.join(GATES)})")
        if "default" not in self.keep_rules:
            raise ValueError("keep_rules needs a 'default' entry for tasks without their own rule")

    def required(self, task: str) -> list[str]:
        return list(self.keep_rules.get(task, self.keep_rules["default"]))


# ------------------------------------------------------------------------------------ gates


def _parses_as_code(text: str, reference: Mapping[str, Any] | None) -> bool:
    from ..verifiers.code import build_program, extract_code

    if reference and all(k in reference for k in ("prompt", "test", "entry_point")):
        program, _ = build_program(text, reference)
    else:
        program = extract_code(text, "")
    try:
        ast.parse(program)
    except SyntaxError:
        return False
    return True


def _wants_json(verifier: str | None, reference: Mapping[str, Any] | None) -> bool:
    ref = reference or {}
    if verifier == "format":
        return bool(ref.get("json") or ref.get("json_schema"))
    return verifier == "ifeval" and "detectable_format:json_format" in (ref.get("instruction_id_list") or [])


def format_gate(
    prompt: Any, text: str, finish_reason: str, task: str, verifier: str | None, reference: Mapping[str, Any] | None
) -> Dim:
    from .schema import message_problems  # schema imports datasets; FilterRules must stay light

    if message_problems(prompt, final_role="user"):
        return Dim(0.0, False, "bad_roles")
    if not text.strip():
        return Dim(0.0, False, "empty")
    if finish_reason == "length":
        return Dim(0.0, False, "truncated")
    if (task == "code" or verifier == "code") and not _parses_as_code(text, reference if verifier == "code" else None):
        return Dim(0.0, False, "unparseable_code")
    if _wants_json(verifier, reference):
        from ..verifiers.format import parse_json_answer

        try:
            parse_json_answer(text)
        except ValueError:
            return Dim(0.0, False, "unparseable_json")
    return Dim(1.0, True, "ok")


def _math_like(task: str, verifier: str | None) -> bool:
    return verifier == "math" or task == "math_reasoning"


def agreement_dims(
    texts: Sequence[str], is_teacher: Sequence[bool], task: str, verifier: str | None, min_agreement: float
) -> list[Dim]:
    """Share of teacher samples whose final answer equals each candidate's (math-like tasks)."""
    n_teacher = sum(is_teacher)
    if not _math_like(task, verifier) or n_teacher < 2:
        return [NA] * len(texts)
    from ..verifiers.math_answer import answers_equal, extract_answer

    answers = [extract_answer(t)[0] for t in texts]
    reps: list[str] = []  # one representative answer per equivalence class
    cls = []
    for ans in answers:
        if ans is None:
            cls.append(None)
            continue
        idx = next((i for i, r in enumerate(reps) if answers_equal(r, ans)[0]), None)
        if idx is None:
            reps.append(ans)
            idx = len(reps) - 1
        cls.append(idx)
    counts = Counter(c for c, t in zip(cls, is_teacher) if t and c is not None)
    dims = []
    for c, teacher in zip(cls, is_teacher):
        if not teacher:  # a dataset answer is not a sample of the teacher: self-consistency does not apply
            dims.append(NA)
        elif c is None:
            dims.append(Dim(0.0, False, "no_answer"))
        else:
            share = counts[c] / n_teacher
            dims.append(Dim(share, share >= min_agreement, "majority" if share >= min_agreement else "disagrees"))
    return dims


_GUARD_CODES = (("empty", "empty"), ("too long", "too_long"), ("echo", "echo"), ("repetition", "repetition"))


def _language(prose: str) -> tuple[str, float]:
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # langdetect is randomised; fix it for reproducible filtering
    try:
        best = detect_langs(prose)[0]
    except LangDetectException:
        return "unknown", 0.0
    return best.lang, best.prob


def heuristics_gate(text: str, prompt_text: str, task: str, rules: FilterRules) -> Dim:
    """Length, anti-hacking guards (echo, repetition) and language; score = share of checks passed."""
    from ..verifiers.base import hacking_guard
    from ..verifiers.math_answer import strip_code

    failed: list[str] = []
    guard = hacking_guard(text, prompt_text)
    if guard:
        failed.append(next((code for key, code in _GUARD_CODES if key in guard), "guard"))
    words = len(re.findall(r"\w+", text))
    if words < rules.min_words:
        failed.append("too_short")
    if words > rules.max_words:
        failed.append("too_long")
    checks = 3
    prose = strip_code(text)
    if rules.language and len(re.findall(r"[^\W\d_]", prose)) >= LANGUAGE_MIN_LETTERS:
        checks += 1
        lang, prob = _language(prose)
        if lang != rules.language or prob < rules.min_language_prob:
            failed.append(f"language_{lang}")
    score = 1.0 - len(set(failed)) / checks
    return Dim(max(0.0, score), not failed, failed[0] if failed else "ok")


# ------------------------------------------------------------------------- cross-verification


@dataclass
class CrossVerified:
    candidates: list[dict[str, Any]]  # one per candidate: group id, index, task, generator, dims, kept, reason
    groups: list[dict[str, Any]]  # one per group: id, kept, best, reason
    rules: FilterRules
    verifier_versions: dict[str, str] = field(default_factory=dict)


def _ref(row: Mapping[str, Any]) -> dict[str, Any] | None:
    ref = row.get("reference")
    if ref is None:
        return None
    ref = json.loads(ref) if isinstance(ref, str) else dict(ref)
    if row.get("verifier") in ("math", "format") and "prompt" not in ref:
        ref["prompt"] = row["prompt"][-1]["content"]
    return ref


def _verifier_dims(rows: Sequence[Mapping[str, Any]], rules: FilterRules) -> tuple[list[list[Dim]], dict[str, str]]:
    """Rule-verifier Dim per candidate; scores already in the group (same verifier version) are reused."""
    from ..verifiers import get_verifier, verify_batch
    from .distillation import verifier_key

    dims = [[NA] * len(r["candidates"]) for r in rows]
    versions = {}
    for name in sorted({r["verifier"] for r in rows if r.get("verifier") and r.get("reference")}):
        verifier = get_verifier(name)
        versions[name], key = verifier.version, verifier_key(verifier)
        todo = []
        for i, row in enumerate(rows):
            if row.get("verifier") != name or not row.get("reference"):
                continue
            for j, cand in enumerate(row["candidates"]):
                stored = json.loads(cand["scores"] or "{}").get(key)
                if stored is None:
                    todo.append((i, j))
                else:
                    dims[i][j] = _verdict(stored, "stored score", rules)
        results = verify_batch(
            verifier,
            [rows[i]["candidates"][j]["content"] for i, j in todo],
            [_ref(rows[i]) for i, _ in todo],
            workers=rules.workers,
        )
        for (i, j), res in zip(todo, results):
            dims[i][j] = _verdict(res.score, res.reason, rules)
    return dims, versions


def _verdict(score: float, reason: str, rules: FilterRules) -> Dim:
    ok = score >= rules.min_verifier_score
    return Dim(float(score), ok, "pass" if ok else _code(reason))


def _code(reason: str) -> str:
    """A short reason code from a verifier's sentence ("wrong answer via boxed (exact)" -> wrong_answer)."""
    head = re.split(r"[(:;,]| via ", reason)[0].strip().lower()
    return re.sub(r"\W+", "_", head).strip("_")[:40] or "failed"


def decide(dims: Mapping[str, Dim], required: Sequence[str]) -> tuple[bool, str, int]:
    """(kept, reason, gates passed before the first failure) for one candidate's dimensions."""
    for pos, gate in enumerate(GATES):
        dim = dims.get(gate, NA)
        if dim.passed is False:
            return False, f"{gate}:{dim.reason}", pos
        if gate in required and dim.passed is None:
            return False, f"no_signal:{gate}", pos
    return True, "kept", len(GATES)


def _best_key(dims: Mapping[str, Dim], logprob: float | None) -> tuple:
    val = lambda g: dims[g].score if dims[g].score is not None else 0.0  # noqa: E731
    return (
        val("verifier"),
        val("agreement"),
        val("judge"),
        val("heuristics"),
        logprob if logprob is not None else -1e9,
    )


def cross_verify(rows: Sequence[Mapping[str, Any]], rules: FilterRules, judge: JudgeFn | None = None) -> CrossVerified:
    """Score every candidate of every group on every dimension and decide what is kept."""
    from .distillation import LOGPROB_KEY

    verifier_dims, versions = _verifier_dims(rows, rules)
    judge_scores = _judge_scores(rows, judge)
    candidates, groups = [], []
    for gi, row in enumerate(rows):
        ref, prompt_text = _ref(row), row["prompt"][-1]["content"]
        meta = json.loads(row.get("candidate_meta") or "[]")
        cands = row["candidates"]
        teacher = [c["generator"] != "dataset" for c in cands]
        agree = agreement_dims(
            [c["content"] for c in cands], teacher, row["task"], row.get("verifier"), rules.min_agreement
        )
        required = rules.required(row["task"])
        recs = []
        for j, cand in enumerate(cands):
            finish = meta[j]["finish_reason"] if j < len(meta) else "stop"
            dims = {
                "format": format_gate(row["prompt"], cand["content"], finish, row["task"], row.get("verifier"), ref),
                "verifier": verifier_dims[gi][j],
                "agreement": agree[j],
                "heuristics": heuristics_gate(cand["content"], prompt_text, row["task"], rules),
                "judge": _judge_dim(judge_scores[gi][j], rules) if judge else NA,
            }
            # agreement is a property of teacher samples: not required of the dataset's answer
            kept, reason, depth = decide(dims, required if teacher[j] else [d for d in required if d != "agreement"])
            eligible = teacher[j] or not rules.teacher_only
            logprob = json.loads(cand["scores"] or "{}").get(LOGPROB_KEY)
            recs.append(
                {
                    "group": row["id"],
                    "index": j,
                    "task": row["task"],
                    "generator": cand["generator"],
                    "eligible": eligible,
                    "dims": dims,
                    "kept": kept,
                    "reason": reason,
                    "depth": depth,
                    "rank_key": _best_key(dims, logprob),
                }
            )
        candidates += recs
        groups.append(_group_decision(row["id"], recs))
    return CrossVerified(candidates, groups, rules, versions)


def _group_decision(group_id: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [r for r in recs if r["kept"] and r["eligible"]]
    if kept:
        best = max(kept, key=lambda r: r["rank_key"])
        return {"id": group_id, "kept": True, "best": best["index"], "reason": "kept"}
    # the reason of the eligible candidate that got furthest: what failed even at best
    furthest = max(recs, key=lambda r: (r["eligible"], r["depth"]))
    reason = furthest["reason"] if furthest["eligible"] else "no_teacher_candidate"
    return {"id": group_id, "kept": False, "best": None, "reason": reason}


def _judge_scores(rows: Sequence[Mapping[str, Any]], judge: JudgeFn | None) -> list[list[float | None]]:
    if judge is None:
        return [[None] * len(r["candidates"]) for r in rows]
    flat = [(r["prompt"][-1]["content"], c["content"]) for r in rows for c in r["candidates"]]
    scores = list(judge([p for p, _ in flat], [a for _, a in flat]))
    out, pos = [], 0
    for r in rows:
        out.append(scores[pos : pos + len(r["candidates"])])
        pos += len(r["candidates"])
    return out


def _judge_dim(score: float | None, rules: FilterRules) -> Dim:
    if score is None:
        return Dim(None, False, "unparsed")
    ok = score >= rules.min_judge_score
    return Dim(float(score), ok, "pass" if ok else "low_rating")


class LLMJudge:
    """LLM-as-judge: a 1-10 helpfulness/correctness rating by a generator, rescaled to [0, 1]."""

    PROMPT = (
        "Rate how helpful and correct the answer is, from 1 (useless or wrong) to 10 (excellent). "
        "Reply with the number only.\n\nQuestion:\n{prompt}\n\nAnswer:\n{answer}"
    )

    def __init__(self, generator: Any, max_new_tokens: int = 4):
        self.generator, self.max_new_tokens = generator, max_new_tokens

    @staticmethod
    def parse(reply: str) -> float | None:
        match = re.match(r"\D*?\b(10|[1-9])\b", reply)
        return (int(match.group(1)) - 1) / 9 if match else None

    def __call__(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float | None]:
        from ..inference.generation import SamplingParams

        texts = [self.PROMPT.format(prompt=p, answer=a) for p, a in zip(prompts, answers)]
        replies = self.generator.generate(texts, SamplingParams(max_new_tokens=self.max_new_tokens))
        return [self.parse(r[0]) for r in replies]


# ---------------------------------------------------------------------------------- outputs


def funnel(result: CrossVerified) -> list[dict[str, Any]]:
    """Effective sample rate after each gate (candidates surviving every gate up to it / all)."""
    total = len(result.candidates)
    rows = [{"gate": "input", "candidates": total, "rate": 1.0 if total else 0.0}]
    for pos, gate in enumerate(GATES):
        alive = sum(1 for c in result.candidates if c["depth"] > pos)
        rows.append({"gate": gate, "candidates": alive, "rate": alive / total if total else 0.0})
    return rows


def dimension_frame(result: CrossVerified) -> Any:
    """One row per candidate: task, generator, kept, reason and each dimension's score/passed."""
    import pandas as pd

    rows = []
    for c in result.candidates:
        row = {k: c[k] for k in ("group", "index", "task", "generator", "kept", "reason")}
        for gate, dim in c["dims"].items():
            row[f"{gate}_score"], row[f"{gate}_passed"] = dim.score, dim.passed
        rows.append(row)
    return pd.DataFrame(rows)


def _quality(dims: Mapping[str, Dim]) -> dict[str, float]:
    return {g: float(d.score) for g, d in dims.items() if d.score is not None}


def sft_rows(rows: Sequence[Mapping[str, Any]], result: CrossVerified) -> list[dict[str, Any]]:
    """Kept groups as SFT samples: the prompt + the best kept candidate, with its dimension scores."""
    by_group = {(c["group"], c["index"]): c for c in result.candidates}
    out = []
    for row, group in zip(rows, result.groups):
        if not group["kept"]:
            continue
        cand = row["candidates"][group["best"]]
        dims = by_group[(row["id"], group["best"])]["dims"]
        out.append(
            {
                "id": row["id"],
                "source": row["source"],
                "license": row["license"],
                "task": row["task"],
                "messages": list(row["prompt"]) + [{"role": "assistant", "content": cand["content"]}],
                "quality": _quality(dims),
                "verifier": row.get("verifier"),
                "verifier_version": result.verifier_versions.get(row.get("verifier") or ""),
                "reference": row.get("reference"),
                "parents": list(row.get("parents") or []),
            }
        )
    return out


def preference_rows(rows: Sequence[Mapping[str, Any]], result: CrossVerified) -> tuple[list[dict[str, Any]], Counter]:
    """Groups with a kept and a dropped candidate as pairs (chosen = best kept, rejected = lowest-ranked dropped)."""
    from .schema import canonical_json

    by_group: dict[str, list[dict]] = {}
    for c in result.candidates:
        by_group.setdefault(c["group"], []).append(c)
    out, drops = [], Counter()
    for row in rows:
        recs = by_group[row["id"]]
        kept = [r for r in recs if r["kept"]]
        failed = [r for r in recs if not r["kept"]]
        if not kept or not failed:
            drops["no_kept_candidate" if not kept else "no_dropped_candidate"] += 1
            continue
        best, worst = max(kept, key=lambda r: r["rank_key"]), min(failed, key=lambda r: r["rank_key"])
        cands = []
        for cand, rec in zip(row["candidates"], recs):
            scores = json.loads(cand["scores"] or "{}") | {
                f"filter:{g}": d.score for g, d in rec["dims"].items() if d.score is not None
            }
            cands.append(dict(cand) | {"scores": canonical_json(scores)})
        out.append(
            {k: row[k] for k in ("id", "source", "license", "task", "prompt")}
            | {
                "candidates": cands,
                "chosen": best["index"],
                "rejected": worst["index"],
                "preference_reason": f"chosen passes every gate; rejected fails {worst['reason']}",
                "parents": list(row.get("parents") or []),
                "verifier": row.get("verifier"),
                "reference": row.get("reference"),
                "candidate_meta": row.get("candidate_meta"),
            }
        )
    return out, drops


def dropped_rows(result: CrossVerified) -> list[dict[str, Any]]:
    """What the quarantine-style dropped file holds: each dropped group with every candidate's verdicts."""
    by_group: dict[str, list[dict]] = {}
    for c in result.candidates:
        by_group.setdefault(c["group"], []).append(c)
    return [
        {
            "id": g["id"],
            "reason": g["reason"],
            "candidates": [
                {
                    "index": c["index"],
                    "generator": c["generator"],
                    "reason": c["reason"],
                    "dims": {k: d.to_dict() for k, d in c["dims"].items()},
                }
                for c in by_group[g["id"]]
            ],
        }
        for g in result.groups
        if not g["kept"]
    ]


def drop_counts(result: CrossVerified) -> Counter:
    return Counter(g["reason"] for g in result.groups if not g["kept"])
