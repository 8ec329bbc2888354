"""Sweep display and plots (issue 12, scope 6 / finding 11): best layer first in the repr,
an HTML table, ``progress=``, and honest axes (integer layer ticks, error bars inside [0, 1],
a chance line, no zoom onto the top of the range, the model and cv in the labels)."""

from __future__ import annotations

import numpy as np
import pytest

from actstore import open_dataset
from actstore.cli import main
from actstore.probe import sweep_layers


@pytest.fixture
def figures(monkeypatch):
    """The axes of every figure saved during the test."""
    from matplotlib.figure import Figure

    saved = []
    real = Figure.savefig

    def keep(self, *a, **k):
        ax = self.axes[0]
        saved.append({
            "xticks": [float(t) for t in ax.get_xticks()],
            "ylim": ax.get_ylim(), "title": ax.get_title(), "ylabel": ax.get_ylabel(),
            "hlines": [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"],
            "bar_tops": [float(seg[:, 1].max()) for c in ax.collections
                         for seg in c.get_segments()],
        })
        return real(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def test_repr_puts_the_best_layer_first(probe_dataset):
    sweep = sweep_layers(open_dataset(probe_dataset), "label", cv=3)
    text = repr(sweep)
    assert text.startswith("SweepResult(synthetic: best layer 2, accuracy")
    assert "3-fold CV" in text and "chance" in text
    first_row = text.splitlines()[2].split()
    assert first_row[0] == "2"
    html = sweep._repr_html_()
    assert "best layer 2" in html and "<table" in html


def test_progress_bar(probe_dataset, capsys):
    sweep_layers(open_dataset(probe_dataset), "label", cv=3, progress=True)
    assert "sweep" in capsys.readouterr().err


def test_plot_has_honest_axes(probe_dataset, tmp_path, figures):
    ds = open_dataset(probe_dataset)
    sweep = sweep_layers(ds, "label", cv=3, layers=[0, 2, 3])
    sweep.plot(str(tmp_path / "s.png"))
    fig = figures[-1]
    assert fig["xticks"] == [0.0, 2.0, 3.0]  # the swept layers, no fractional ticks
    assert max(fig["bar_tops"]) <= 1.0 + 1e-9
    labels = ds.labels
    chance = np.unique(labels, return_counts=True)[1].max() / len(labels)
    assert fig["hlines"] and abs(fig["hlines"][0] - chance) < 1e-3
    assert fig["ylim"][0] <= chance and fig["ylim"][1] <= 1.02
    assert "synthetic" in fig["title"] and "3-fold" in fig["ylabel"]


def test_cli_sweep_plot_names_model_and_cv(probe_dataset, tmp_path, figures, capsys):
    assert main(["sweep", probe_dataset, "--cv", "4", "--layers", "1,3", "--no-progress",
                 "--plot", str(tmp_path / "s.png")]) == 0
    fig = figures[-1]
    assert fig["xticks"] == [1.0, 3.0] and "4-fold" in fig["ylabel"]
    assert fig["ylim"][1] - fig["ylim"][0] > 0.1  # not zoomed onto 0.99-1.0


@pytest.mark.slow
def test_demo_plot_names_the_real_model_and_cv(tmp_path, figures):
    from actstore.demo import run_demo

    run_demo(str(tmp_path / "demo"), n_per_task=30, cv=3, progress=False, quiet=True)
    fig = figures[-1]
    assert "sentence-transformers/all-MiniLM-L6-v2" in fig["title"]
    assert "3-fold" in fig["ylabel"]
    assert max(fig["bar_tops"]) <= 1.0 + 1e-9 and len(fig["hlines"]) >= 1
    assert open_dataset(tmp_path / "demo" / "dataset").info.model == \
        "sentence-transformers/all-MiniLM-L6-v2"
