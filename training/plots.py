"""PNG plots of a run: training curves, ROC and precision–recall curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from framewatch.machine import pyplot
from framewatch.training.metrics import pr_curve, roc_auc, roc_curve

plt = pyplot()


def plot_curves(history: list[dict[str, float | int | str]], path: Path) -> Path:
    """Loss and validation ROC-AUC per epoch, one colour per training stage."""
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4))
    stages = list(dict.fromkeys(str(h["stage"]) for h in history))
    for stage in stages:
        rows = [h for h in history if h["stage"] == stage]
        epochs = [int(h["epoch"]) for h in rows]
        ax_loss.plot(epochs, [float(h["train_loss"]) for h in rows], marker="o", label=f"{stage} train")
        ax_loss.plot(epochs, [float(h["val_loss"]) for h in rows], marker="x", linestyle="--", label=f"{stage} val")
        ax_auc.plot(epochs, [float(h["val_roc_auc"]) for h in rows], marker="o", label=stage)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_auc.set(xlabel="epoch", ylabel="ROC-AUC", title="validation ROC-AUC", ylim=(0.4, 1.0))
    ax_loss.legend(fontsize=8)
    ax_auc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc_pr(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "") -> Path:
    """curves: name → (labels, violent scores). ROC on the left, precision–recall on the right."""
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
        recall, precision = pr_curve(labels, scores)
        ax_pr.plot(recall, precision, label=name)
    ax_roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC {title}".strip())
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"precision–recall {title}".strip(), ylim=(0, 1.02))
    ax_roc.legend(fontsize=8, loc="lower right")
    ax_pr.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
