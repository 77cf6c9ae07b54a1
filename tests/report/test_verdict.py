"""An ablation's conclusion from its intervals, on comparisons of fixture eval runs with known effects."""

from __future__ import annotations

import numpy as np
import pytest

from nebula_utils.report import compare as rp
from nebula_utils.report.verdict import conclusion_text, verdict
from tests.report.run_folders import SUITE, correlated_scores, write_eval


def compared(tmp_path, rate_gain: float, n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    a, b = {}, {}
    for name, (_, p, _) in SUITE.items():
        a[name], b[name] = correlated_scores(n, p, min(1.0, p + rate_gain), keep=0.9, rng=rng)
    runs = [
        write_eval(tmp_path / f"60_eval-{k}000000", "m", s, seed=i) for i, (k, s) in enumerate((("a", a), ("b", b)))
    ]
    results = rp.load_runs(runs, ["opd", "mopd"])
    return rp.comparison(results, "opd", 500, 0)


def test_a_large_gain_reads_up_and_reproduces_a_positive_claim(tmp_path):
    v = verdict(compared(tmp_path, 0.3, 200), "mopd")
    assert v.mark == "up" and v.low > 0 and v.agrees_with(4.18) == "reproduced" and v.agrees_with(-1) == "contradicted"
    text = conclusion_text(v, 4.18, "MOPD")
    assert text.startswith("**mopd is better than opd** on the average") and "**reproduced**" in text


def test_no_change_on_few_items_reads_flat_with_its_mde(tmp_path):
    v = verdict(compared(tmp_path, 0.0, 12), "mopd")
    assert v.mark == "flat" and v.mde > 0.05
    text = conclusion_text(v, 4.18, "MOPD")
    assert "**No detectable effect**" in text and f"±{100 * v.mde:.2f} points" in text
    assert "**not detectable**" in text and "below this evaluation's MDE" in text


def test_unknown_run_or_column_is_a_clear_error(tmp_path):
    long = compared(tmp_path, 0.1, 20)
    with pytest.raises(ValueError, match="no 'average' cell for run 'grpo'"):
        verdict(long, "grpo")
