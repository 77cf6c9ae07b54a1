"""Report figures: training curves, benchmark bars with 95% CIs, capability trade-off, data funnel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..config import ConfigError
from ..io import read_json
from .compare import RunResult
from .lineage import training_runs


def plot_training_curves(runs: Sequence[RunResult], trees: Sequence[Mapping[str, Any]]):
    """Train loss vs step side by side: one panel per report row whose lineage has training runs
    (rows of base models have none), one line per training run in that lineage."""
    import matplotlib.pyplot as plt

    rows = [(run, training_runs(tree)) for run, tree in zip(runs, trees)]
    rows = [(run, dirs) for run, dirs in rows if dirs] or [(None, [])]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows) + 0.6, 3), sharey=True, squeeze=False)
    for ax, (run, dirs) in zip(axes[0], rows):
        for train_dir in dirs:
            log = [h for h in read_json(train_dir / "train_log.json") if "loss" in h and "step" in h]
            ax.plot([h["step"] for h in log], [h["loss"] for h in log], marker=".", label=train_dir.name)
        ax.set(title=run.label if run else "no training runs in any lineage", xlabel="step")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("train loss")
    fig.tight_layout()
    return fig


def plot_benchmark_bars(long, kinds: Sequence[str] = ("benchmark", "average")):
    """Grouped bars: score per benchmark (and the average) per run, with 95% CI error bars."""
    import matplotlib.pyplot as plt

    data = long[long["kind"].isin(kinds)].dropna(subset=["score"])
    cols, runs = list(dict.fromkeys(data["column"])), list(dict.fromkeys(data["run"]))
    if not cols:
        fig, ax = plt.subplots(figsize=(4.2, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no benchmark scores (these runs are not eval runs)", ha="center", va="center")
        return fig
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(cols) * max(1, len(runs)) ** 0.5 + 2), 3.2))
    width = 0.8 / max(1, len(runs))
    for j, name in enumerate(runs):
        sub = data[data["run"] == name].set_index("column").reindex(cols)
        err = np.nan_to_num(np.vstack([sub["score"] - sub["ci_lo"], sub["ci_hi"] - sub["score"]]).clip(min=0))
        ax.bar(np.arange(len(cols)) + j * width, sub["score"], width, yerr=err, capsize=3, label=name)
    ax.set_xticks(np.arange(len(cols)) + width * (len(runs) - 1) / 2, cols, rotation=20)
    ax.set(ylabel="score", title="benchmark scores (95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_tradeoff(long, axes: Sequence[str] = ()):
    """Scatter of two capability averages, one point per run (with CI whiskers)."""
    import matplotlib.pyplot as plt

    caps = list(dict.fromkeys(long.loc[long["kind"] == "capability", "column"]))
    if axes:
        unknown = [a for a in axes if f"cap/{a}" not in caps]
        if unknown or len(axes) != 2:
            raise ConfigError(f"tradeoff_axes: need two of {', '.join(c[4:] for c in caps)}; got {list(axes)}")
        caps = [f"cap/{a}" for a in axes]
    if len(caps) < 2:
        fig, ax = plt.subplots(figsize=(4.2, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no trade-off to draw: {len(caps)} capability scores", ha="center", va="center")
        return fig
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    x, y = (long[long["column"] == c].set_index("run") for c in caps[:2])
    for name in x.index:
        ax.errorbar(
            x.at[name, "score"],
            y.at[name, "score"],
            fmt="o",
            capsize=3,
            label=name,
            xerr=[[x.at[name, "score"] - x.at[name, "ci_lo"]], [x.at[name, "ci_hi"] - x.at[name, "score"]]],
            yerr=[[y.at[name, "score"] - y.at[name, "ci_lo"]], [y.at[name, "ci_hi"] - y.at[name, "score"]]],
        )
    ax.set(xlabel=caps[0][4:], ylabel=caps[1][4:], title="capability trade-off")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_funnel(funnel):
    """Horizontal bars per processing step: rows in (light) and kept (dark), one panel per version."""
    import matplotlib.pyplot as plt

    versions = list(dict.fromkeys(funnel["version"])) or ["(no data versions in lineage)"]
    heights = [max(1, (funnel["version"] == v).sum()) for v in versions]
    fig, axes = plt.subplots(
        len(versions),
        1,
        figsize=(7, 0.8 + 0.3 * sum(heights) + len(versions)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, v in zip(axes[:, 0], versions):
        sub = funnel[funnel["version"] == v]
        ypos = np.arange(len(sub))[::-1]
        ax.barh(ypos, sub["in"], color="#c6dbef", label="in")
        ax.barh(ypos, sub["out"], color="#2171b5", label="out")
        ax.set_yticks(ypos, [s[:40] for s in sub["step"]], fontsize=7)
        ax.set_title(v, fontsize=9)
        if len(sub):
            ax.legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("rows")
    fig.tight_layout()
    return fig
