"""Pure metric functions on numpy arrays. No torch, no state."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in y_true or y_pred (or all num_classes)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = range(num_classes) if num_classes is not None else np.union1d(y_true, y_pred)
    scores = []
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[list[int]]:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, int).ravel(), np.asarray(y_pred, int).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size}, {y_pred.size}")
    outside = np.r_[y_true, y_pred]
    outside = outside[(outside < 0) | (outside >= num_classes)]
    if outside.size:
        raise ValueError(f"class index {int(outside[0])} is outside 0..{num_classes - 1}")
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).tolist()


def per_class(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support (rows whose true class it is) of each class, by name.

    Labels are indices into ``class_names``. A class never predicted has precision 0.0, one with no
    rows recall 0.0, and F1 is 0.0 whenever nothing of the class is right (as scikit-learn with
    ``zero_division=0``, and as ``macro_f1``).
    """
    n = len(class_names)
    matrix = np.array(confusion(y_true, y_pred, n), dtype=np.int64).reshape(n, n)
    tp, predicted, support = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    result = {}
    for c, name in enumerate(class_names):
        precision = tp[c] / predicted[c] if predicted[c] else 0.0
        recall = tp[c] / support[c] if support[c] else 0.0
        f1 = 2 * tp[c] / (predicted[c] + support[c]) if tp[c] else 0.0  # = 2PR / (P + R)
        result[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                        "support": int(support[c])}
    return result


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean((np.asarray(y_true, float) - np.asarray(y_pred, float)) ** 2))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float))))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than 2 values."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, float)
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2  # mean of ranks s+1 .. e
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(rankdata(x), rankdata(y))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> dict[str, float]:
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred, num_classes)}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {"mse": mse(y_true, y_pred), "mae": mae(y_true, y_pred),
            "pearson": pearson(y_true, y_pred), "spearman": spearman(y_true, y_pred)}


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (N, D) arrays -> (N,)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.clip(denom, 1e-12, None)


def ranked_pairs(scores: np.ndarray) -> list[tuple[float, int, int]]:
    """Every pair (i < j) of an (N, N) similarity matrix as (score, i, j), most similar first."""
    n = len(scores)
    return sorted(((float(scores[i, j]), i, j) for i in range(n) for j in range(i + 1, n)), reverse=True)
