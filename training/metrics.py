"""Binary classification metrics on the violent-class probability (numpy only)."""

from __future__ import annotations

import numpy as np


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, thresholds), thresholds decreasing."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tps = np.cumsum(sorted_labels)[distinct]
    fps = (distinct + 1) - tps
    positives, negatives = max(int(labels.sum()), 1), max(int(len(labels) - labels.sum()), 1)
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    return fpr, tpr, np.r_[np.inf, sorted_scores[distinct]]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    if labels.min() == labels.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tpr, fpr))


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) over decreasing thresholds."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_labels = labels[order]
    tps = np.cumsum(sorted_labels)
    predicted = np.arange(1, len(labels) + 1)
    precision = tps / predicted
    recall = tps / max(int(labels.sum()), 1)
    return np.r_[0.0, recall], np.r_[1.0, precision]


def confusion(labels: np.ndarray, predictions: np.ndarray) -> list[list[int]]:
    """[[TN, FP], [FN, TP]] (rows: true label, columns: predicted)."""
    tn = int(np.sum((labels == 0) & (predictions == 0)))
    fp = int(np.sum((labels == 0) & (predictions == 1)))
    fn = int(np.sum((labels == 1) & (predictions == 0)))
    tp = int(np.sum((labels == 1) & (predictions == 1)))
    return [[tn, fp], [fn, tp]]


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, object]:
    predictions = (scores >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = confusion(labels, predictions)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "accuracy": (tp + tn) / max(len(labels), 1),
        "f1": f1,
        "roc_auc": roc_auc(labels, scores),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "threshold": threshold,
        "n": len(labels),
    }


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximises F1 (chosen on validation, then applied to test)."""
    best_threshold, best_f1 = 0.5, -1.0
    for threshold in np.unique(scores[np.isfinite(scores)]):  # a diverged model's NaN scores choose nothing
        f1 = float(binary_metrics(labels, scores, float(threshold))["f1"])  # type: ignore[arg-type]
        if f1 > best_f1:
            best_threshold, best_f1 = float(threshold), f1
    return best_threshold
