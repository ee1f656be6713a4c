"""`framewatch report`: the paper's Table 3 for the runs given, with mean ± std over seeds.

Rows are variants (mode, and for text-using modes whether the text encoder was frozen);
columns are test precision, recall, accuracy, F1 and ROC-AUC at the threshold chosen on val,
then the deployed image-only model's CPU latency per image, reparameterized, at batch 1 and
batch 32, measured by this command after warm-up.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from framewatch.errors import FrameWatchError
from framewatch.training.compare import pair_setup, plot_learning_curve, size_label

METRICS = ("precision", "recall", "accuracy", "majority_accuracy", "f1", "roc_auc")
# Runs averaged in one row must agree on these (a row is one setup over several seeds).
SETUP_FIELDS = ("mode", "spatial_match", "max_bad_fraction", "image_encoder", "image_size", "pretrained", "image_weights", "encoder_lr", "train_size", "epochs", "adapt_epochs", "adapt_head_epochs", "batch_size", "lr",
                "text_lr", "patience", "warmup_fraction", "grad_clip", "text_encoder", "text_max_length", "freeze_text", "fusion",
                "fusion_dim", "dropout", "weight_decay", "threshold_rule", "threshold_target", "positive_label", "distill_alpha",
                "distill_temperature", "teacher", "data")


class ReportError(FrameWatchError, ValueError):
    """The runs cannot be reported together as given; the message says why."""
ORDER = ["CLIP", "baseline", "guidance (text frozen)", "guidance (text trained)", "distill", "teacher (text frozen)", "teacher (text trained)"]


def _order(variant: str) -> int:
    for index, prefix in enumerate(ORDER):
        if variant.startswith(prefix):
            return index
    return len(ORDER)


def measure_latency(run_dir: Path, batch_sizes: tuple[int, ...] = (1, 32), repeats: int = 10) -> dict[str, float]:
    """Milliseconds per image of the reparameterized deployed model (median of ``repeats``)."""
    import torch
    from timm.utils import reparameterize_model

    from framewatch.training.runs import load_image_classifier

    trained, payload = load_image_classifier(run_dir)
    model = reparameterize_model(trained).eval()
    size = int(payload["image_size"])
    out: dict[str, float] = {}
    with torch.inference_mode():
        for batch in batch_sizes:
            x = torch.randn(batch, 3, size, size)
            for _ in range(3):
                model(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
            out[f"batch{batch}_ms_per_image"] = statistics.median(times) / batch * 1000
    return out


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _setup(config: dict[str, Any]) -> dict[str, Any]:
    from framewatch.training.metrics import DEFAULT_RULE, DEFAULT_TARGETS

    setup = {name: config.get(name) for name in SETUP_FIELDS}
    for name in ("data", "image_weights"):
        value = setup[name]
        if value is not None:
            setup[name] = str(Path(str(value)).resolve())
    # Each seed's distill run learns from that seed's own teacher run (training checks the seed and
    # size match): one setup says whether a teacher run was given, not which.
    setup["teacher"] = "a teacher run" if setup["teacher"] is not None else None
    if setup["encoder_lr"] is None:
        setup["encoder_lr"] = setup["lr"]  # not given is the same lr
    rule = setup["threshold_rule"] or DEFAULT_RULE
    if setup["threshold_target"] is None and rule in DEFAULT_TARGETS:
        setup["threshold_target"] = DEFAULT_TARGETS[rule]  # the default stated or not is one setup
    return setup


def collect(run_dirs: list[Path], measure: bool = True, trivial: bool = False) -> dict[str, Any]:
    # A row is a variant at one training-set size (a learning curve has several sizes per variant).
    groups: dict[tuple[str, int | None], list[dict[str, Any]]] = defaultdict(list)
    derived: dict[tuple[str, int | None], list[dict[str, Any]]] = defaultdict(list)
    for run in dict.fromkeys(Path(r).resolve() for r in run_dirs):  # a run named twice counts once
        metrics_path = run / "metrics.json"
        if not metrics_path.exists():
            raise ReportError(f"{run} has no metrics.json: is it a finished run?")
        metrics = json.loads(metrics_path.read_text())
        config = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
        size = config.get("train_size")
        groups[(metrics["variant"], size)].append({"run": run, "metrics": metrics, "config": config})
        teacher = metrics.get("teacher")
        if teacher and metrics.get("mode") != "teacher":
            # A guidance (or self-taught distill) run's first stage *is* the teacher: the same
            # network, data, seed and schedule as `--mode teacher`, evaluated with text.
            variant = metrics["variant"].replace(metrics["mode"], "teacher", 1)
            derived[(variant, size)].append({"run": run, "config": config, "metrics": {
                "variant": variant, "deployed_inputs": "image+text", "splits": teacher["splits"], "from_run_of": metrics["mode"]}})
    for key, entries in derived.items():
        # The same model once: a teacher stage is added only for a seed that no teacher run (or an
        # earlier derived stage) of the same setup already stands for.
        for entry in entries:
            taken = {(r["config"].get("seed"), json.dumps(_teacher_setup(r["config"]), sort_keys=True)) for r in groups[key]}
            if (entry["config"].get("seed"), json.dumps(_teacher_setup(entry["config"]), sort_keys=True)) not in taken:
                groups[key].append(entry)
    for (variant, _), runs in groups.items():
        _check_comparable(variant, runs)
    rows = []
    for key in sorted(groups, key=lambda k: (float("inf") if k[1] is None else k[1], _order(k[0]), k[0])):
        variant, size = key
        runs = groups[key]
        row: dict[str, Any] = {"variant": variant, "train_size": size, "runs": [str(r["run"]) for r in runs],
                               "seeds": [r["config"].get("seed") for r in runs], "deployed_inputs": runs[0]["metrics"].get("deployed_inputs"),
                               "threshold_rule": (runs[0]["metrics"].get("operating_point") or {}).get("rule"),
                               "threshold_warnings": sorted({w for r in runs for w in (r["metrics"].get("operating_point") or {}).get("warnings", [])})}
        for name in METRICS:
            values = [float(r["metrics"]["splits"]["test"][name]) for r in runs
                      if "test" in r["metrics"]["splits"] and name in r["metrics"]["splits"]["test"]]
            row[name] = {"mean": statistics.mean(values) if values else None,
                         "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
        row["by_seed"] = {name: {r["config"].get("seed"): float(r["metrics"]["splits"]["test"][name]) for r in runs
                                 if name in r["metrics"]["splits"].get("test", {})} for name in METRICS}
        row["head_firing"] = [r["metrics"].get("head_firing") for r in runs]
        row["pair_setup"] = pair_setup(_setup(runs[0]["config"]))
        row["train_seconds"] = [r["metrics"].get("train_seconds") for r in runs]
        if measure and row["deployed_inputs"] == "image" and (Path(runs[0]["run"]) / "model.pt").exists():
            row["latency"] = measure_latency(Path(runs[0]["run"]))
        rows.append(row)
    trivial_row = _trivial_row(groups) if trivial else None
    if trivial_row is not None:
        rows.append(trivial_row)
    from framewatch.training.compare import comparisons

    return {"rows": rows, "comparisons": comparisons(rows), "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}


def _trivial_row(groups: dict[tuple[str, int | None], list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The colour-statistics baseline on the runs' data set (training/trivial.py): what a model
    that sees no shapes at all scores here. None (and a note on stderr) when it cannot be made."""
    import sys

    from framewatch.training.data import DataError
    from framewatch.training.trivial import colour_baseline

    configs = [r["config"] for runs in groups.values() for r in runs if r["config"].get("mode") != "clip"]
    data = {str(Path(c["data"]).resolve()) for c in configs if c.get("data")}
    if len(data) != 1 or not Path(next(iter(data))).is_dir():
        print(f"framewatch report: no trivial row: the runs name {len(data)} data set(s) found here, not one", file=sys.stderr)
        return None
    first = configs[0]
    try:
        result = colour_baseline(next(iter(data)), image_size=int(first.get("image_size") or 64),
                                 positive_label=first.get("positive_label"), rule=first.get("threshold_rule") or "fpr",
                                 target=first.get("threshold_target"))
    except (DataError, ValueError, OSError) as exc:
        print(f"framewatch report: no trivial row: {exc}", file=sys.stderr)
        return None
    test = result["splits"].get("test", {})
    row: dict[str, Any] = {"variant": result["variant"], "train_size": None, "runs": [], "seeds": [], "deployed_inputs": "image",
                           "threshold_rule": result["operating_point"]["rule"], "threshold_warnings": result["operating_point"]["warnings"]}
    for name in METRICS:
        values = [float(test[name])] if name in test else []
        row[name] = {"mean": values[0] if values else None, "std": 0.0, "values": values}
    return row


def _teacher_setup(config: dict[str, Any]) -> dict[str, Any]:
    # What makes a teacher stage the same model: everything but the adapt stage's settings.
    setup = _setup(config)
    for name in ("mode", "adapt_epochs", "adapt_head_epochs", "distill_alpha", "distill_temperature"):
        setup.pop(name, None)
    return setup


def _check_comparable(variant: str, runs: list[dict[str, Any]]) -> None:
    """Refuse a row that would average unlike runs, or count one seed twice."""
    seeds = [r["config"].get("seed") for r in runs]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
    if repeated:
        names = [str(r["run"]) for r in runs if r["config"].get("seed") in repeated]
        raise ReportError(f"{variant}: seed(s) {repeated} appear in more than one run ({', '.join(names)}); a row averages "
                          "independent seeds, so give each seed once")
    setup_of = _teacher_setup if variant.startswith("teacher") else _setup
    setups = [setup_of(r["config"]) for r in runs]
    differing = sorted({k for setup in setups for k in setup if setup[k] != setups[0].get(k)})
    if differing:
        detail = "; ".join(f"{k}: {sorted({str(s.get(k)) for s in setups})}" for k in differing)
        raise ReportError(f"{variant}: the runs differ in {detail}. A row averages seeds of one setup; report unlike runs "
                          "separately")


def plot_summary(report: dict[str, Any], path: Path) -> Path:
    from framewatch.machine import pyplot

    plt = pyplot()

    rows = report["rows"]
    labels = [r["variant"] + (f" (n={r['train_size']})" if r.get("train_size") else "") for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4))
    for offset, metric in ((-0.2, "f1"), (0.2, "roc_auc")):
        means = [r[metric]["mean"] or 0 for r in rows]
        stds = [r[metric]["std"] or 0 for r in rows]
        ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, label=metric.replace("_", "-").upper())
        for xi, (individual) in zip(x, [r[metric]["values"] for r in rows], strict=True):
            ax.scatter([xi + offset] * len(individual), individual, color="black", s=8, zorder=3)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set(ylim=(0, 1), ylabel="test score", title="test F1 and ROC-AUC (bars: mean ± std over seeds; dots: seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(run_dirs: list[Path], out: Path, measure_latency: bool = True, trivial: bool = True, on: Path | None = None) -> tuple[Path, Path]:
    report = collect(run_dirs, measure_latency, trivial)
    if on is not None:
        from framewatch.training.heldout import evaluate_on

        report["heldout"] = evaluate_on(run_dirs, on)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot_path = plot_summary(report, out.with_suffix(".png"))
    lines = [
        "# framewatch report", "",
        f"Test split, threshold chosen on val by each run's rule ({_rules(report)}). \"majority class\" is the accuracy of always "
        f"answering the larger class: an accuracy at or below it is no better than no model. Mean ± std over the seeds of each "
        f"variant (each row one setup; seeds paired across rows: the same data order at the same seed). Latency: reparameterized image-only model "
        f"on this machine's CPU ({report['machine']['cpu']}), median of 10 timed runs after 3 warm-up runs.", "",
        "| variant | train images | seeds | precision | recall | accuracy | majority class | F1 | ROC-AUC | ms/image (batch 1) | ms/image (batch 32) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["rows"]:
        latency = row.get("latency", {})
        b1 = f"{latency['batch1_ms_per_image']:.2f}" if "batch1_ms_per_image" in latency else ("needs text" if row["deployed_inputs"] == "image+text" else "–")
        b32 = f"{latency['batch32_ms_per_image']:.2f}" if "batch32_ms_per_image" in latency else b1 if b1 == "needs text" else "–"
        seeds = ",".join(str(s) for s in row["seeds"] if s is not None) or "–"
        cells = [_fmt(row[m]["values"]) for m in METRICS]
        lines.append(f"| {row['variant']} | {size_label(row.get('train_size'))} | {seeds} | " + " | ".join(cells) + f" | {b1} | {b32} |")
    warned = [(row["variant"], w) for row in report["rows"] for w in row.get("threshold_warnings", [])]
    if warned:
        lines += ["", "Operating-point warnings (validation):", ""] + [f"- {variant}: {warning}" for variant, warning in warned]
    lines += _comparison_lines(report)
    if "heldout" in report:
        from framewatch.training.heldout import markdown

        lines += markdown(report["heldout"])
    curve = plot_learning_curve(report["rows"], report["comparisons"], out.with_name(out.stem + "-learning-curve.png"),
                                full_size=_full_size(report))
    if curve is not None:
        lines += ["", f"![learning curve]({curve.name})"]
    lines += ["", f"![test F1 and ROC-AUC]({plot_path.name})", "", "Per-run curves (training loss and validation ROC-AUC; ROC and PR on val/test):", ""]
    for row in report["rows"]:
        if not row["runs"]:
            continue  # the trivial row has no run folder
        first = Path(row["runs"][0])
        for image in ("curves.png", "roc_pr.png"):
            if (first / image).exists():
                lines.append(f"- {row['variant']}: [{image}]({_relative(first / image, out.parent)})")
    out.write_text("\n".join(lines) + "\n")
    return out, json_path


def _comparison_lines(report: dict[str, Any]) -> list[str]:
    comps = report.get("comparisons") or []
    if not comps:
        return ["", "No paired comparison: it needs a baseline and another image-only variant with at least two common seeds."]
    lines = ["", "## Paired differences against the baseline", "",
             "Each variant minus its reference at the same seed and training-set size (the same images in the same order), "
             "mean over the seeds with a 95 % confidence interval (paired t). **Bold**: the interval excludes 0. Each interval "
             "is 95 % on its own: among many cells, about one in twenty of true zeros is bold by chance, so read a pattern "
             "across sizes and metrics, not one cell. Only runs of one setup are paired (data, encoder, image size, "
             "pretraining, batch, learning rates: `training/compare.py` PAIR_FIELDS).", "",
             "| variant | reference | train images | seeds | Δ accuracy | Δ F1 | Δ ROC-AUC |", "| --- | --- | --- | --- | --- | --- | --- |"]
    keyed: dict[tuple[str, str, Any], dict[str, dict[str, Any]]] = {}
    for c in comps:
        keyed.setdefault((c["variant"], c["reference"], c["train_size"]), {})[c["metric"]] = c
    for (variant, reference, size), by_metric in keyed.items():
        cells = []
        for metric in ("accuracy", "f1", "roc_auc"):
            c = by_metric.get(metric)
            if c is None:
                cells.append("–")
                continue
            text = f"{c['mean'] * 100:+.1f} [{c['ci_low'] * 100:+.1f}, {c['ci_high'] * 100:+.1f}]" if metric != "roc_auc" else \
                f"{c['mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
            cells.append(f"**{text}**" if c["excludes_zero"] else text)
        n = next(iter(by_metric.values()))["n"]
        lines.append(f"| {variant} | {reference} | {size_label(size)} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracy and F1 differences in points (×100), ROC-AUC as a fraction."]
    return lines


def _full_size(report: dict[str, Any]) -> int | None:
    """How many training images the full set has, read from any full-size run's metrics."""
    for row in report["rows"]:
        if row.get("train_size") is None and row["runs"]:
            metrics = json.loads((Path(row["runs"][0]) / "metrics.json").read_text())
            size = (metrics.get("data") or {}).get("sizes", {}).get("train")
            if size:
                return int(size)
    return None


def _rules(report: dict[str, Any]) -> str:
    rules = sorted({str(r.get("threshold_rule")) for r in report["rows"] if r.get("threshold_rule")})
    return ", ".join(rules) or "f1 (runs from before the operating-point rule)"


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
