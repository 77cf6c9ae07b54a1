"""Report figures: training curves, benchmark bars with 95% CIs, changes against the baseline with
their minimum detectable effects, capability trade-off, data funnel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..config import ConfigError
from ..io import read_json
from .compare import RunResult
from .lineage import training_runs


def plot_training_curves(runs: Sequence[RunResult], trees: Sequence[Mapping[str, Any]], stages: Sequence[str] = ()):
    """Train loss vs step side by side: one panel per report row whose lineage has training runs
    (rows of base models have none), one line per training run in that lineage; with `stages`,
    only the runs of those stages (e.g. the distillation itself, not the SFT that made its teachers)."""
    import matplotlib.pyplot as plt

    def keep(train_dir) -> bool:
        return not stages or train_dir.name.rsplit("-", 1)[0] in stages

    rows = [(run, [d for d in training_runs(tree) if keep(d)]) for run, tree in zip(runs, trees)]
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
        return _no_plot("no benchmark scores (these runs are not eval runs)")
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


MARKERS = ["o", "s", "D", "^", "v", "P", "X", "<", ">", "*"]
MARK_COLOURS = {"up": "#1a7f37", "down": "#cf222e", "flat": "#6e7781", "n/a": "#afb8c1", "baseline": "#24292f"}


def _dodge(points: Sequence[tuple[float, float]], span: float, step_pt: float = 8.0) -> list[tuple[float, int]]:
    """(horizontal offset in points, rank in its group) per point, so that runs at (nearly) the
    same place stay visible side by side: points closer than 2% of the axis span form a group,
    spread `step_pt` apart; the rank stacks their labels."""
    out = [(0.0, 0)] * len(points)
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(points):
        for g in groups:
            gx, gy = points[g[0]]
            if abs(x - gx) <= 0.02 * span and abs(y - gy) <= 0.02 * span:
                g.append(i)
                break
        else:
            groups.append([i])
    for g in groups:
        for k, i in enumerate(g):
            out[i] = ((k - (len(g) - 1) / 2) * step_pt, k)
    return out


def _no_plot(text: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def plot_tradeoff(long, axes: Sequence[str] = ()):
    """Scatter of two capability averages, one point per run with 95% CI whiskers: a distinct
    marker per run (the baseline hollow and larger), each point labelled, and runs that land on
    the same place dodged a few points apart so none hides under another."""
    import matplotlib.pyplot as plt
    from matplotlib.transforms import offset_copy

    caps = list(dict.fromkeys(long.loc[long["kind"] == "capability", "column"]))
    if axes:
        unknown = [a for a in axes if f"cap/{a}" not in caps]
        if unknown or len(axes) != 2:
            raise ConfigError(f"tradeoff_axes: need two of {', '.join(c[4:] for c in caps)}; got {list(axes)}")
        caps = [f"cap/{a}" for a in axes]
    if len(caps) < 2:
        return _no_plot(f"no trade-off to draw: {len(caps)} capability scores")
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    x, y = (long[long["column"] == c].set_index("run") for c in caps[:2])
    names = [n for n in x.index if n in y.index and not np.isnan(x.at[n, "score"]) and not np.isnan(y.at[n, "score"])]
    pts = [(x.at[n, "score"], y.at[n, "score"]) for n in names]
    span = max(np.ptp([p[0] for p in pts] + [p[1] for p in pts]) if pts else 0, 0.05)
    for i, (name, (dx, rank)) in enumerate(zip(names, _dodge(pts, span))):
        base = x.at[name, "mark"] == "baseline"
        tr = offset_copy(ax.transData, fig=fig, x=dx, y=0, units="points")
        xs, ys = x.loc[name], y.loc[name]
        container = ax.errorbar(
            xs["score"],
            ys["score"],
            xerr=[[max(xs["score"] - xs["ci_lo"], 0)], [max(xs["ci_hi"] - xs["score"], 0)]],
            yerr=[[max(ys["score"] - ys["ci_lo"], 0)], [max(ys["ci_hi"] - ys["score"], 0)]],
            fmt=MARKERS[i % len(MARKERS)],
            markersize=11 if base else 7,
            mfc="white" if base else None,
            mew=2 if base else 1,
            capsize=3,
            elinewidth=1,
            alpha=0.9,
            transform=tr,
            zorder=2 if base else 3,
            label=f"{name} (baseline)" if base else name,
        )
        ax.annotate(
            name,
            (xs["score"], ys["score"]),
            xytext=(dx + 8, 4 + 10 * rank),
            textcoords="offset points",
            fontsize=8,
            color=container.lines[0].get_color(),
        )
    # Autoscaling skips artists drawn with an offset transform, so the limits come from the whiskers.
    for setter, frame in ((ax.set_xlim, x), (ax.set_ylim, y)):
        lo, hi = np.nanmin(frame.loc[names, "ci_lo"]), np.nanmax(frame.loc[names, "ci_hi"])
        half = max(hi - lo, 0.1) / 2 * 1.3  # at least a 0.13-wide window: zero-width intervals stay legible
        mid = (lo + hi) / 2
        setter(max(mid - half, -0.05), min(mid + half, 1.05))
    ax.set(xlabel=f"{caps[0][4:]} (mean score)", ylabel=f"{caps[1][4:]} (mean score)", title="capability trade-off")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_deltas(long, kinds: Sequence[str] = ("benchmark", "average")):
    """Forest plot of the change against the baseline: one row per benchmark (and the average),
    a point with its paired 95% interval per compared run (coloured by its mark, runs dodged
    vertically), and the grey band of ±MDE around 0: a change inside the band could not show."""
    import matplotlib.pyplot as plt

    data = long[long["kind"].isin(kinds) & (long["mark"] != "baseline") & long["delta"].notna()]
    if data.empty:
        return _no_plot("no changes to draw: one run, or no items shared with the baseline")
    cols, runs = list(dict.fromkeys(data["column"])), list(dict.fromkeys(data["run"]))
    fig, ax = plt.subplots(figsize=(7.2, 0.9 + 0.42 * len(cols) * max(1, len(runs)) ** 0.6))
    height = 0.7 / len(runs)
    for row, col in enumerate(cols):
        y0 = len(cols) - 1 - row
        for j, name in enumerate(runs):
            sub = data[(data["column"] == col) & (data["run"] == name)]
            if sub.empty:
                continue
            r = sub.iloc[0]
            y = y0 + (len(runs) - 1) / 2 * height - j * height
            ax.fill_betweenx([y - height / 2, y + height / 2], -r["mde"], r["mde"], color="#d0d7de", alpha=0.6, lw=0)
            ax.errorbar(
                r["delta"],
                y,
                xerr=[[max(r["delta"] - r["delta_lo"], 0)], [max(r["delta_hi"] - r["delta"], 0)]],
                fmt=MARKERS[j % len(MARKERS)],
                color=MARK_COLOURS.get(r["mark"], "#333"),
                capsize=3,
                markersize=6,
            )
    ax.axvline(0, color="#333", lw=0.8)
    ax.set_yticks(range(len(cols)), [("suite average" if c == "average" else c) for c in reversed(cols)])
    ax.set(xlabel="change vs baseline (95% CI); grey band: ±MDE", title="changes against the baseline")
    ax.grid(axis="x", alpha=0.3)
    if len(runs) > 1:  # marker shapes name the runs; colours are the marks, so the legend is neutral
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker=MARKERS[j % len(MARKERS)], ls="", color="#444") for j in range(len(runs))]
        ax.legend(handles, runs, fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_funnel(funnel):
    """Horizontal bars per processing step: rows in (light) and kept (dark) with 'kept/in' at the
    bar's end, one panel per version, one legend for the figure."""
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
        ax.barh(ypos, sub["in"], color="#c6dbef", label="rows in")
        ax.barh(ypos, sub["out"], color="#2171b5", label="rows kept")
        for y, kept, total in zip(ypos, sub["out"], sub["in"]):
            ax.text(total, y, f" {kept}/{total}", va="center", fontsize=7)
        ax.set_yticks(ypos, [s[:40] for s in sub["step"]], fontsize=7)
        ax.set_title(v, fontsize=9)
        ax.margins(x=0.12)
    axes[-1, 0].set_xlabel("rows")
    if len(funnel):
        fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=7, loc="upper right", ncols=2)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig
