"""One meaning of a layer everywhere (trust issue, scope 6).

``-1`` and the other negatives count from the deepest stored *block* in numeric order (never
the order layers were written, never the embeddings); ``"middle"`` is one block; the
embedding output is asked for by name and stays lmprobe's layer ``-1`` on disk.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import actstore
from actstore.cli import main
from actstore.extraction.layers import resolve_model_layers
from actstore.format.layersel import request, resolve_layer, resolve_layers
from actstore.format.writer import DatasetWriter
from actstore.probe import Probe, control_task, cross_validate, mdl_probe, sweep_layers

N, DIM = 120, 8


def _signal(layers: list[int], carrier: int, seed: int = 0) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Activations per layer where only ``carrier`` holds the label."""
    rng = np.random.default_rng(seed)
    y = (rng.random(N) > 0.5).astype(int)
    hidden = {L: rng.normal(size=(N, DIM)).astype(np.float32) for L in layers}
    hidden[carrier][:, 0] += 3.0 * (2 * y - 1)
    return hidden, y


def _write(path: str, layers: list[int], carrier: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    hidden, y = _signal(layers, carrier)
    # the writer takes the embeddings by name (stored as -1 on disk)
    with DatasetWriter(path, model="synthetic", layers=[request(L) for L in layers], dim=DIM) as w:
        w.add([f"p{i}" for i in range(N)], hidden={request(L): a for L, a in hidden.items()}, labels=y.tolist())
    return hidden, y


@pytest.fixture(scope="module")
def reversed_ds(tmp_path_factory):
    """Layers written deepest first: ``[8, 4, 0, 2]``; only layer 8 carries the label."""
    path = str(tmp_path_factory.mktemp("layers") / "rev")
    hidden, y = _write(path, [8, 4, 0, 2], carrier=8)
    return actstore.open_dataset(path), hidden, y


@pytest.fixture(scope="module")
def embeddings_ds(tmp_path_factory):
    """Embeddings stored (as lmprobe's layer -1) next to blocks 0 and 1."""
    path = str(tmp_path_factory.mktemp("layers") / "emb")
    hidden, y = _write(path, [-1, 0, 1], carrier=1)
    return actstore.open_dataset(path), hidden, y


def test_resolver_counts_negatives_from_the_deepest_block_in_numeric_order():
    assert resolve_layers(-1, [8, 4, 0]) == [8]
    assert resolve_layers([-2, -3], [8, 4, 0]) == [4, 0]
    assert resolve_layers("last", [8, 4, 0]) == [8]
    assert resolve_layers("all", [8, -1, 4, 0]) == [0, 4, 8]        # blocks only, numeric order
    assert resolve_layers(-1, [-1, 0, 1]) == [1]                    # never the embeddings
    assert resolve_layers("embeddings", [-1, 0, 1]) == [-1]
    with pytest.raises(actstore.LayerNotFoundError, match="'embeddings' is not available"):
        resolve_layers("embeddings", [0, 1])


@pytest.mark.parametrize("blocks, middle", [([0, 1, 2, 3, 4, 5], 2), ([8, 4, 0, 2], 2), ([3], 3),
                                            ([0, 1, 2, 3, 4], 2), (list(range(12)), 5)])
def test_middle_is_one_block_the_lower_central_one(blocks, middle):
    assert resolve_layers("middle", blocks) == [middle]
    assert resolve_layer("middle", [-1, *blocks]) == middle
    assert resolve_model_layers("middle", len(blocks)) == [(len(blocks) - 1) // 2]


def test_reader_minus_one_is_the_deepest_block_and_embeddings_by_name(embeddings_ds):
    ds, hidden, _ = embeddings_ds
    assert ds.info.layers == ("embeddings", 0, 1)                   # listed by name ...
    assert ds._s.views["last_token"].layers == (-1, 0, 1)           # ... lmprobe's -1 on disk
    for L in ds.info.layers:                                        # every listed entry reads as itself
        np.testing.assert_array_equal(ds.layer(L), hidden[-1 if L == "embeddings" else L])
    np.testing.assert_array_equal(ds.layer(-1), hidden[1])
    np.testing.assert_array_equal(ds.layer("embeddings"), hidden[-1])
    np.testing.assert_array_equal(ds.layer("last"), hidden[1])
    got = ds.get([3, 1], layers=[-1, "embeddings", 0])
    np.testing.assert_array_equal(got[:, 0], hidden[1][[3, 1]])
    np.testing.assert_array_equal(got[:, 1], hidden[-1][[3, 1]])
    np.testing.assert_array_equal(got[:, 2], hidden[0][[3, 1]])
    batches = list(ds.iter_batches("embeddings", batch_size=50))
    np.testing.assert_array_equal(np.concatenate([b for b, _ in batches]), hidden[-1])


def test_reader_follows_numeric_order_not_storage_order(reversed_ds):
    ds, hidden, _ = reversed_ds
    np.testing.assert_array_equal(ds.layer(-1), hidden[8])
    np.testing.assert_array_equal(ds.layer(-4), hidden[0])
    np.testing.assert_array_equal(ds.layer("middle"), hidden[2])


def test_probe_defaults_follow_numeric_order(reversed_ds):
    ds, _, _ = reversed_ds
    assert Probe().fit(ds).layers_ == [8]
    assert Probe(layers="last").fit(ds).layers_ == [8]
    assert Probe(layers="middle").fit(ds).layers_ == [2]            # one layer, not [4, 0]
    assert Probe(layers="all").fit(ds).layers_ == [0, 2, 4, 8]
    assert Probe().fit(ds).score(ds) > 0.9                           # layer 8 carries the label


def test_probe_minus_one_is_never_the_embeddings(embeddings_ds):
    ds, hidden, y = embeddings_ds
    p = Probe().fit(ds)
    assert p.layers_ == [1] and p.score(ds) > 0.9
    e = Probe(layers="embeddings").fit(ds)
    assert e.layers_ == ["embeddings"]                              # by name, so that ...
    rows = np.arange(N)
    np.testing.assert_array_equal(e.predict(ds), e.predict(ds.get(rows, layers=e.layers_)))  # ... reads them
    np.testing.assert_array_equal(e.predict(ds), e.predict(hidden[-1]))
    both = Probe(layers=["embeddings", 1], random_state=0).fit(ds)
    X = ds.get(rows, layers=[0, 1, "embeddings"])
    np.testing.assert_array_equal(both.predict(X, layers=[0, 1, "embeddings"]), both.predict(ds))
    assert set(both.compute_layer_importance()) == {"embeddings", 1}
    sweep = sweep_layers(ds, layers=["embeddings"], cv=2)
    assert sweep.best_layer == "embeddings"
    assert control_task(ds, layers="embeddings", cv=2, seeds=[0])["layers"] == ["embeddings"]


def test_cross_validate_mdl_and_control_defaults_use_the_deepest_block(reversed_ds):
    ds, _, _ = reversed_ds
    frame = cross_validate(ds, cv=2, seeds=[0])
    assert set(frame["layers"]) == {"8"}
    assert control_task(ds, cv=2, seeds=[0])["layers"] == [8]
    assert mdl_probe(ds).codelength == mdl_probe(ds, layers=8).codelength
    assert mdl_probe(ds).codelength != mdl_probe(ds, layers=0).codelength
    assert sorted(sweep_layers(ds, cv=2).results["layer"].unique()) == [0, 2, 4, 8]


def test_saved_probe_on_the_embeddings_reads_the_embeddings(embeddings_ds, tmp_path):
    ds, hidden, _ = embeddings_ds
    p = Probe(layers="embeddings").fit(ds)
    p.save(str(tmp_path / "p"))
    q = Probe.load(str(tmp_path / "p"))
    assert q.layers_ == ["embeddings"]
    assert json.loads((tmp_path / "p" / "probe.json").read_text())["layers_"] == [-1]  # stored number
    np.testing.assert_array_equal(q.predict(ds), p.predict(hidden[-1]))


def test_cli_probe_without_layer_says_which_it_chose(reversed_ds, capsys):
    ds, _, _ = reversed_ds
    assert main(["probe", ds.url, "--cv", "2"]) == 0
    out, err = capsys.readouterr()
    assert "using layer 8" in err
    assert json.loads(out)["layers"] == "8"


def test_pull_minus_one_is_the_deepest_block(tmp_path):
    # which files pull_dataset(layers=...) downloads; the Hub round trip itself is in tests/hub
    from actstore.hub import _wanted_files

    path = str(tmp_path / "src")
    _write(path, [-1, 0, 1], carrier=1)
    views = actstore.open_dataset(path)._s.views
    deepest = _wanted_files(views, None, [-1], ["last_token"], False)
    embeddings = _wanted_files(views, None, ["embeddings"], ["last_token"], False)
    assert deepest == [views["last_token"].path(1, s) for s in range(len(views["last_token"].shard_rows))]
    assert embeddings == [views["last_token"].path(-1, s) for s in range(len(views["last_token"].shard_rows))]


def test_dataset_card_of_a_dataset_with_embeddings(embeddings_ds):
    from actstore.hub.card import build_dataset_card

    ds, _, _ = embeddings_ds
    card = build_dataset_card(ds.info, "org/emb")
    assert "embeddings, 0, 1" in card                                # the layers column
    assert "ds.layer(0)" in card and "hidden_layer000_shard000" in card
