"""The README, followed as a new user would: its quickstart runs, its commands are CI's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quickstart_snippet_runs_verbatim(tmp_path, monkeypatch, capsys):
    block = README.split("<!-- quickstart -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md#quickstart", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "accuracy_mean" in out and (tmp_path / "quickstart/probe/probe.json").exists()
    last = out.strip().splitlines()[-1]  # accuracy on prompts the probe never saw
    assert last.startswith("held-out accuracy: ") and float(last.split(": ")[1]) > 0.8


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    block = README.split("<!-- newcomer:test -->", 1)[1]
    command = re.search(r"```bash\n(.*?)\n```", block, re.S).group(1)
    install, _, tests = command.partition(" && ")
    assert install == 'pip install -e ".[all,test]"' and tests == "python -m pytest -q"
    lines = [line.strip() for line in ci.splitlines()]
    assert tests in lines  # as its own line: no `|| true` after it
    assert "set -euo pipefail" in ci  # pytest's exit 5 (nothing collected) fails CI
    assert 'wait "$newcomer_pid"' in ci and 'exit "$newcomer_status"' in ci


def test_readme_documents_every_cli_command():
    from actstore.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`actstore {name}" in README, name
    assert "specs/format-v2.md" in README and "benchmarks/RESULTS.md" in README
