"""The documentation site builds from docs/ with `mkdocs build --strict`: every page, link and anchor resolves, the
API reference is rendered from the docstrings and the notebooks of notebooks/ are pages of the site."""

import html
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vitdense import SegmentationTask

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason='mkdocs is not installed: pip install -e ".[docs]" (or ".[dev]") to build and test the docs site',
)


def _text(page: Path) -> str:
    """The visible text of a built page, tags dropped and entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One strict build of the site (~10-15 s on 2 cores), shared by the tests below."""
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about MkDocs 2, not ours to act on
    run = subprocess.run([*cmd, "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return out


def test_api_page_renders_docstrings(site: Path) -> None:
    text = _text(site / "api" / "index.html")
    first_line = inspect.getdoc(SegmentationTask).splitlines()[0]
    assert first_line in text  # the class docstring, from the source
    assert "ignore_index" in text and "mask value excluded from loss and metrics" in text  # an Args: entry
    for name in ("vitdense.SegmentationTask", "vitdense.evaluate", "vitdense.load", "vitdense.models.Backbone"):
        assert f'id="{name}"' in (site / "api" / "index.html").read_text(encoding="utf-8"), name


def test_notebooks_are_rendered(site: Path) -> None:
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 3
    for nb in notebooks:
        page = site / "notebooks" / nb.stem / "index.html"
        assert page.is_file(), f"{nb.name} was not rendered to {page}"
        assert "CHECKPOINT" in _text(page), nb.name  # its parameters cell, as shipped


def test_recipes_page_keeps_the_benchmark_block(site: Path) -> None:
    # benchmarks/across_domains.py --docs rewrites the block between these markers in docs/recipes.md.
    source = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert source.count("<!-- across -->\n") == 1 and source.count("<!-- /across -->\n") == 1
    assert (site / "recipes" / "index.html").is_file()
