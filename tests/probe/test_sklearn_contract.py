"""Probe passes scikit-learn's own estimator checks (check_estimator), per classifier and task."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import is_classifier, is_regressor
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import actstore
from actstore import Probe

ESTIMATORS = [
    Probe(random_state=0),
    Probe(layers=0, classifier="lda"),
    Probe(layers=0, classifier="mass_mean_iid"),
    Probe(layers=0, classifier="ridge", task="regression"),
]


def _expected(est: Probe) -> dict[str, str]:
    # float32 activations: weighted and repeated fits agree to ~5e-5 relative, not sklearn's 1e-7
    # (test_auto_layers_weights checks the equivalence at a float32 tolerance)
    out = {"check_sample_weight_equivalence_on_dense_data": "float32 features, solver tolerance"}
    if est.task == "regression":
        # float32 activations: a reordered ridge solve differs in the 7th digit (rtol 1e-7)
        out["check_methods_sample_order_invariance"] = "float32 rounding in the ridge solve"
    if est.classifier == "lda":
        # scikit-learn's LDA takes no sample_weight: Probe refuses weights with a clear error
        for check in ("check_sample_weights_pandas_series", "check_sample_weights_not_an_array",
                      "check_sample_weights_list", "check_sample_weights_shape",
                      "check_sample_weights_not_overwritten", "check_classifiers_one_label_sample_weights"):
            out[check] = "LDA takes no sample_weight (refused, tested)"
    return out


@pytest.mark.filterwarnings("ignore")  # the checks provoke warnings on purpose
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected)
def test_sklearn_check_estimator(estimator, check):
    check(estimator)


def test_unfitted_is_both_not_fitted_errors_and_tags_follow_task(arrays):
    X, y, score = arrays
    for method in ("predict", "predict_proba", "decision_function", "evaluate"):
        with pytest.raises(actstore.NotFittedError, match="not fitted"):
            getattr(Probe(), method)(X)
        with pytest.raises(SklearnNotFittedError):
            getattr(Probe(), method)(X)
    assert is_classifier(Probe()) and is_regressor(Probe(task="regression"))
    assert not hasattr(Probe(classifier="ridge"), "predict_proba")
    assert not hasattr(Probe(layers=1, classifier="linear_svm").fit(X, y), "predict_proba")
    # scikit-learn's model selection uses it as a classifier (stratified folds, accuracy)
    scores = cross_val_score(Probe(layers=2, random_state=0), X, y, cv=3)
    assert scores.mean() > 0.85


def test_predict_takes_the_fitted_layers_as_2d_columns(arrays):
    X, y, _ = arrays
    p = Probe(layers=[1, 2], random_state=0).fit(X, y)
    flat = X[:, [1, 2]].reshape(len(X), -1)
    np.testing.assert_array_equal(p.predict(flat), p.predict(X))
    single = Probe(layers=2, random_state=0).fit(X, y)
    np.testing.assert_array_equal(single.predict(X[:, 2]), single.predict(X))
    with pytest.raises(actstore.InvalidArgumentError, match="X has 24 features, but Probe is expecting 48"):
        p.predict(X[:, 2])
    before = X[:, 2].copy()
    Probe(layers=0).fit(X[:, 2], y)
    np.testing.assert_array_equal(X[:, 2], before)  # the caller's array is never scaled in place


def test_bad_feature_arrays_are_clear(arrays):
    import scipy.sparse

    X, y, _ = arrays
    bad = X[:, 2].copy()
    bad[3, 4] = np.nan
    with pytest.raises(actstore.InvalidArgumentError, match="1 NaN or infinite values"):
        Probe(layers=0).fit(bad, y)
    with pytest.raises(actstore.InvalidArgumentError, match="Sparse input is not supported"):
        Probe(layers=0).fit(scipy.sparse.csr_matrix(X[:, 2]), y)
    with pytest.raises(actstore.InvalidArgumentError, match="Reshape your data"):
        Probe(layers=0).fit(X[:, 2, 0], y)
    with pytest.raises(actstore.InvalidArgumentError, match="LinearRegression does not fit task='classification'"):
        from sklearn.linear_model import LinearRegression

        Probe(layers=2, classifier=LinearRegression()).fit(X, y)
    with pytest.raises(actstore.InvalidArgumentError, match="Only binary classification"):
        Probe(layers=2, classifier="mass_mean").fit(X, np.arange(len(y)) % 3)
