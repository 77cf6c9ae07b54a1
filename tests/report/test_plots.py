"""Report figures keep every run visible: the trade-off scatter dodges runs that land on one point
(the old plot hid the base point under the SFT point), and the change plot draws each comparison
with its interval and its ±MDE band."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from nebula_utils.report import compare as rp
from nebula_utils.report import plots

from .run_folders import SUITE, write_eval


@pytest.fixture(scope="module")
def identical(tmp_path_factory):
    """Three eval runs with identical scores on every item (tiny-random in the smoke pipeline
    scores 0 everywhere, so base and SFT coincide) plus one that differs."""
    matplotlib.use("Agg")
    root = tmp_path_factory.mktemp("results") / "smoke"
    rng = np.random.default_rng(3)
    scores = {b: (rng.random(40) < 0.3).astype(float) for b in SUITE}
    better = {b: np.maximum(s, (rng.random(40) < 0.5).astype(float)) for b, s in scores.items()}
    paths = [write_eval(root / f"60_eval-{i}0000000", "tiny-random", scores) for i in range(3)]
    paths.append(write_eval(root / "60_eval-90000000", "tiny-random", better))
    runs = rp.load_runs(paths, ["base", "sft", "sft2", "better"])
    return rp.comparison(runs, "base", resamples=200)


def marker_positions(fig) -> list[tuple[float, float]]:
    """Display coordinates (pixels) of every plotted marker."""
    ax = fig.axes[0]
    return [
        tuple(line.get_transform().transform(line.get_xydata())[0])
        for line in ax.lines
        if line.get_marker() not in ("", "None", None, "|", "_")
    ]


def test_tradeoff_dodges_coinciding_runs_and_keeps_them_inside_the_axes(identical):
    fig = plots.plot_tradeoff(identical, ["math", "instruction_following"])
    ax = fig.axes[0]
    points = marker_positions(fig)
    assert len(points) == 4
    xs = sorted(round(x) for x, _ in points[:3])  # base, sft, sft2: same scores, set ~8 pt apart
    assert len(set(xs)) == 3 and min(np.diff(xs)) >= 8
    box = ax.get_window_extent()
    assert all(box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1 for x, y in points)
    base_line = ax.lines[0]
    assert base_line.get_markerfacecolor() in ("white", (1.0, 1.0, 1.0, 1.0)) and base_line.get_markersize() > 7
    assert [t.get_text() for t in ax.texts] == ["base", "sft", "sft2", "better"]
    assert len({line.get_marker() for line in ax.lines if line.get_marker() not in ("", "None", "|", "_")}) == 4


def test_tradeoff_rejects_unknown_axes(identical):
    with pytest.raises(Exception, match="tradeoff_axes: need two of"):
        plots.plot_tradeoff(identical, ["math", "poetry"])


def test_delta_plot_draws_each_comparison_with_its_mde_band(identical):
    fig = plots.plot_deltas(identical)
    ax = fig.axes[0]
    compared = identical[(identical["mark"] != "baseline") & identical["kind"].isin(["benchmark", "average"])]
    assert len(ax.collections) >= len(compared)  # one ±MDE band per comparison (plus whisker collections)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "suite average" or labels[-1] == "suite average"
    colours = {
        tuple(np.round(matplotlib.colors.to_rgb(line.get_color()), 3))
        for line in ax.lines
        if line.get_marker() in plots.MARKERS
    }
    assert tuple(np.round(matplotlib.colors.to_rgb(plots.MARK_COLOURS["up"]), 3)) in colours
    assert tuple(np.round(matplotlib.colors.to_rgb(plots.MARK_COLOURS["flat"]), 3)) in colours
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sft", "sft2", "better"]


def test_delta_plot_without_comparisons_says_why(identical):
    only_base = identical[identical["run"] == "base"]
    fig = plots.plot_deltas(only_base)
    assert "no changes to draw" in fig.axes[0].texts[0].get_text()
