"""Token-level pooling (issue 18.1): ``train_pooling`` / ``inference_pooling`` on a full-sequence
dataset equal doing it by hand with ``ds.tokens``, lmprobe's score reduction, and folds that
keep a row's tokens together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import actstore
from actstore import DatasetWriter, Probe
from actstore.errors import InvalidArgumentError, LayerNotFoundError

DIM, LAYERS = 8, [0, 1]


def _write(path: str, n: int = 60, classes: int = 2, seed: int = 0) -> None:
    """Rows of 2..7 tokens; one token of a row carries its class on feature 0 (layer 1)."""
    rng = np.random.default_rng(seed)
    seqs: dict[int, list[np.ndarray]] = {L: [] for L in LAYERS}
    labels = []
    for i in range(n):
        T, lab = int(rng.integers(2, 8)), i % classes
        for L in LAYERS:
            a = rng.normal(size=(T, DIM)).astype(np.float32)
            if L == 1:
                a[int(rng.integers(T)), lab] += 3.0
            seqs[L].append(a)
        labels.append(lab)
    with DatasetWriter(path, model="m", layers=LAYERS, dim=DIM, pooling="all", overwrite=True) as w:
        w.add([f"text {i}" for i in range(n)], hidden=seqs, labels=labels)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fs") / "ds")
    _write(path)
    return actstore.open_dataset(path)


def _tokens(ds, r):
    return np.stack([ds.tokens(r, L) for L in LAYERS], axis=1)  # (T, 2, dim), by hand


def _by_hand(ds):
    toks = [_tokens(ds, r) for r in range(len(ds))]
    rows = np.repeat(np.arange(len(ds)), [t.shape[0] for t in toks])
    return toks, np.concatenate(toks), rows


def test_train_all_is_every_real_token_by_hand(full):
    toks, X, rows = _by_hand(full)
    probe = Probe(layers=LAYERS, train_pooling="all").fit(full)
    hand = Probe(layers=[0, 1]).fit(X, full.labels[rows])
    assert probe.n_train_tokens_ == X.shape[0] == sum(full.column("num_tokens"))  # no padding
    np.testing.assert_allclose(probe._head().W, hand._head().W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.predict_proba(X), hand.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_train_all_repeats_row_weights_per_token(full):
    toks, X, rows = _by_hand(full)
    w = np.linspace(0.5, 2.0, len(full))
    probe = Probe(layers=LAYERS, train_pooling="all").fit(full, sample_weight=w)
    hand = Probe(layers=[0, 1]).fit(X, full.labels[rows], sample_weight=w[rows])
    np.testing.assert_allclose(probe.predict_proba(X), hand.predict_proba(X), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling, reduce", [("mean", lambda t: t.mean(0)), ("first_token", lambda t: t[0]),
                                             ("last_token", lambda t: t[-1])])
def test_train_pooled_rows_by_hand(full, pooling, reduce):
    toks, _, _ = _by_hand(full)
    X = np.stack([reduce(t) for t in toks])
    probe = Probe(layers=LAYERS, train_pooling=pooling).fit(full)
    hand = Probe(layers=[0, 1]).fit(X, full.labels)
    np.testing.assert_allclose(probe.predict_proba(X), hand.predict_proba(X), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("pooling, reduce", [("max", np.max), ("min", np.min), ("score:mean", np.mean),
                                             ("score:last_token", lambda s: s[-1])])
def test_score_pooling_by_hand(full, pooling, reduce):
    probe = Probe(layers=LAYERS, train_pooling="all", inference_pooling=pooling).fit(full)
    plain = Probe(layers=LAYERS, train_pooling="all").fit(full)
    p1 = np.array([reduce(plain.predict_proba(_tokens(full, r))[:, 1]) for r in range(len(full))])
    got = probe.predict_proba(full)
    np.testing.assert_allclose(got[:, 1], p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0)
    np.testing.assert_array_equal(probe.predict(full), (p1 > 0.5).astype(int))
    m = np.array([reduce(plain.decision_function(_tokens(full, r))) for r in range(len(full))])
    np.testing.assert_allclose(probe.decision_function(full), m, rtol=1e-5, atol=1e-6)
    ev = probe.evaluate(full)
    assert ev["accuracy"] == pytest.approx(np.mean((p1 > 0.5) == full.labels))


def test_score_pooling_matches_lmprobe_reduce_scores(full):
    """lmprobe's own reduction of padded per-token probabilities, positive class."""
    from lmprobe.pooling import reduce_scores

    probe = Probe(layers=LAYERS, train_pooling="all").fit(full)
    per_row = [probe.predict_proba(_tokens(full, r)) for r in range(len(full))]
    T = max(len(p) for p in per_row)
    padded = np.zeros((len(full), T, 2))
    mask = np.zeros((len(full), T), dtype=np.int64)
    for r, p in enumerate(per_row):
        padded[r, : len(p)], mask[r, : len(p)] = p, 1
    for name in ("max", "min", "score:mean"):
        want = reduce_scores(torch.from_numpy(padded), name, torch.from_numpy(mask)).numpy()
        got = Probe(layers=LAYERS, train_pooling="all", inference_pooling=name).fit(full).predict_proba(full)
        np.testing.assert_allclose(got[:, 1], want[:, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling, reduce", [("activation:max", lambda t: t.max(0)),
                                             ("activation:min", lambda t: t.min(0)),
                                             ("mean", lambda t: t.mean(0)),
                                             ("first_token", lambda t: t[0])])
def test_activation_pooling_by_hand(full, pooling, reduce):
    probe = Probe(layers=LAYERS, train_pooling="all", inference_pooling=pooling).fit(full)
    X = np.stack([reduce(_tokens(full, r)) for r in range(len(full))])
    np.testing.assert_allclose(probe.predict_proba(full), probe.predict_proba(X), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(probe.predict(full), probe.predict(X))


def test_sweep_folds_never_split_a_row(full, monkeypatch):
    import actstore.probe.folds as folds

    seen = []
    real = folds.make_folds

    def spy(y, cv, task, seed, groups):
        out = real(y, cv, task, seed, groups)
        seen.append((groups, out))
        return out

    monkeypatch.setattr(folds, "make_folds", spy)
    probe = Probe(layers="sweep", train_pooling="all").fit(full)
    (groups, out), = seen
    _, _, rows = _by_hand(full)
    np.testing.assert_array_equal(groups, rows)
    for tr, va in out:
        assert not set(rows[tr]) & set(rows[va])
    assert set(probe.sweep_scores_) == set(LAYERS)


def test_saved_probe_keeps_its_pooling(full, tmp_path):
    probe = Probe(layers=LAYERS, train_pooling="all", inference_pooling="max").fit(full)
    probe.save(tmp_path / "p")
    loaded = Probe.load(tmp_path / "p")
    assert loaded.inference_pooling == "max"
    np.testing.assert_allclose(loaded.predict_proba(full), probe.predict_proba(full), rtol=1e-5, atol=1e-6)


def test_regression_score_mean(tmp_path):
    _write(str(tmp_path / "ds"))
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    y = np.arange(len(ds), dtype=float)
    probe = Probe(layers=LAYERS, task="regression", train_pooling="all", inference_pooling="score:mean").fit(ds, y)
    want = [probe.predict(_tokens(ds, r)).mean() for r in range(len(ds))]
    np.testing.assert_allclose(probe.predict(ds), want, rtol=1e-5, atol=1e-6)


def test_multiclass_max_is_refused_and_mean_is_a_distribution(tmp_path):
    _write(str(tmp_path / "ds"), classes=3)
    ds = actstore.open_dataset(str(tmp_path / "ds"))
    with pytest.raises(InvalidArgumentError, match="multiclass"):
        Probe(layers=LAYERS, train_pooling="all", inference_pooling="max").fit(ds).predict_proba(ds)
    probe = Probe(layers=LAYERS, train_pooling="all", inference_pooling="score:mean").fit(ds)
    np.testing.assert_allclose(probe.predict_proba(ds).sum(1), 1.0)


def test_refusals(full, tmp_path):
    X = np.zeros((4, 8), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match="full-sequence Dataset"):
        Probe(layers=0, train_pooling="all").fit(X, [0, 1, 0, 1])
    with pytest.raises(InvalidArgumentError, match="train_pooling must be"):
        Probe(train_pooling="max").fit(full)
    with pytest.raises(InvalidArgumentError, match="inference_pooling must be"):
        Probe(inference_pooling="score:median").fit(full)
    with DatasetWriter(str(tmp_path / "pooled"), model="m", layers=[0], dim=8) as w:
        w.add(["a", "b", "c", "d"], hidden={0: np.eye(4, 8)}, labels=[0, 1, 0, 1])
    pooled = actstore.open_dataset(str(tmp_path / "pooled"))
    with pytest.raises(LayerNotFoundError, match="pooling='all'"):
        Probe(layers=0, train_pooling="all").fit(pooled)
    probe = Probe(layers=0, inference_pooling="max").fit(pooled)  # arrays and pooled views: as given
    with pytest.raises(LayerNotFoundError, match="pooling='all'"):
        probe.predict(pooled)
    assert probe.predict(np.eye(4, 8)).shape == (4,)


def test_cross_validate_and_sweep_split_rows_and_pool_tokens_by_hand(full):
    from actstore.probe.folds import make_folds

    frame = actstore.cross_validate(full, layers=LAYERS, cv=3, seeds=[0], train_pooling="all",
                                    inference_pooling="max")
    y = np.asarray(full.labels)
    toks = [_tokens(full, r) for r in range(len(full))]
    for k, (tr, va) in enumerate(make_folds(y, 3, "classification", 0, None)):
        X = np.concatenate([toks[r] for r in tr])
        hand = Probe(layers=[0, 1], random_state=0).fit(X, np.repeat(y[tr], [len(toks[r]) for r in tr]))
        p1 = np.array([hand.predict_proba(toks[r])[:, 1].max() for r in va])
        assert frame.loc[k, "accuracy"] == pytest.approx(np.mean((p1 > 0.5) == y[va]))
        assert frame.loc[k, "layers"] == "0,1" and frame.loc[k, "fold"] == k
    sweep = actstore.sweep_layers(full, layers=[1], cv=3, seed=0, train_pooling="all",
                                  inference_pooling="max", keep_probes=True)
    one = actstore.cross_validate(full, layers=[1], cv=3, seeds=[0], train_pooling="all", inference_pooling="max")
    np.testing.assert_allclose(sweep.results["accuracy"].to_numpy(), one["accuracy"].to_numpy())
    assert sweep[1].train_pooling == "all" and sweep[1].predict(full).shape == (len(full),)


def test_mdl_refuses_token_pooling(full):
    with pytest.raises(InvalidArgumentError, match="token pooling"):
        actstore.mdl_probe(full, layers=1, inference_pooling="max")
