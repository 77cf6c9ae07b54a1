"""The rendered report page: 90_report through the runner on demo-shaped run folders, then looked at
in a headless browser (Debian `chromium`): it must fit the page width, show no absolute paths, no
DataFrame dumps and no library warnings, and a screenshot is written next to the page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .run_folders import build_demo_results

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Measures, after layout, how far right the page's tables, figures and trees reach.
PROBE = """<script>(function () {
  const right = [...document.querySelectorAll('table, img, div.tree')].map(e => e.getBoundingClientRect().right);
  document.body.setAttribute('data-probe', JSON.stringify(
    {scroll: document.documentElement.scrollWidth, inner: window.innerWidth, right: Math.max(...right)}));
})();</script>"""


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def headless(binary: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict:
    from nebula_utils.pipeline import load_pipeline
    from nebula_utils.runner import run_pipeline

    tmp = tmp_path_factory.mktemp("page")
    results = tmp / "results"
    folders = build_demo_results(results)
    pipe = tmp / "report.yaml"
    params = {
        "runs": [str(folders[k]) for k in ("base", "sft", "sft@24")],
        "labels": ["base", "sft", "sft@24"],
        "baseline": "base",
        "report_name": "demo",
        "bootstrap_resamples": 400,
        "tradeoff_axes": ["math", "instruction_following"],
    }
    pipe.write_text(yaml.safe_dump({"pipeline": "demo", "steps": [{"notebook": "90_report", "params": params}]}))
    assert run_pipeline(load_pipeline(pipe, results), echo=lambda _: None) == {"90_report": "ran"}
    html_path = results / "reports" / "demo.html"
    step = load_pipeline(pipe, results).steps[0]
    return {"tmp": tmp, "results": results, "html": html_path, "text": html_path.read_text(), "run_dir": step.run_dir}


@pytest.mark.slow
def test_page_reads_as_a_results_section(page):
    text = page["text"]
    assert "start_run(" not in text and "rp.comparison" not in text  # code hidden
    for needle in ("Table 1.", "Table 2.", "Table 3.", "Figure 1.", "Evaluation power", "≈ flat (MDE ±", "▲ up"):
        assert needle in text, needle
    assert str(page["results"]) not in text and "/tmp/" not in text  # paths are relative
    assert "TqdmWarning" not in text and "IProgress" not in text  # library warnings stay in the notebook
    assert 'class="dataframe"' not in text  # no DataFrame dumps with raw indices
    assert text.count("<details>") == 3 and text.count("<img") == 4
    metrics = json.loads((page["run_dir"] / "metrics.json").read_text())["metrics"]
    assert metrics["report/mde/sft/average"]["value"] > 0
    csv = (page["run_dir"] / "comparison.csv").read_text().splitlines()[0]
    assert csv.endswith("mark,mde,mde_basis,items_for_target")


@pytest.mark.slow
def test_page_fits_the_width_in_a_headless_browser_and_screenshots(page):
    binary = browser()
    if binary is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on PATH; Debian: apt-get install -y chromium")
    probe = page["tmp"] / "probe.html"
    probe.write_text(page["text"].replace("</body>", PROBE + "</body>"))
    for width in (1000, 1280):
        dom = headless(binary, "--dump-dom", f"--window-size={width},900", probe.as_uri()).stdout
        found = re.search(r'data-probe="([^"]*)"', dom)
        assert found, dom[-500:]
        sizes = json.loads(found.group(1).replace("&quot;", '"'))
        assert sizes["scroll"] <= sizes["inner"] and sizes["right"] <= sizes["inner"], (width, sizes)
    shot = page["html"].with_suffix(".png")
    headless(binary, f"--screenshot={shot}", "--window-size=1100,3600", page["html"].as_uri())
    assert shot.is_file() and shot.stat().st_size > 50_000
    assert Path(shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
