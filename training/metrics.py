"""Binary classification metrics on the violent-class probability (numpy only)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    positives = int(labels.sum())
    return {
        "precision": precision,
        "recall": recall,
        "accuracy": (tp + tn) / max(len(labels), 1),
        # What always answering the larger class scores: an accuracy below it means the model,
        # at this threshold, is worse than no model.
        "majority_accuracy": max(positives, len(labels) - positives) / max(len(labels), 1),
        "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
        "f1": f1,
        "roc_auc": roc_auc(labels, scores),
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "threshold": threshold,
        "n": len(labels),
    }


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximises F1 (the ``f1`` rule; see :func:`choose_threshold`)."""
    best_threshold, best_f1 = 0.5, -1.0
    for threshold in np.unique(scores[np.isfinite(scores)]):  # a diverged model's NaN scores choose nothing
        f1 = float(binary_metrics(labels, scores, float(threshold))["f1"])  # type: ignore[arg-type]
        if f1 > best_f1:
            best_threshold, best_f1 = float(threshold), f1
    return best_threshold


THRESHOLD_RULES = ("fpr", "precision", "f1")
DEFAULT_RULE = "fpr"
DEFAULT_TARGETS = {"fpr": 0.05, "precision": 0.9, "f1": 0.0}


@dataclass(frozen=True)
class OperatingPoint:
    """The decision threshold chosen on validation, how, and what it achieved there."""

    threshold: float
    rule: str
    target: float
    val_recall: float
    val_false_positive_rate: float
    val_precision: float
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"threshold": self.threshold, "rule": self.rule, "target": self.target, "val_recall": self.val_recall,
                "val_false_positive_rate": self.val_false_positive_rate, "val_precision": self.val_precision,
                "warnings": list(self.warnings)}


def choose_threshold(labels: np.ndarray, scores: np.ndarray, rule: str = DEFAULT_RULE, target: float | None = None) -> OperatingPoint:
    """The operating point on validation, by a rule that suits moderation.

    - ``fpr`` (default, target 0.05): the lowest threshold whose false-alarm rate on validation
      is at most ``target`` — the most violence caught for a bounded number of false alarms a
      moderator must dismiss.
    - ``precision`` (target 0.9): the lowest threshold whose precision is at least ``target``.
    - ``f1``: the F1 maximum. On a weak model it drifts to "everything is violent" (recall 1,
      accuracy at the positive rate), which is why it is not the default.

    A degenerate choice warns (and the warnings travel into metrics.json and the report): a
    validation split with one class only (the threshold falls back to 0.5), non-finite scores,
    a threshold that flags every validation frame, or a rule whose target cannot be met.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")
    target = DEFAULT_TARGETS[rule] if target is None else float(target)
    warnings: list[str] = []
    finite = np.isfinite(scores)
    if not finite.all():
        warnings.append(f"{int((~finite).sum())} validation score(s) are not finite (a diverged model?)")
    positives, negatives = int(labels[finite].sum()), int(len(labels[finite]) - labels[finite].sum())
    if positives == 0 or negatives == 0:
        warnings.append(f"the validation split has {positives} positive and {negatives} negative frame(s): no threshold can be "
                        "chosen on it; 0.5 is used")
        return _point(labels, scores, 0.5, rule, target, warnings)
    labels_f, scores_f = labels[finite], scores[finite]
    if rule == "f1":
        threshold = best_f1_threshold(labels_f, scores_f)
    else:
        candidates = np.unique(scores_f)  # ascending: the lowest threshold that meets the target catches the most
        threshold = float("nan")
        for candidate in candidates:
            m = binary_metrics(labels_f, scores_f, float(candidate))
            value = float(m["false_positive_rate"] if rule == "fpr" else m["precision"])  # type: ignore[arg-type]
            if (value <= target) if rule == "fpr" else (value >= target):
                threshold = float(candidate)
                break
        if not math.isfinite(threshold):
            # Just above the highest validation score: nothing flagged there (capped at 1, the
            # probability scale the manifest holds; a score of exactly 1 is still flagged).
            threshold = min(float(np.nextafter(candidates[-1], np.inf)), 1.0)
            warnings.append(f"no threshold reaches {rule} {'≤' if rule == 'fpr' else '≥'} {target} on validation: "
                            "the model flags nothing there")
    flagged = float((scores_f >= threshold).mean())
    if flagged >= 0.95:
        warnings.append(f"threshold {threshold:.4g} flags {flagged:.0%} of validation frames as violent: the model does not separate the classes")
    m = binary_metrics(labels_f, scores_f, threshold)
    if float(m["accuracy"]) < float(m["majority_accuracy"]) - 0.05:  # type: ignore[arg-type]
        warnings.append(f"at threshold {threshold:.4g} validation accuracy {float(m['accuracy']):.3f} is below always answering the "  # type: ignore[arg-type]
                        f"larger class ({float(m['majority_accuracy']):.3f})")  # type: ignore[arg-type]
    return _point(labels, scores, threshold, rule, target, warnings)


def _point(labels: np.ndarray, scores: np.ndarray, threshold: float, rule: str, target: float, warnings: list[str]) -> OperatingPoint:
    m = binary_metrics(labels, np.nan_to_num(scores, nan=-np.inf), threshold)
    return OperatingPoint(threshold, rule, target, float(m["recall"]), float(m["false_positive_rate"]),  # type: ignore[arg-type]
                          float(m["precision"]), tuple(warnings))  # type: ignore[arg-type]
