"""Metrics: known hand-computed values and parity with scipy / scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from core.metrics import (accuracy, classification_metrics, confusion, cosine_similarity, macro_f1, mae, mse, pearson,
                          per_class, rankdata, regression_metrics, spearman)

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


def test_per_class_and_confusion_known_values():
    # 3 classes, 7 rows; class 2 ("c") is never predicted.
    y_true = [0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 1, 0]
    # Rows = true class, columns = predicted:
    #   true 0 -> predicted 0, 0, 1 : [2, 1, 0]
    #   true 1 -> predicted 1, 1    : [0, 2, 0]
    #   true 2 -> predicted 1, 0    : [1, 1, 0]
    assert confusion(y_true, y_pred, 3) == [[2, 1, 0], [0, 2, 0], [1, 1, 0]]
    # a: tp 2, predicted 3 (column 0), support 3 (row 0) -> P 2/3, R 2/3, F1 2/3
    # b: tp 2, predicted 4 (column 1), support 2 (row 1) -> P 1/2, R 1,   F1 2 * (1/2 * 1) / (1/2 + 1) = 2/3
    # c: tp 0, never predicted,        support 2 (row 2) -> P 0 (by definition), R 0, F1 0
    result = per_class(y_true, y_pred, ["a", "b", "c"])
    third = pytest.approx(2 / 3)
    assert result == {"a": {"precision": third, "recall": third, "f1": third, "support": 3},
                      "b": {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 2},
                      "c": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}}
    assert all(isinstance(m["support"], int) for m in result.values())
    # macro-F1 is the mean of the per-class F1: (2/3 + 2/3 + 0) / 3 = 4/9
    assert np.mean([m["f1"] for m in result.values()]) == pytest.approx(4 / 9)
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(4 / 9)


def test_a_class_with_no_rows_has_zero_recall_and_an_empty_input_zero_counts():
    assert per_class([0, 0], [0, 1], ["a", "b"])["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert confusion([], [], 2) == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="class index 3 is outside 0..2"):
        confusion([0, 3], [0, 1], 3)


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
def test_per_class_and_confusion_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, 5, 60), rng.integers(0, 4, 60)  # class 4 is never predicted
    names = ["a", "b", "c", "d", "e", "f"]  # "f" never occurs
    labels = list(range(len(names)))
    assert confusion(y_true, y_pred, len(names)) == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    result = per_class(y_true, y_pred, names)
    assert [result[n]["precision"] for n in names] == pytest.approx(precision.tolist())
    assert [result[n]["recall"] for n in names] == pytest.approx(recall.tolist())
    assert [result[n]["f1"] for n in names] == pytest.approx(f1.tolist())
    assert [result[n]["support"] for n in names] == support.tolist()


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
