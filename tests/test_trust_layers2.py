"""One meaning of a layer, follow-up (trust issue, scope 6): the writer, the activation cache,
``pull --layers``, sweep results and the ``layers=`` keyword speak the resolver's language.

On write no model depth is known, so a block is given by its number and the embedding output
by name (``"embeddings"``, stored as lmprobe's ``-1``); a negative layer is refused there.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import actstore
from actstore.cache import UnifiedCache
from actstore.cache.activations import activation_key, space_id
from actstore.cli import main
from actstore.errors import InvalidArgumentError
from actstore.format.writer import DatasetWriter
from actstore.probe import control_task, cross_validate, mdl_probe, report, sweep_layers

N, DIM = 80, 6


def _data(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(N) > 0.5).astype(int)
    emb, b0, b1 = (rng.normal(size=(N, DIM)).astype(np.float32) for _ in range(3))
    emb[:, 0] += 3.0 * (2 * y - 1)  # only the embeddings carry the label
    return {"embeddings": emb, 0: b0, 1: b1}, y


@pytest.fixture(scope="module")
def emb_ds(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("l2") / "emb")
    hidden, y = _data()
    with DatasetWriter(path, model="synthetic", layers=["embeddings", 0, 1], dim=DIM) as w:
        w.add([f"p{i}" for i in range(N)], hidden=hidden, labels=y.tolist())
    return actstore.open_dataset(path), hidden, y


# -- 1. the writer ----------------------------------------------------------------------------
def test_writer_takes_the_embeddings_by_name_and_stores_lmprobe_minus_one(emb_ds):
    ds, hidden, _ = emb_ds
    assert ds.info.layers == ("embeddings", 0, 1)
    view = ds._s.views["last_token"]
    assert view.layers == (-1, 0, 1)                                   # lmprobe's number on disk
    assert view.path(-1, 0) == "tensors/hidden_layer-01_shard000.safetensors"
    assert ds._s.meta["lmprobe:tensors"]["hidden_layers"]["layers"] == [-1, 0, 1]
    np.testing.assert_array_equal(ds.layer("embeddings"), hidden["embeddings"])
    np.testing.assert_array_equal(ds.layer(-1), hidden[1])             # -1: the deepest block


@pytest.mark.parametrize("layers", [[-1, 0, 1], [0, -2]])
def test_writer_refuses_a_negative_layer_with_the_fix(tmp_path, layers):
    with pytest.raises(InvalidArgumentError, match=r"block number explicitly.*'embeddings'.*depth"):
        DatasetWriter(str(tmp_path / "ds"), model="m", layers=layers, dim=DIM)
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").rglob("*.parquet"))


def test_writer_refuses_minus_one_as_a_hidden_key(tmp_path):
    hidden, y = _data()
    w = DatasetWriter(str(tmp_path / "ds"), model="m", layers=["embeddings", 0, 1], dim=DIM)
    with pytest.raises(InvalidArgumentError, match=r"hidden key.*'embeddings'"):
        w.add(["a"] * N, hidden={-1: hidden["embeddings"], 0: hidden[0], 1: hidden[1]})
    w.abort()


# -- 1. the activation cache --------------------------------------------------------------------
def test_cache_takes_the_embeddings_by_name_and_refuses_negatives(tmp_path):
    cache = UnifiedCache(str(tmp_path / "c"))
    hidden, _ = _data()
    prompts = [f"p{i}" for i in range(N)]
    cache.put("m", prompts, {"last_token": {"embeddings": hidden["embeddings"], 0: hidden[0]}})
    assert cache.missing("m", prompts, layers=["embeddings", 0]) == []
    np.testing.assert_array_equal(cache.get("m", prompts, layers=["embeddings"])[:, 0], hidden["embeddings"])
    # the entry is keyed by the stored number, as before: an existing cache keeps its entries
    assert activation_key(space_id("m", None, None), "p0", "last_token", -1) in cache.store
    for call in (lambda: cache.get("m", prompts, layers=[-1]),
                 lambda: cache.missing("m", prompts, layers=[0, -1]),
                 lambda: cache.put("m", prompts, {"last_token": {-1: hidden[1]}}),
                 lambda: cache.to_dataset(str(tmp_path / "o"), "m", prompts, layers=[-1])):
        with pytest.raises(InvalidArgumentError, match=r"block number explicitly.*'embeddings'"):
            call()
    ds = cache.to_dataset(str(tmp_path / "out"), "m", prompts, layers=["embeddings", 0])
    assert ds.info.layers == ("embeddings", 0)
    np.testing.assert_array_equal(ds.layer("embeddings"), hidden["embeddings"])


# -- 2. pull --layers -----------------------------------------------------------------------
def test_cli_pull_layers_accepts_names(monkeypatch, emb_ds, capsys):
    import actstore.hub as hub

    seen = {}

    def fake_pull(repo, *, layers, views, revision, out):
        seen["layers"] = layers
        return emb_ds[0]

    monkeypatch.setattr(hub, "pull_dataset", fake_pull)
    assert main(["pull", "org/x", "--layers", "embeddings,0", "-1", "--out", "/tmp/unused"]) == 0
    assert seen["layers"] == ["embeddings", 0, -1]
    assert main(["pull", "org/x", "--layers", "last,middle"]) == 0
    assert seen["layers"] == ["last", "middle"]
    capsys.readouterr()
    assert main(["pull", "org/x", "--layers", "0,embedings"]) != 0       # a typo: refused at once
    err = capsys.readouterr().err
    assert "--layers" in err and "'embedings'" in err and "'embeddings'" in err


def test_pull_dataset_accepts_layer_names_before_any_download(monkeypatch):
    import actstore.hub as hub

    def no_network(*a, **k):
        raise AssertionError("reached the network")

    import actstore.hub.pull as pull_module  # pull_dataset's own module since the hub split

    monkeypatch.setattr(pull_module, "make_api", no_network)
    with pytest.raises(AssertionError, match="reached the network"):
        hub.pull_dataset("org/x", layers=["embeddings", "last", 0])    # names pass the type check
    with pytest.raises(InvalidArgumentError, match="layers"):
        hub.pull_dataset("org/x", layers=[1.5])


# -- 3. sweep results -------------------------------------------------------------------------
def test_sweep_results_name_the_embeddings(emb_ds, tmp_path):
    ds, _, _ = emb_ds
    sweep = sweep_layers(ds, cv=2, layers=["embeddings", 0, 1])
    assert list(sweep.results["layer"].unique()) == ["embeddings", 0, 1]
    assert list(sweep.to_frame()["layer"]) == ["embeddings", 0, 1]    # numeric order, by name
    assert sweep.best_layer == "embeddings"
    assert "best layer embeddings" in repr(sweep)
    assert "embeddings" in sweep._repr_html_()
    sweep.plot(str(tmp_path / "p.png"))
    only_blocks = sweep_layers(ds, cv=2)
    assert only_blocks.results["layer"].dtype.kind == "i"            # unchanged without embeddings


def test_cli_results_and_report_name_the_embeddings(emb_ds, tmp_path, capsys):
    ds, _, _ = emb_ds
    res = str(tmp_path / "r.parquet")
    assert main(["sweep", ds.url, "--cv", "2", "--layers", "embeddings,0,1", "--results", res,
                 "--no-progress"]) == 0
    assert main(["probe", ds.url, "--cv", "2", "--layer", "embeddings", "--results", res]) == 0
    assert main(["probe", ds.url, "--cv", "2", "--layer", "1", "--results", res]) == 0
    frame = pd.read_parquet(res)
    assert set(frame["layer"]) == {"embeddings", "0", "1"}
    assert -1 not in set(frame["layer"])
    table = report(res, by=["layer"])
    assert list(table["layer"]) == ["embeddings", "0", "1"]          # numeric order, by name
    capsys.readouterr()
    assert main(["report", res, "--by", "layer", "--plot", str(tmp_path / "r.png")]) == 0
    assert "embeddings" in capsys.readouterr().out


def test_report_reads_an_old_results_file_minus_one_as_the_embeddings(tmp_path):
    # results files written before this fix hold the sweep's stored -1 for the embeddings
    old = pd.DataFrame({"dataset": "d", "layer": [-1, -1, 2, 2], "classifier": "lr", "seed": 0,
                        "fold": [0, 1, 0, 1], "accuracy": [0.9, 0.8, 0.6, 0.5]})
    path = str(tmp_path / "old.parquet")
    old.to_parquet(path)
    table = report(path, by=["layer"])
    assert list(table["layer"]) == ["embeddings", "2"]


def test_append_results_refuses_a_negative_layer(tmp_path):
    from actstore.probe import append_results

    with pytest.raises(InvalidArgumentError, match=r"layer -1.*'embeddings'"):
        append_results(str(tmp_path / "r.parquet"), [{"layer": -1, "accuracy": 0.5}])


# -- 5. layers= everywhere ------------------------------------------------------------------
def test_mdl_probe_takes_layers_and_layer_is_a_deprecated_alias(emb_ds):
    ds, _, _ = emb_ds
    new = mdl_probe(ds, layers="embeddings")
    with pytest.warns(DeprecationWarning, match=r"mdl_probe\(layer=\.\.\.\).*layers="):
        old = mdl_probe(ds, layer="embeddings")
    assert new.codelength == old.codelength
    assert new.codelength != mdl_probe(ds, layers=0).codelength
    with pytest.raises(InvalidArgumentError, match="both"):
        mdl_probe(ds, layers=0, layer=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mdl_probe(ds)                                                 # the default warns nothing


def test_control_task_and_cross_validate_take_layer_as_a_deprecated_alias(emb_ds):
    ds, _, _ = emb_ds
    with pytest.warns(DeprecationWarning, match=r"control_task\(layer=\.\.\.\)"):
        got = control_task(ds, layer="embeddings", cv=2, seeds=[0])
    assert got["layers"] == ["embeddings"]
    with pytest.warns(DeprecationWarning, match=r"cross_validate\(layer=\.\.\.\)"):
        frame = cross_validate(ds, layer="embeddings", cv=2, seeds=[0])
    assert set(frame["layers"]) == {"embeddings"}


# -- 4. other places that read info.layers ------------------------------------------------------
def test_info_of_a_dataset_with_embeddings_and_a_block_range(tmp_path, capsys):
    layers = ["embeddings", 0, 1, 2, 3]
    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=layers, dim=2) as w:
        w.add(["a", "b"], hidden={L: np.ones((2, 2)) for L in layers})
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    assert "embeddings, 0–3 (5 layers)" in repr(ds.info)                # was a TypeError
    assert main(["info", ds.url]) == 0
    assert "embeddings, 0–3" in capsys.readouterr().out


def test_dataset_card_snippet_pulls_the_embeddings_by_name(tmp_path):
    from actstore.hub.card import build_dataset_card

    with DatasetWriter(str(tmp_path / "ds"), model="m", layers=["embeddings"], dim=2) as w:
        w.add(["a", "b"], hidden={"embeddings": np.ones((2, 2))})
    card = build_dataset_card(actstore.open_dataset(str(tmp_path / "ds")).info, "org/e")
    assert "layers=['embeddings']" in card and "layers=[-1]" not in card  # -1: the deepest block
