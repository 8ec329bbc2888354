"""The README quickstart's output reads honestly to a newcomer (issue 12).

Its labels were 74% one class, so "0.95" looked good next to an unprinted chance of 0.74;
the sweep table repeated pandas' row numbers beside the layer column and never said which
layer the probe then used; the held-out accuracy printed sixteen digits.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _quickstart() -> str:
    block = README.split("<!-- quickstart -->", 1)[1]
    return re.search(r"```python\n(.*?)```", block, re.S).group(1)


def test_quickstart_output_names_the_layer_and_chance(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__readme__"}
    exec(compile(_quickstart(), "README.md#quickstart", "exec"), scope)
    out = capsys.readouterr().out
    share = sum(scope["labels"]) / len(scope["labels"])
    assert 0.45 <= share <= 0.55, share  # balanced: accuracy means something next to chance
    sweep = scope["sweep"]
    assert f"best layer {sweep.best_layer}" in out and "chance 0.5" in out, out
    assert "\n0 " not in out and "\n0  " not in out  # no pandas row numbers beside the layers
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"held-out accuracy: \d\.\d{3}", last), last
    assert len(scope["test"]) == 60


def test_cli_table_uses_layers_for_probe_as_for_sweep():
    rows = [line for line in README.splitlines() if line.startswith("| `actstore probe")]
    assert rows and "--layers 16" in rows[0] and "--layer " not in rows[0]
