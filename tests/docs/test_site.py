"""The site builds with warnings as errors, and documents every public name."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import actstore

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = "\n".join(p.read_text() for p in (ROOT / "docs/reference").glob("*.md"))
PUBLIC = [n for n in actstore.__all__ if n not in {"__version__", "errors"}]


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: a broken link, a missing page or a bad reference fails."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                             "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-5000:]
    home = (tmp_path / "site/index.html").read_text()
    assert "Loading shared activations" in home
    api = (tmp_path / "site/reference/probes/index.html").read_text()
    assert "sweep_layers" in api and "Examples" in api  # rendered from the docstrings
    datasets = (tmp_path / "site/reference/datasets/index.html").read_text()
    assert "open_dataset" in datasets
    assert ":func:<code>" not in datasets and ":meth:<code>" not in datasets  # docs/hooks.py


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_is_in_the_reference(name):
    assert re.search(rf"^::: actstore\.{re.escape(name)}$", REFERENCE, re.M), (
        f"actstore.{name} is public but no docs/reference page renders it: add '::: actstore.{name}'")


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(actstore, name)) or ""
    assert doc.strip(), f"actstore.{name} has no docstring"
    assert re.search(r"^Examples?\n-+$", doc, re.M), f"actstore.{name}: docstring has no Examples section"


def test_readme_links_to_the_site():
    readme = (ROOT / "README.md").read_text()
    assert "docs/index.md" in readme and "mkdocs build --strict" in readme


def test_the_format_page_renders_the_normative_spec():
    page = (ROOT / "docs/guides/format.md").read_text()
    assert '--8<-- "specs/format-v2.md"' in page


def test_error_examples_run():
    """The error classes' examples are doctests: they run as printed."""
    import doctest

    import actstore.errors

    result = doctest.testmod(actstore.errors, raise_on_error=False)
    assert result.attempted >= 20 and result.failed == 0
