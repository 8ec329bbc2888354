"""Named layer selections say what they became; `--layers` everywhere; readable reprs (issue 12).

``"middle"`` on an even number of blocks used to concatenate two layers silently; it is one
block now, and the CLI and ``repr(Probe)`` name it. ``probe`` takes ``--layers`` like ``sweep``
(``--layer`` stays an alias). ``repr(Dataset)`` is short and ``_repr_html_`` a table.
"""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.cli import build_parser, main
from actstore.format.writer import DatasetWriter

LAYERS = ["embeddings", 0, 1, 2, 3, 4, 5]  # the embeddings and six blocks: "middle" is block 2


@pytest.fixture(scope="module")
def six_blocks(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("six") / "ds")
    rng = np.random.default_rng(0)
    n = 40
    with DatasetWriter(path, model="org/tiny", layers=LAYERS, dim=8, pooling="last_token") as w:
        w.add([f"prompt {i}" for i in range(n)],
              hidden={L: rng.standard_normal((n, 8)).astype("float32") for L in LAYERS},
              labels=[i % 2 for i in range(n)])
    return path


def _stderr_lines(capsys, argv: list[str]) -> list[str]:
    assert main(argv) == 0
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(("given", "block"), [("middle", 2), ("last", 5), ("-1", 5)])
def test_probe_says_which_block_a_named_layer_is(capsys, six_blocks, given, block):
    err = _stderr_lines(capsys, ["probe", six_blocks, "--layers", given, "--cv", "2"])
    assert err == [f"--layers {given}: using layer {block} (of the stored blocks 0–5)"], err


@pytest.mark.parametrize(("given", "block"), [("middle", 2), ("last", 5)])
def test_sweep_says_which_block_a_named_layer_is(capsys, six_blocks, given, block):
    err = _stderr_lines(capsys, ["sweep", six_blocks, "--layers", given, "--cv", "2",
                                 "--no-progress"])
    assert err == [f"--layers {given}: using layer {block} (of the stored blocks 0–5)"], err


def test_explicit_layers_print_no_resolution_line(capsys, six_blocks):
    assert _stderr_lines(capsys, ["sweep", six_blocks, "--layers", "1,2", "--cv", "2",
                                  "--no-progress"]) == []
    assert _stderr_lines(capsys, ["probe", six_blocks, "--layers", "3", "--cv", "2"]) == []


def test_probe_takes_layers_like_sweep_and_layer_as_an_alias():
    parser = build_parser()
    for option in ("--layers", "--layer"):
        args = parser.parse_args(["probe", "ds", option, "4,8"])
        assert args.layer == "4,8", option
    sweep = parser.parse_args(["sweep", "ds", "--layers", "4,8"])
    assert sweep.layers == "4,8"
    pull = parser.parse_args(["pull", "org/name", "--layers", "2,3"])
    assert pull.layers == ["2,3"]  # comma lists, as everywhere (parsed by the pull command)


def test_probe_repr_names_the_resolved_block(six_blocks):
    ds = actstore.open_dataset(six_blocks)
    probe = actstore.Probe(layers="middle", random_state=0).fit(ds, "label")
    text = repr(probe)
    assert "layers='middle' resolved to 2" in text and len(text.splitlines()) <= 4, text
    arrays = actstore.Probe(random_state=0).fit(ds.get(list(range(len(ds))), layers=[0, 1, 2]),
                                                ds.labels, layers=[0, 1, 2])
    assert "layers=-1 resolved to 2" in repr(arrays)
    plain = actstore.Probe(layers=[1, 3], random_state=0).fit(ds, "label")
    assert "resolved" not in repr(plain)


def test_dataset_repr_is_short_and_says_a_selection(tmp_path, six_blocks):
    ds = actstore.open_dataset(six_blocks)
    assert "rows=40," in repr(ds) and "rows=5 of 40" in repr(ds.select(range(5)))
    many = list(range(40))
    path = str(tmp_path / "deep")
    with DatasetWriter(path, model="org/deep", layers=many, dim=4, pooling="last_token") as w:
        w.add(["a", "b"], hidden={L: np.zeros((2, 4), "float32") for L in many})
    text = repr(actstore.open_dataset(path))
    assert "\n" not in text and len(text) < 200, text
    assert "[0, 1, 2, 3, ..., 37, 38, 39] (40)" in text


def test_dataset_and_info_show_as_tables_in_notebooks(six_blocks):
    ds = actstore.open_dataset(six_blocks)
    html = ds._repr_html_()
    assert html.startswith("<table>") and "org/tiny" in html and six_blocks in html
    assert "5 of 40 rows" in ds.select(range(5))._repr_html_()
    text = repr(ds.info)  # an embeddings layer broke the info table (a str in a range)
    assert "embeddings, 0–5 (7 layers)" in text


def test_a_layer_list_may_start_with_a_negative_layer(capsys, six_blocks):
    parser = build_parser()  # argparse took "-1,-2" for an option: "expected one argument"
    assert parser.parse_args(["probe", "ds", "--layers", "-1,-2"]).layer == "-1,-2"
    assert parser.parse_args(["sweep", "ds", "--layers", "-2,-1"]).layers == "-2,-1"
    assert parser.parse_args(["extract", "m", "p.txt", "--out", "o", "--layers", "-1,4"]).layers \
        == "-1,4"
    err = _stderr_lines(capsys, ["sweep", six_blocks, "--layers", "-2,-1", "--cv", "2",
                                 "--no-progress"])
    assert err == ["--layers -2,-1: using layers 4, 5 (of the stored blocks 0–5)"], err
