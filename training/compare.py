"""Paired comparisons of variants over seeds, and the learning curve.

At one seed every variant sees the same training images (``train_size`` subsets are drawn by the
seed) in the same order (``epoch_seed``), so the seeds pair the runs: the difference of a variant
and its reference at one seed removes what the seed did to both. The mean paired difference over
the seeds comes with a 95 % confidence interval from the t distribution on n − 1 degrees of
freedom (paired t); the interval excluding 0 is the report's "the variant differs".
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

METRICS = ("accuracy", "f1", "roc_auc")


def paired_difference(ours: dict[Any, float], reference: dict[Any, float], confidence: float = 0.95) -> dict[str, Any] | None:
    """Mean of ours − reference over the seeds both have, with its t interval; None under 2 pairs."""
    from scipy import stats

    seeds = sorted(set(ours) & set(reference), key=str)
    if len(seeds) < 2:
        return None
    diffs = [ours[s] - reference[s] for s in seeds]
    mean = statistics.mean(diffs)
    sd = statistics.stdev(diffs)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return {"n": len(diffs), "seeds": seeds, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half,
            "excludes_zero": (mean - half > 0) or (mean + half < 0), "differences": diffs}


# What two variants must share to be paired: everything but what makes them different variants
# (mode, epochs, text and fusion settings, distillation).
PAIR_FIELDS = ("data", "image_encoder", "image_size", "pretrained", "image_weights", "batch_size", "lr", "encoder_lr", "weight_decay",
               "warmup_fraction", "grad_clip", "dropout", "max_bad_fraction", "threshold_rule", "threshold_target", "positive_label",
               "train_size")


def pair_setup(setup: dict[str, Any]) -> dict[str, Any]:
    return {name: setup.get(name) for name in PAIR_FIELDS}


def is_reference(variant: str) -> bool:
    """Baselines are the references: the plain one and any control (e.g. "baseline (step-matched)")."""
    return variant == "baseline" or variant.startswith("baseline (")


def comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every image-only, non-reference variant against every reference at the same training-set size."""
    out = []
    for ref in (r for r in rows if is_reference(r["variant"]) and r.get("by_seed")):
        for row in rows:
            if row is ref or row.get("deployed_inputs") != "image" or not row.get("by_seed") or row.get("train_size") != ref.get("train_size"):
                continue
            if row.get("pair_setup") != ref.get("pair_setup"):
                continue  # not the same images, encoder or optimiser: a difference would not be the variant's
            if is_reference(row["variant"]) and not is_reference(ref["variant"]):
                continue
            if is_reference(row["variant"]) and ref["variant"] != "baseline":
                continue  # a control is compared with the plain baseline only
            for metric in METRICS:
                diff = paired_difference(row["by_seed"].get(metric, {}), ref["by_seed"].get(metric, {}))
                if diff is not None:
                    out.append({"variant": row["variant"], "reference": ref["variant"], "train_size": row.get("train_size"),
                                "metric": metric, **diff})
    return out


def size_label(size: int | None) -> str:
    return "all" if size is None else str(size)


def plot_learning_curve(rows: list[dict[str, Any]], comps: list[dict[str, Any]], path: Path, full_size: int | None = None) -> Path | None:
    """Left: test accuracy and ROC-AUC by training-set size, mean and 95 % CI over seeds, per variant.
    Right: the paired differences against the baseline with their CIs. None when there is one size."""
    from framewatch.machine import pyplot

    sizes = sorted({r.get("train_size") for r in rows if r.get("by_seed")}, key=lambda s: math.inf if s is None else s)
    if len(sizes) < 2:
        return None
    plt = pyplot()
    from matplotlib.ticker import NullLocator

    known = [s for s in sizes if s is not None]
    x_of: dict[int | None, float] = {s: float(s) for s in known}
    if None in sizes:  # "all": at its real size when a run said it, else one step past the largest subset
        x_of[None] = float(full_size) if full_size else (max(known) * 2.0 if known else 1.0)
    variants = sorted({r["variant"] for r in rows if r.get("by_seed") and r.get("deployed_inputs") == "image"})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, metric in zip(axes[:2], ("accuracy", "roc_auc"), strict=True):
        for variant in variants:
            pts = []
            for size in sizes:
                row = next((r for r in rows if r["variant"] == variant and r.get("train_size") == size), None)
                values = list((row or {}).get("by_seed", {}).get(metric, {}).values())
                if len(values) >= 1:
                    mean = statistics.mean(values)
                    half = _t_half(values)
                    pts.append((x_of[size], mean, half))
            if pts:
                xs, ms, hs = zip(*pts, strict=True)
                ax.errorbar(xs, ms, yerr=hs, marker="o", capsize=3, label=variant)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks([x_of[s] for s in sizes], [size_label(s) if s is not None else f"all ({x_of[s]:.0f})" for s in sizes])
        ax.set(xlabel="training images", ylabel=f"test {metric.replace('_', '-')}", title=f"test {metric.replace('_', '-')}: mean, 95 % CI over seeds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[2]
    shown = [c for c in comps if c["reference"] == "baseline" and c["metric"] == "accuracy"]
    for offset, variant in enumerate(sorted({c["variant"] for c in shown})):
        diffs = sorted((x_of[c["train_size"]], c["mean"], c["ci_low"], c["ci_high"]) for c in shown if c["variant"] == variant)
        ax.errorbar([d[0] * (1 + 0.04 * offset) for d in diffs], [d[1] * 100 for d in diffs],
                    yerr=[[(d[1] - d[2]) * 100 for d in diffs], [(d[3] - d[1]) * 100 for d in diffs]],
                    marker="o", capsize=3, label=f"{variant} − baseline")
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks([x_of[s] for s in sizes], [size_label(s) if s is not None else f"all ({x_of[s]:.0f})" for s in sizes])
    ax.set(xlabel="training images", ylabel="accuracy difference, points", title="paired difference vs baseline, 95 % CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _t_half(values: list[float]) -> float:
    from scipy import stats

    if len(values) < 2:
        return 0.0
    return float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
