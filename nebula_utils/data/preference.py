"""Preference pairs from candidate groups: chosen/rejected by a score signal, with length-bias guards.

A candidate group (a `preference`-schema row written by 11_distill or 12_filter, or sampled on
policy here) holds every candidate with its scores (`verifier:<name>@<version>`, `filter:<gate>`,
`teacher_mean_logprob`...). `build_pairs` turns each group into at most one pair:

  signal      the score that orders candidates: "verifier" (the best `verifier:*` score),
              "judge" (12_filter's `filter:judge`) or an exact score key (e.g. `reward:<model>`)
  useful      a candidate may be chosen only when it is useful: not truncated (finish reason
              "length" or a failed `filter:format` gate) and, when a rule verifier scored it,
              passing (>= pass_threshold). A judge or reward model that likes a long answer
              the verifier fails can therefore never make it the chosen one.
  margin      signal(chosen) - signal(rejected) >= min_margin, else the group is dropped
              (ties carry no preference, and DPO on near-ties mostly learns noise)
  length      length-matched pairs: max(words) / min(words) <= max_length_ratio, so length
              cannot explain the preference (verbosity is the best-documented DPO exploit:
              chosen answers are longer than rejected ones in most human-preference sets).
              The one exception is "long but useless": a rejected candidate LONGER than the
              chosen one that is not useful is kept on purpose (`keep_long_useless`), since such
              a pair teaches the opposite of the length bias.

Among equally scored useful candidates the shorter one is chosen; among the rejected ones the
lowest-scored, then the closest in length. Every pair keeps a `preference_reason` naming the
signal values, the word counts and the guard that admitted it; dropped groups are counted by
reason so the processing step balances.

On-policy pairs (Tülu 3 samples its preference data from the policy being trained): sample k
answers per prompt from the current policy (inference.generation), score them with the rule
verifiers (data.distillation.distill does both), then pair best against worst with the same rules.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

SIGNALS = ("verifier", "judge")  # or any exact score key
DROP_REASONS = ("no_signal", "no_useful_candidate", "margin_below_min", "length_unmatched", "unpaired_group")


@dataclass(frozen=True)
class PairRules:
    signal: str = "verifier"
    min_margin: float = 0.5
    pass_threshold: float = 1.0  # a verifier score below this makes a candidate not useful
    max_length_ratio: float = 1.5  # 0 = no length matching
    keep_long_useless: bool = True

    def __post_init__(self) -> None:
        if not self.signal:
            raise ValueError("PairRules.signal: name 'verifier', 'judge' or a score key")
        if self.min_margin < 0 or not 0 <= self.pass_threshold <= 1:
            raise ValueError(f"PairRules: min_margin={self.min_margin} >= 0, pass_threshold in [0, 1]")
        if self.max_length_ratio and self.max_length_ratio < 1:
            raise ValueError(f"PairRules.max_length_ratio: 0 (off) or >= 1, got {self.max_length_ratio}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def words(text: str) -> int:
    """Length in words (\\w+ runs), at least 1 so that ratios are defined."""
    return max(1, len(re.findall(r"\w+", text)))


def _scores(cand: Mapping[str, Any]) -> dict[str, float]:
    raw = cand.get("scores") or "{}"
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def _verifier_score(scores: Mapping[str, float]) -> float | None:
    values = [v for k, v in scores.items() if k.startswith("verifier:") and v is not None]
    return max(values) if values else None


def signal_value(scores: Mapping[str, float], signal: str) -> float | None:
    """The candidate's value of `signal` (None when it was not scored on it)."""
    if signal == "verifier":
        return _verifier_score(scores)
    if signal == "judge":
        return scores.get("filter:judge")
    return scores.get(signal)


def usefulness(scores: Mapping[str, float], finish_reason: str | None, pass_threshold: float) -> str:
    """'ok', or why the candidate may not be chosen: truncated | format | fails_verifier."""
    if finish_reason == "length":
        return "truncated"
    if scores.get("filter:format") == 0.0:
        return "format"
    verified = _verifier_score(scores)
    if verified is not None and verified < pass_threshold:
        return "fails_verifier"
    return "ok"


@dataclass
class _Cand:
    index: int
    value: float | None
    words: int
    useful: str


def _candidates(group: Mapping[str, Any], rules: PairRules) -> list[_Cand]:
    meta = json.loads(group.get("candidate_meta") or "[]")
    out = []
    for i, cand in enumerate(group["candidates"]):
        scores = _scores(cand)
        finish = meta[i].get("finish_reason") if i < len(meta) and meta[i] else None
        out.append(
            _Cand(
                i,
                signal_value(scores, rules.signal),
                words(cand["content"]),
                usefulness(scores, finish, rules.pass_threshold),
            )
        )
    return out


def _ratio(a: int, b: int) -> float:
    return max(a, b) / min(a, b)


def pick_pair(group: Mapping[str, Any], rules: PairRules) -> tuple[int | None, int | None, str]:
    """(chosen, rejected, preference_reason), or (None, None, drop reason code) for one group."""
    cands = [c for c in _candidates(group, rules) if c.value is not None]
    if len(cands) < 2:
        return None, None, "no_signal"
    useful = [c for c in cands if c.useful == "ok"]
    if not useful:
        return None, None, "no_useful_candidate"
    best = max(useful, key=lambda c: (c.value, -c.words, -c.index))
    below = [c for c in cands if c.index != best.index and best.value - c.value >= rules.min_margin]
    if not below:
        return None, None, "margin_below_min"
    guard = rules.max_length_ratio
    matched = [c for c in below if not guard or _ratio(best.words, c.words) <= guard]
    head = f"{rules.signal} {best.value:g} vs {{v:g}} (margin >= {rules.min_margin:g}); words {best.words} vs {{w}}"
    if matched:
        rej = min(matched, key=lambda c: (c.value, _ratio(best.words, c.words), c.index))
        tail = f" (ratio {_ratio(best.words, rej.words):.2f} <= {guard:g})" if guard else ""
        return best.index, rej.index, head.format(v=rej.value, w=rej.words) + tail
    long_useless = [c for c in below if c.words > best.words and c.useful != "ok"]
    if rules.keep_long_useless and long_useless:
        rej = min(long_useless, key=lambda c: (c.value, -c.words, c.index))
        return (
            best.index,
            rej.index,
            head.format(v=rej.value, w=rej.words) + f"; rejected is long but useless ({rej.useful})",
        )
    return None, None, "length_unmatched"


def build_pairs(groups: Sequence[Mapping[str, Any]], rules: PairRules) -> tuple[list[dict[str, Any]], Counter]:
    """Pair rows (the group with new chosen/rejected/preference_reason) and drops by reason.

    A KTO group (labels, no chosen/rejected) with one desirable and one undesirable candidate
    is paired as any other group when its candidates carry the signal; otherwise it is dropped
    as `unpaired_group` (32_kto reads such groups directly).
    """
    out, drops = [], Counter()
    for group in groups:
        chosen, rejected, reason = pick_pair(group, rules)
        if chosen is None:
            labelled = group.get("chosen") is None and all(c.get("label") is not None for c in group["candidates"])
            drops["unpaired_group" if labelled and reason == "no_signal" else reason] += 1
            continue
        out.append(dict(group) | {"chosen": chosen, "rejected": rejected, "preference_reason": reason})
    return out, drops


def length_bias(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per pair: 1.0 when the chosen answer is longer (in words), and log(words chosen / words rejected).

    A set without length bias has a mean near 0.5 and 0.0; the stage reports both with CIs
    before (the input's own chosen/rejected) and after pairing.
    """
    longer, log_ratio = [], []
    for row in rows:
        if row.get("chosen") is None or row.get("rejected") is None:
            continue
        wc = words(row["candidates"][row["chosen"]]["content"])
        wr = words(row["candidates"][row["rejected"]]["content"])
        longer.append(1.0 if wc > wr else 0.0)
        log_ratio.append(math.log(wc / wr))
    return {"chosen_longer": longer, "log_length_ratio": log_ratio}


# ------------------------------------------------------------------------------- on-policy pairs


def prompt_records_from_groups(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prompt records (as data.distillation.prompt_records returns) from preference rows, so the
    policy can answer the prompts of existing candidate groups."""
    out = []
    for row in rows:
        prompt = [{"role": t["role"], "content": t["content"]} for t in row["prompt"]]
        out.append(
            {k: row[k] for k in ("id", "source", "license", "task")}
            | {
                "prompt": prompt,
                "verifier": row.get("verifier"),
                "reference": row.get("reference"),
                "original": None,
                "parents": list(row.get("parents") or []),
            }
        )
    return out


def on_policy_groups(
    generator: Any, records: Sequence[Mapping[str, Any]], params: Any, workers: int = 1
) -> list[dict]:
    """k = params.n answers per prompt from the policy, each scored by the prompt's rule verifier
    (and the policy's mean token log-prob when params.logprobs): candidate groups for build_pairs."""
    from .distillation import distill

    return distill(generator, records, params, include_original=False, workers=workers)


# ------------------------------------------------------------------------------- trainer formats


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _prompt(row: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": t["role"], "content": t["content"]} for t in row["prompt"]]


def dpo_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """TRL's conversational preference format: {prompt, chosen, rejected} (chat messages)."""
    out = []
    for row in rows:
        if row.get("chosen") is None or row.get("rejected") is None:
            continue
        cands = row["candidates"]
        out.append(
            {
                "prompt": _prompt(row),
                "chosen": _assistant(cands[row["chosen"]]["content"]),
                "rejected": _assistant(cands[row["rejected"]]["content"]),
            }
        )
    return out


def kto_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """TRL's unpaired format {prompt, completion, label}: a pair's chosen answer is desirable and
    its rejected answer undesirable; a KTO group's candidates keep their own labels."""
    out = []
    for row in rows:
        cands = row["candidates"]
        if row.get("chosen") is not None and row.get("rejected") is not None:
            labelled = [(cands[row["chosen"]], True), (cands[row["rejected"]], False)]
        else:
            labelled = [(c, bool(c["label"])) for c in cands if c.get("label") is not None]
        out += [
            {"prompt": _prompt(row), "completion": _assistant(c["content"]), "label": label} for c, label in labelled
        ]
    return out
