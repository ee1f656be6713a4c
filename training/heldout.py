"""Runs compared on one held-out data set: ``framewatch report RUNS --on DATA``.

The use: a model retrained with moderators' feedback against the one it replaces, on the
feedback's held-back ``test`` split (``framewatch feedback export`` keeps whole streams there),
which neither trained on. Each run's deployed image-only model scores the same images at its own
threshold (the one its validation chose); the last run is compared with the first by a paired
bootstrap over streams (the ``group`` column; frames of one stream are not independent; streams with
and without violent frames resampled apart, so every draw has both), giving
the mean difference and a 95 % interval of accuracy, F1 and recall.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from framewatch.training.data import DataError, positive_index, read_meta, read_split
from framewatch.training.metrics import binary_metrics
from framewatch.training.preprocess import Preprocess
from framewatch.training.runs import load_image_classifier

COMPARED = ("accuracy", "f1", "recall")
# Under this many streams a bootstrap over streams has too few distinct resamples to give an
# interval worth the name (with one stream every draw is the observed difference).
MIN_STREAMS = 8


def _scores(run: Path, data: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """(truth 0/1, violent probability, group per image, the run's threshold)."""
    model, payload = load_image_classifier(run)
    labels, stated = read_meta(data)
    violent = positive_index(labels, stated, source=f"{data}/dataset.json")
    rows, bad, _ = read_split(data, split, labels, int(payload["image_size"]), needs_text=False)
    if bad:
        raise DataError(f"{data}: {len(bad)} bad row(s) in {split}, first: {bad[0]}")
    if len(rows) == 0:
        raise DataError(f"{data} has no {split} split to compare on (feedback export writes one with --test-fraction > 0)")
    images = torch.from_numpy(rows.images)
    prep = Preprocess(payload["mean"], payload["std"])
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(prep(images[i:i + 64])), dim=1) for i in range(0, len(images), 64)]).numpy()
    groups = [g or f"row{i}" for i, g in enumerate(rows.groups or [None] * len(rows))]
    return (rows.labels == violent).astype(np.int64), probs[:, int(payload["violent_index"])], groups, float(payload["threshold"])


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _metric(truth: np.ndarray, scores: np.ndarray, threshold: float, name: str) -> float:
    return float(binary_metrics(truth, scores, threshold)[name])  # type: ignore[arg-type]


def evaluate_on(run_dirs: list[Path], data: Path, split: str = "test", rounds: int = 2000, seed: int = 0) -> dict[str, Any]:
    results = []
    first_truth: np.ndarray | None = None
    per_run: list[tuple[np.ndarray, float]] = []
    groups: list[str] = []
    for run in run_dirs:
        truth, scores, groups, threshold = _scores(Path(run), data, split)
        if first_truth is not None and not np.array_equal(truth, first_truth):
            raise DataError("the runs read different labels from the same data set")  # cannot happen with one data set
        first_truth = truth
        per_run.append((scores, threshold))
        metrics = binary_metrics(truth, scores, threshold)
        # ROC-AUC is undefined on a one-class split: None, not NaN (JSON has no NaN).
        results.append({"run": str(run), "threshold": threshold, **{k: _finite(metrics[k]) for k in ("precision", "recall", "accuracy", "f1", "roc_auc")}})
    out: dict[str, Any] = {"data": str(data), "split": split, "images": int(len(first_truth) if first_truth is not None else 0),
                           "streams": len(set(groups)), "runs": results}
    if len(per_run) >= 2 and first_truth is not None:
        out["paired"] = paired_bootstrap(first_truth, per_run[0], per_run[-1], groups, rounds, seed)
    return out


def paired_bootstrap(truth: np.ndarray, reference: tuple[np.ndarray, float], ours: tuple[np.ndarray, float], groups: list[str],
                     rounds: int = 2000, seed: int = 0) -> dict[str, Any]:
    """ours − reference per metric, with a 95 % interval from resampling whole groups (streams)."""
    rng = np.random.default_rng(seed)
    names = sorted(set(groups))
    if len(names) < MIN_STREAMS:
        return {metric: {"difference": round(_metric(truth, *ours, metric) - _metric(truth, *reference, metric), 4), "ci95": None,
                         "differs": None, "note": f"{len(names)} streams: too few for an interval (at least {MIN_STREAMS})"}
                for metric in COMPARED}
    members = {name: np.flatnonzero(np.asarray(groups) == name) for name in names}
    # Streams are resampled within two strata — with violent frames, without — each to its own
    # size. A plain resample of 10 test streams of which 2 are violent draws no violent stream one
    # time in ten; recall and F1 are then 0 for both models, the difference exactly 0, and a
    # perfect model against a useless one came out "no difference shown".
    strata = [s for s in ([n for n in names if truth[members[n]].any()], [n for n in names if not truth[members[n]].any()]) if s]
    out: dict[str, Any] = {}
    for metric in COMPARED:
        observed = _metric(truth, *ours, metric) - _metric(truth, *reference, metric)
        draws = []
        for _ in range(rounds):
            pick = np.concatenate([members[stratum[i]] for stratum in strata for i in rng.integers(0, len(stratum), len(stratum))])
            draws.append(_metric(truth[pick], ours[0][pick], ours[1], metric) - _metric(truth[pick], reference[0][pick], reference[1], metric))
        low, high = np.percentile(draws, [2.5, 97.5])
        out[metric] = {"difference": round(observed, 4), "ci95": [round(float(low), 4), round(float(high), 4)],
                       "differs": bool(low > 0 or high < 0)}
    return out


def markdown(result: dict[str, Any]) -> list[str]:
    lines = ["", f"## On {result['data']} ({result['split']}: {result['images']} images of {result['streams']} streams)", "",
             "Each run's deployed model at its own threshold, on images neither run trained on.", "",
             "| run | threshold | precision | recall | accuracy | F1 | ROC-AUC |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["runs"]:
        cells = [f"{row[k]:.3f}" if row[k] is not None else "–" for k in ("precision", "recall", "accuracy", "f1", "roc_auc")]
        lines.append(f"| {row['run']} | {row['threshold']:.3f} | " + " | ".join(cells) + " |")
    paired = result.get("paired")
    if paired:
        lines += ["", f"Last run − first run, 95 % interval from a bootstrap over streams ({result['streams']} streams):", ""]
        for metric, value in paired.items():
            if value["ci95"] is None:
                lines.append(f"- {metric}: {value['difference']:+.3f} — {value['note']}")
                continue
            low, high = value["ci95"]
            verdict = "differs" if value["differs"] else "no difference shown"
            lines.append(f"- {metric}: {value['difference']:+.3f} [{low:+.3f}, {high:+.3f}] — {verdict}")
    return lines
