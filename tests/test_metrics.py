"""Metrics: known hand-computed values and parity with scipy / scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from core.metrics import (accuracy, classification_metrics, cosine_similarity, macro_f1, mae, mse, pearson, rankdata,
                          regression_metrics, spearman)

SEEDS = [0, 1, 2]


# -- known values -----------------------------------------------------------------------------


def test_accuracy_known_value():
    assert accuracy([0, 1, 2, 1], [0, 2, 2, 1]) == pytest.approx(0.75)
    assert accuracy(["a", "b"], ["b", "a"]) == 0.0


def test_accuracy_of_empty_input_is_nan():
    assert math.isnan(accuracy([], []))


def test_macro_f1_known_value():
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 0 -> 0
    y_true, y_pred = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    assert macro_f1(y_true, y_pred) == pytest.approx(1.3 / 3)
    # an absent class 3 counts as F1 0 when all four classes are asked for
    assert macro_f1(y_true, y_pred, num_classes=4) == pytest.approx(1.3 / 4)


def test_macro_f1_perfect_and_all_wrong():
    assert macro_f1([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)
    assert macro_f1([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(0.0)


def test_mse_and_mae_known_values():
    y_true, y_pred = [1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 1.0, 5.0]
    # errors 0.5, 0, -2, 1
    assert mse(y_true, y_pred) == pytest.approx((0.25 + 0 + 4 + 1) / 4)
    assert mae(y_true, y_pred) == pytest.approx((0.5 + 0 + 2 + 1) / 4)


def test_pearson_known_values():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    # x centred: -1, 0, 1; y centred: -1, 2, -1 -> covariance 0
    assert pearson([1, 2, 3], [1, 4, 1]) == pytest.approx(0.0, abs=1e-12)
    # x = 1,2,3 ; y = 1,3,2 -> cov 1, var 2, 2 -> 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_pearson_of_a_constant_is_nan():
    assert math.isnan(pearson([3.0, 3.0, 3.0, 3.0], [1.0, 2.0, 3.0, 4.0]))
    assert math.isnan(pearson([1.0, 2.0, 3.0], [0.5, 0.5, 0.5]))


def test_pearson_of_fewer_than_two_values_is_nan():
    assert math.isnan(pearson([1.0], [2.0]))


def test_rankdata_known_values_with_ties():
    np.testing.assert_array_equal(rankdata([10, 20, 20, 5, 20]), [2.0, 4.0, 4.0, 1.0, 4.0])
    np.testing.assert_array_equal(rankdata([3.0, 1.0, 2.0]), [3.0, 1.0, 2.0])
    np.testing.assert_array_equal(rankdata([7, 7]), [1.5, 1.5])


def test_spearman_known_values():
    # monotone but not linear: spearman is exactly 1, pearson is below 1
    x = [1, 2, 3, 4, 5]
    y = [1, 4, 9, 16, 100]
    assert spearman(x, y) == pytest.approx(1.0)
    assert pearson(x, y) < 0.99
    assert spearman(x, y[::-1]) == pytest.approx(-1.0)


def test_metric_dicts_hold_the_same_values():
    y_true, y_pred = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    assert classification_metrics(y_true, y_pred) == {"accuracy": accuracy(y_true, y_pred),
                                                      "macro_f1": macro_f1(y_true, y_pred)}
    a, b = np.array([0.1, 0.5, 0.2, 0.9]), np.array([0.0, 0.7, 0.1, 0.8])
    assert regression_metrics(a, b) == {"mse": mse(a, b), "mae": mae(a, b), "pearson": pearson(a, b),
                                        "spearman": spearman(a, b)}


def test_cosine_similarity_known_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [-5.0, 0.0], [4.0, 3.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [0.0, 1.0, -1.0, 24 / 25], atol=1e-12)


def test_cosine_similarity_of_a_zero_vector_is_zero_not_nan():
    out = cosine_similarity(np.zeros((1, 3)), np.ones((1, 3)))
    assert np.isfinite(out).all() and out[0] == 0.0


# -- parity with references --------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_and_macro_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, 5, 60), rng.integers(0, 5, 60)
    assert accuracy(y_true, y_pred) == pytest.approx(float(np.mean(y_true == y_pred)))
    assert macro_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    labels = list(range(7))  # two classes that never occur
    assert macro_f1(y_true, y_pred, num_classes=7) == pytest.approx(
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_metrics_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=50)
    y = 0.6 * x + rng.normal(size=50)
    assert mse(x, y) == pytest.approx(float(np.mean((x - y) ** 2)))
    assert mae(x, y) == pytest.approx(float(np.mean(np.abs(x - y))))
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_rankdata_and_spearman_with_ties_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 40).astype(float)  # many ties
    y = np.round(x + rng.normal(scale=2.0, size=40))  # ties too
    np.testing.assert_array_equal(rankdata(x), stats.rankdata(x))
    np.testing.assert_array_equal(rankdata(y), stats.rankdata(y))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
