"""Readable display of what a dataset holds (issue 12, scope 6): a multi-line repr and an
HTML table for DatasetInfo and verify reports, and ``actstore info`` with the format version
next to the package version and the user columns."""

from __future__ import annotations

import numpy as np

import actstore
from actstore.cli import main
from actstore.format.writer import DatasetWriter


def _make(path):
    with DatasetWriter(str(path), model="org/m", layers=[0, 1, 2, 3, 4], dim=4, revision="r1") as w:
        w.add(["a", "b"], hidden={L: np.ones((2, 4)) * L for L in range(5)}, labels=[0, 1],
              metadata={"topic": ["x", "y"]})
    return actstore.open_dataset(path)


def test_info_repr_is_a_short_lines_table(tmp_path):
    info = _make(tmp_path / "ds").info
    text = repr(info)
    lines = text.splitlines()
    assert len(lines) > 8 and max(map(len, lines)) < 100
    assert "org/m @ r1" in text and "0–4 (5 layers)" in text
    assert "format version 2.0" in text and "written by" in text
    html = info._repr_html_()
    assert html.startswith("<table>") and "org/m @ r1" in html


def test_verify_report_repr_and_html(tmp_path):
    report = _make(tmp_path / "ds").verify()
    assert repr(report).startswith("VerifyReport(") and "OK" in repr(report)
    assert "OK" in report._repr_html_()


def test_cli_info_shows_format_version_package_version_and_columns(tmp_path, capsys):
    _make(tmp_path / "ds")
    assert main(["info", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert f"written by    actstore {actstore.__version__}" in out
    assert "format version 2.0" in out and "columns       topic" in out
