"""The report's HTML: the headline results table, the evaluation-power table, the runs table, the
lineage as collapsible text trees, and the executed notebook -> one standalone HTML file.

The tables are hand-built HTML strings (a notebook displays them with IPython.display.HTML) rather
than DataFrames: a DataFrame renders its index, one column per field and no colour, which is how
the report used to overflow the page. Every path shown goes through lineage.short_path with the
`bases` the notebook passes ({display prefix: folder}), so no absolute /tmp/... path reaches the page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from .compare import MARKS, RunResult, mark_label
from .lineage import data_version_label, lineage_chain, lineage_lines, short_path

# Scoped to class `nx` and specific enough to win over the nbconvert lab template's
# `.jp-RenderedHTMLCommon table` rules (fixed layout, right-aligned cells, zebra rows).
STYLE = """<style>
.nx { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; font-size: 13px; max-width: 100%; }
.nx caption { caption-side: top; text-align: left; color: #444; padding: 0 0 6px 0; font-size: 12.5px; line-height: 1.4; }
.jp-RenderedHTMLCommon table.nx-t, table.nx-t { border-collapse: collapse; table-layout: auto; margin: 4px 0 14px 0;
  font-size: 13px; width: auto; max-width: 100%; }
.jp-RenderedHTMLCommon table.nx-t th, .jp-RenderedHTMLCommon table.nx-t td, table.nx-t th, table.nx-t td {
  padding: 4px 10px; text-align: left; vertical-align: top; border: none; white-space: normal; }
.jp-RenderedHTMLCommon table.nx-t thead th, table.nx-t thead th { border-bottom: 1.5px solid #333; font-weight: 600; }
.jp-RenderedHTMLCommon table.nx-t tbody tr, table.nx-t tbody tr { background: none; }
.jp-RenderedHTMLCommon table.nx-t tbody tr:hover, table.nx-t tbody tr:hover { background: #f6f8fa; }
table.nx-t tbody tr.sub td { font-style: italic; color: #333; }
table.nx-t tbody tr.avg td { border-top: 1px solid #999; font-weight: 600; }
table.nx-t tbody tr.first td { border-top: 1px solid #ddd; }
table.nx-t td.num, table.nx-t th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.nx-t td.num { white-space: nowrap; }
table.nx-t td.run { text-align: right; font-variant-numeric: tabular-nums; }
table.nx-t th.run { text-align: right; }
table.nx-t .cap { color: #777; font-size: 11px; font-weight: normal; font-style: normal; }
table.nx-t .ci { color: #666; font-size: 11.5px; font-weight: normal; }
table.nx-t .d { font-size: 12px; font-weight: 600; white-space: nowrap; border-radius: 3px; padding: 0 4px; }
table.nx-t .up { color: #116329; background: #dafbe1; }
table.nx-t .down { color: #a40e26; background: #ffebe9; }
table.nx-t .flat { color: #57606a; font-weight: normal; }
table.nx-t .na, table.nx-t .base { color: #8c959f; font-weight: normal; }
table.nx-t code, .nx code { font-size: 11.5px; background: #f3f4f6; padding: 0 3px; word-break: normal; }
.nx .seg { white-space: nowrap; }
.nx details { margin: 2px 0 6px 0; }
.nx summary { cursor: pointer; font-size: 13px; }
.nx div.tree { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 11.5px;
  line-height: 1.35; margin: 4px 0 8px 18px; padding: 6px 8px; background: #f8f8f8; }
.nx div.tl { display: flex; }
.nx div.tl .br { white-space: pre; flex: none; color: #888; }
</style>"""

BASIS_TEXT = {
    "paired": "paired differences",
    "unpaired bound": "no differing items: uncorrelated-runs bound",
    "floor": "0/1 items: ≥4 must flip",
    "mixed": "mixed",
    "": "—",
}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _path(text: Any) -> str:
    """Escaped, in <code>, breakable only after '/' (a run id never splits at its hyphen)."""
    segments = [f'<span class="seg">{_e(part)}</span>' for part in str(text).split("/")]
    return "<code>" + "/<wbr>".join(segments) + "</code>"


def _fmt(x: float, digits: int = 3, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}".replace("-", "−") if sign else f"{x:.{digits}f}"


def _table(caption: str, head: str, body: str, css_class: str = "") -> str:
    return (
        f'<div class="nx">{STYLE}<table class="nx-t {css_class}"><caption>{caption}</caption>'
        f"<thead>{head}</thead><tbody>{body}</tbody></table></div>"
    )


# --------------------------------------------------------------------------- Table 1: results


def _row_order(long, capabilities: Mapping[str, Sequence[str]]) -> list[tuple[str, str, str]]:
    """(column, row css class, label html): benchmarks grouped by capability, a capability mean
    after its benchmarks when it has two or more, the suite average last."""
    cols = long.drop_duplicates("column").set_index("column")
    benches = [c for c in cols.index if cols.at[c, "kind"] == "benchmark"]
    caps = [c for c in cols.index if cols.at[c, "kind"] == "capability"]
    members = {c: [b for b in benches if b in capabilities.get(c[4:], ())] for c in caps}
    out, placed = [], set()
    for cap in caps:
        for i, b in enumerate(members[cap]):
            out.append((b, "first" if i == 0 else "", f'{_e(b)}<br><span class="cap">{_e(cap[4:])}</span>'))
            placed.add(b)
        if len(members[cap]) > 1:
            out.append((cap, "sub", f"{_e(cap[4:])} mean <span class='cap'>({len(members[cap])} benchmarks)</span>"))
    out += [(b, "first", _e(b)) for b in benches if b not in placed]
    if "average" in cols.index:
        out.append(("average", "avg", f"Suite average <span class='cap'>({len(benches)} benchmarks)</span>"))
    return out


def _score_cell(r, row_n: int) -> str:
    if math.isnan(r.score):
        return '<span class="na">—</span>'
    half = (r.ci_hi - r.ci_lo) / 2 if not (math.isnan(r.ci_lo) or math.isnan(r.ci_hi)) else math.nan
    ci = f' <span class="ci">± {_fmt(half, 2)}</span>' if not math.isnan(half) else ""
    if r.n != row_n:  # this run scored another number of items than the baseline
        ci += f' <span class="ci">(n={r.n:,})</span>'
    title = f"95% CI [{_fmt(r.ci_lo)}, {_fmt(r.ci_hi)}], n = {r.n}"
    score = f'<span title="{_e(title)}">{_fmt(r.score)}{ci}</span>'
    if r.mark == "baseline":
        return f'{score}<br><span class="d base">baseline</span>'
    if math.isnan(r.delta):
        return f'{score}<br><span class="d na">Δ n/a {MARKS["n/a"]}</span>'
    tip = (
        f"Δ 95% CI [{_fmt(r.delta_lo, sign=True)}, {_fmt(r.delta_hi, sign=True)}], {r.n_paired} items paired; "
        f"MDE ±{_fmt(r.mde)} ({BASIS_TEXT.get(r.mde_basis, r.mde_basis)})"
    )
    text = f"{_fmt(r.delta, sign=True)} {mark_label(r.mark, r.mde)}"
    return f'{score}<br><span class="d {r.mark}" title="{_e(tip)}">{_e(text)}</span>'


def results_table(long, runs: Sequence[RunResult], baseline_label: str, number: int = 1) -> str:
    """Table 1: rows = benchmarks (grouped by capability), capability means, the suite average;
    columns = runs; each cell 'score ± CI half-width' over 'Δ mark' coloured by the mark."""
    if long.empty:
        return _table(f"Table {number}. No benchmark scores: these runs are not evaluation runs.", "", "")
    capabilities: dict[str, set[str]] = {}
    for run in runs:
        for cap, names in run.capabilities().items():
            capabilities.setdefault(cap, set()).update(names)
    labels = [r.label for r in runs]
    cells = {(r.run, r.column): r for r in long.itertuples()}
    base_n = {r.column: r.n for r in long[long["run"] == baseline_label].itertuples()}
    head = (
        "<tr><th>Benchmark</th><th class='num'>n</th>"
        + "".join(f"<th class='run'>{_e(label)}</th>" for label in labels)
        + "</tr>"
    )
    body = []
    for col, css, label in _row_order(long, capabilities):
        tds = "".join(
            f"<td class='run'>{_score_cell(cells[(lab, col)], base_n.get(col, 0)) if (lab, col) in cells else '—'}</td>"
            for lab in labels
        )
        body.append(f"<tr class='{css}'><td>{label}</td><td class='num'>{base_n.get(col, 0):,}</td>{tds}</tr>")
    caption = (
        f"<b>Table {number}.</b> Score per benchmark (mean per-item score ± half the 95% bootstrap interval) "
        f"and change against <b>{_e(baseline_label)}</b> on the same items. ▲ up / ▼ down: the paired 95% "
        "interval of the change excludes 0; ≈ flat: it contains 0, and MDE is the smallest change these items "
        "could have shown (Table 2). Averages are unweighted means of benchmark scores; their intervals "
        "resample items within each benchmark. Hover a cell for its intervals."
    )
    return _table(caption, head, "".join(body))


# --------------------------------------------------------------------------- Table 2: power


def _power_row(r, target_effect: float) -> str:
    css = {"average": "avg", "capability": "sub"}.get(r.kind, "")
    name = {"average": "Suite average", "capability": f"{r.column[4:]} mean"}.get(r.kind, r.column)
    per = " /bench" if r.kind != "benchmark" else ""
    return (
        f"<tr class='{css}'><td>{_e(name)}</td><td class='num'>{r.n_paired:,}</td>"
        f"<td class='num'>{_fmt(r.delta, sign=True)}</td>"
        f"<td class='num'>[{_fmt(r.delta_lo, sign=True)}, {_fmt(r.delta_hi, sign=True)}]</td>"
        f"<td><span class='d {r.mark}'>{_e(MARKS.get(r.mark, ''))} {_e(r.mark)}</span></td>"
        f"<td class='num'>±{_fmt(r.mde)}</td><td>{_e(BASIS_TEXT.get(r.mde_basis, r.mde_basis))}</td>"
        f"<td class='num'>{r.items_for_target:,}{per}</td></tr>"
    )


def power_table(long, baseline_label: str, target_effect: float, number: int = 2) -> str:
    """Table 2: per compared run, its benchmarks, capability means over two or more benchmarks and
    the suite average: n paired, the change with its 95% interval, the mark, the minimum detectable
    effect with the rule that chose it, and the items per benchmark an MDE of `target_effect` needs."""
    rows = long[(long["mark"] != "baseline") & long["delta"].notna()]
    rows = rows[(rows["kind"] != "capability") | (rows["benchmarks_paired"] > 1)]  # one benchmark: its own row
    if rows.empty:
        return _table(f"Table {number}. No paired comparisons (one run, or no shared items).", "", "")
    order = {"benchmark": 0, "capability": 1, "average": 2}
    head = (
        "<tr><th>Benchmark</th><th class='num'>n paired</th><th class='num'>Δ</th><th class='num'>95% CI of Δ</th>"
        f"<th>Mark</th><th class='num'>MDE</th><th>MDE from</th><th class='num'>n for ±{target_effect:g}</th></tr>"
    )
    body = []
    for run in dict.fromkeys(rows["run"]):
        sub = rows[rows["run"] == run].sort_values("kind", key=lambda k: k.map(order), kind="stable")
        body.append(f"<tr class='first'><td colspan='8'><b>{_e(run)}</b> vs {_e(baseline_label)}</td></tr>")
        body += [_power_row(r, target_effect) for r in sub.itertuples()]
    caption = (
        f"<b>Table {number}.</b> Evaluation power against <b>{_e(baseline_label)}</b>. MDE (minimum detectable "
        "effect) = 1.96 · sd(paired differences) / √n, the smallest change whose paired 95% interval excludes 0 "
        "at the observed variance; when the runs agree on every item the variance is bounded by that of "
        "uncorrelated runs (2p(1−p) at score p); for 0/1 items at least four items must flip. An average's MDE "
        f"is √(Σ MDE²)/k. The last column is the items per benchmark that would bring the MDE to ±{target_effect:g} "
        "at the same variance. A flat change with an MDE far above the effect you care about means too few items, "
        "not no effect."
    )
    return _table(caption, head, "".join(body))


# --------------------------------------------------------------------------- Table 3: runs


def runs_table(
    runs: Sequence[RunResult], trees: Sequence[Mapping[str, Any]], bases: Mapping[str, str | Path], number: int = 3
) -> str:
    """Table 3: one row per run: stage, model, config hash, nearest data version, run folder."""
    head = "<tr><th>Run</th><th>Stage</th><th>Model</th><th>Config hash</th><th>Data version</th><th>Folder</th></tr>"
    body = []
    for run, tree in zip(runs, trees):
        model = run.config.get("model", "")
        model_text = short_path(model, bases) if isinstance(model, str) and "/" in model else str(model or "—")
        body.append(
            f"<tr><td>{_e(run.label)}</td><td>{_e(run.stage)}</td><td>{_path(model_text)}</td>"
            f"<td>{_path(run.config_hash)}</td><td>{_path(data_version_label(tree))}</td>"
            f"<td>{_path(short_path(run.path, bases))}</td></tr>"
        )
    caption = (
        f"<b>Table {number}.</b> The runs compared. The config hash identifies a run's resolved configuration; "
        "data version is the nearest data version in its lineage (producing run / version @ content hash)."
    )
    return _table(caption, head, "".join(body))


def _tree_row(line: str) -> str:
    """One tree line as a flex row: the branch drawing keeps its width and a long line wraps under
    its own text, so the tree's indentation survives a narrow page."""
    branch = len(line) - len(line.lstrip("│├└─ "))
    return f'<div class="tl"><span class="br">{_e(line[:branch])}</span><span>{_e(line[branch:])}</span></div>'


def lineage_html(
    runs: Sequence[RunResult], trees: Sequence[Mapping[str, Any]], bases: Mapping[str, str | Path]
) -> str:
    """One collapsible block per run: the summary line is the chain run ← checkpoint ← training data;
    opened, the whole lineage as a compact text tree (each run, checkpoint and data version once)."""
    blocks = []
    for run, tree in zip(runs, trees):
        chain = lineage_chain(tree, bases)
        rows = "".join(_tree_row(line) for line in lineage_lines(tree, bases))
        blocks.append(
            f"<details><summary><b>{_e(run.label)}</b> — <code>{_e(chain)}</code></summary>"
            f'<div class="tree">{rows}</div></details>'
        )
    return f'<div class="nx">{STYLE}{"".join(blocks)}</div>'


def frame_html(frame, caption: str = "") -> str:
    """A DataFrame as a compact table without its index (for small supporting tables: a 0/1/2
    index says nothing on a page); missing values as —, floats to 3 decimals."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    numeric = [is_numeric_dtype(frame[c]) and not is_bool_dtype(frame[c]) for c in frame.columns]
    head = "<tr>" + "".join(f"<th class='{'num' if n else ''}'>{_e(c)}</th>" for c, n in zip(frame.columns, numeric))
    head += "</tr>"
    body = "".join("<tr>" + "".join(_frame_cell(v) for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return _table(caption, head, body)


def _frame_cell(value: Any) -> str:
    """Missing -> —; a path (has '/') breakable after each '/' so a long checkpoint path does not
    widen the table; floats to 3 decimals, or 2 significant digits below 0.001 (a learning rate of
    5e-05 must not read 0.000)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td class='num'><span class='na'>—</span></td>"
    if isinstance(value, str) and "/" in value:
        return f"<td>{_path(value)}</td>"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{_e(value)}</td>"
    if isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        return f"<td class='num'>{value:.2g}</td>"
    return f"<td class='num'>{_e(value if isinstance(value, int) else _fmt(value))}</td>"


# --------------------------------------------------------------------------- the notebook as a page


def render_html(notebook: str | Path, out: str | Path) -> Path:
    """Render an executed notebook to one standalone HTML file, code cells' input hidden.

    nbconvert's HTMLExporter with exclude_input: outputs (tables, base64-embedded PNG plots) and
    markdown only, so the file reads in any browser without Jupyter. stderr streams (library
    warnings such as tqdm's "IProgress not found") are left out of the page; the executed notebook
    in the run folder keeps them.
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:  # library warnings (tqdm, ...) stay in the executed notebook, not on the page
        if cell.get("outputs"):
            cell.outputs = [
                o for o in cell.outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
            ]
    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True
    )
    body, _ = exporter.from_notebook_node(nb)
    path = atomic_write_text(out, body)
    path.chmod(0o644)  # a report is meant to be shared; the temp file was created 0600
    return path
