"""Executed notebook -> one standalone HTML report (code hidden)."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write_text


def render_html(notebook: str | Path, out: str | Path) -> Path:
    """Render an executed notebook to one standalone HTML file, code cells' input hidden.

    nbconvert's HTMLExporter with exclude_input: outputs (tables, base64-embedded PNG plots) and
    markdown only, so the file reads in any browser without Jupyter.
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True
    )
    body, _ = exporter.from_notebook_node(nb)
    path = atomic_write_text(out, body)
    path.chmod(0o644)  # a report is meant to be shared; the temp file was created 0600
    return path
