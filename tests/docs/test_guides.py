"""Every page of the documentation site runs as written (offline, on the packaged model)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from docs_runner import parse, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
RUNNABLE = [p for p in PAGES if "```python" in p.read_text()]


def test_the_runner_finds_the_guides():
    names = {p.relative_to(ROOT / "docs").as_posix() for p in RUNNABLE}
    assert {"guides/loading.md", "guides/probes.md", "tutorials/word-valence.md"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: p.relative_to(ROOT / "docs").as_posix())
def test_page_code_runs(page, docs_env, tmp_path):
    parsed = parse(page, docs_env)
    assert parsed.blocks > 0
    result = run(parsed, tmp_path, docs_env)
    assert result.returncode == 0, (
        f"{page.name}: exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-6000:]}")


def test_runner_refuses_a_skip_without_reason(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- docs:skip -->\n```python\nprint(1)\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        parse(page)


def test_runner_runs_hidden_setup_and_checks_in_order(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- docs:setup\n```python\nx = 1\n```\n-->\n"
                    "```python\nx += 1\n```\n"
                    "<!-- docs:check\n```python\nassert x == 3, x\n```\n-->\n")
    parsed = parse(page)
    assert parsed.blocks == 1
    result = run(parsed, tmp_path, {})
    assert result.returncode != 0 and "AssertionError: 2" in result.stderr
