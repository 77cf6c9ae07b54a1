"""An ablation's conclusion from its intervals: up, down, or no detectable effect (with the MDE),
set against a paper's claim.

Reads the long comparison table of nebula_utils.report.compare.comparison (one row per run and
column, with the paired delta, its 95% bootstrap interval, the mark and the minimum detectable
effect) and turns one cell into sentences. Claims are given in the paper's unit, points on a
0-100 scale; scores here are fractions, so a claim of +4.18 points is +0.0418.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    run: str
    baseline: str
    column: str
    mark: str  # up | down | flat | n/a
    delta: float
    low: float
    high: float
    mde: float
    n: int

    def agrees_with(self, claim_points: float) -> str:
        """reproduced | contradicted | not detectable: the claim's direction against this interval."""
        if self.mark in ("flat", "n/a"):
            return "not detectable"
        return "reproduced" if (self.delta > 0) == (claim_points > 0) else "contradicted"


def verdict(long, run: str, column: str = "average") -> Verdict:
    """The verdict on `run` against the baseline for one column ("average", a benchmark, "cap/x")."""
    rows = long[(long["run"] == run) & (long["column"] == column)]
    if rows.empty:
        raise ValueError(f"no '{column}' cell for run '{run}' (runs: {', '.join(dict.fromkeys(long['run']))})")
    r = rows.iloc[0]
    base = long[long["mark"] == "baseline"]["run"].iloc[0]
    return Verdict(run, base, column, r["mark"], r.delta, r.delta_lo, r.delta_hi, r.mde, int(r.n_paired))


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}".replace("-", "\u2212")


def conclusion_text(v: Verdict, claim_points: float | None = None, claim: str = "") -> str:
    """Markdown: the direction the interval supports, the MDE when flat, and the claim's fate."""
    if v.mark == "n/a":
        return f"**{v.run}** and **{v.baseline}** share no scored items on {v.column}: no conclusion."
    ci = f"{_pts(v.delta)} points (95% CI [{_pts(v.low)}, {_pts(v.high)}], n = {v.n} paired items)"
    if v.mark == "up":
        text = f"**{v.run} is better than {v.baseline}** on the {v.column}: {ci}; the interval excludes 0."
    elif v.mark == "down":
        text = f"**{v.run} is worse than {v.baseline}** on the {v.column}: {ci}; the interval excludes 0."
    else:
        text = (
            f"**No detectable effect** of {v.run} against {v.baseline} on the {v.column}: {ci}. The interval "
            f"contains 0, and with these items only changes beyond the MDE of ±{100 * v.mde:.2f} points "
            "would have shown."
        )
    if claim_points is None or math.isnan(v.delta):
        return text
    size = claim_points / 100
    fate = v.agrees_with(claim_points)
    text += f" Against the paper ({claim or 'its claim'}: {claim_points:+.2f} points): **{fate}** at this scale"
    if fate == "not detectable":
        if abs(size) < v.mde:
            text += "; an effect of that size is below this evaluation's MDE, so it could not have shown here."
        elif v.low <= size <= v.high:
            text += "; the interval still contains an effect of the paper's size, and also none."
        else:
            text += "; but the interval rules out an effect as large as the paper's (it lies outside the interval)."
    elif v.low <= size <= v.high:
        text += "; the paper's size lies inside the interval."
    else:
        text += f"; the paper's size lies {'above' if size > v.high else 'below'} the interval."
    return text
