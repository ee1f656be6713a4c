"""A run folder: what training writes (config.json, model.pt, metrics.json, scores.npz, plots) and
how export and report read the deployed model back, without importing the training loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from framewatch.errors import FrameWatchError
from framewatch.training.config import TrainConfig
from framewatch.training.data import RESIZE
from framewatch.training.models import ImageClassifier, build_image_encoder
from framewatch.training.models.encoders import image_data_config

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.pt"


class RunError(FrameWatchError, ValueError):
    """A folder that is not a usable run for what was asked."""


def variant_name(cfg: TrainConfig) -> str:
    if cfg.mode in ("guidance", "teacher") or (cfg.mode == "distill" and cfg.teacher is None):
        return f"{cfg.mode} (text {'frozen' if cfg.freeze_text else 'trained'})"
    return cfg.mode


def save_run(cfg: TrainConfig, model: nn.Module, summary: dict[str, Any], metrics: dict[str, Any], labels: list[str], violent_index: int) -> None:
    """model.pt (weights and what export needs), scores.npz, metrics.json and the plots."""
    from framewatch.training.plots import plot_curves, plot_roc_pr

    data_cfg = image_data_config(build_image_encoder(cfg.image_encoder, False))
    payload = {
        "kind": "fused" if cfg.mode == "teacher" else "image-classifier",
        "state_dict": model.state_dict(),
        "image_encoder": cfg.image_encoder,
        "num_classes": len(labels),
        "image_size": cfg.image_size,
        "mean": data_cfg["mean"],
        "std": data_cfg["std"],
        "resize": RESIZE,  # what training did (training/data.py), not timm's pretraining config
        "labels": labels,
        "violent_index": violent_index,
        "threshold": summary["threshold"],
        "dropout": cfg.dropout,
    }
    torch.save(payload, cfg.out / MODEL_FILE)
    np.savez(cfg.out / "scores.npz", **{f"{n}_{kind}": arr for n, pair in metrics["scores"].items() for kind, arr in zip(("labels", "scores"), pair, strict=True)})
    (cfg.out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    plot_curves(summary["history"], cfg.out / "curves.png")
    curves = {name: metrics["scores"][name] for name in ("val", "test") if name in metrics["scores"]}
    plot_roc_pr(curves, cfg.out / "roc_pr.png", title=summary["variant"])


def load_image_classifier(run_dir: Path) -> tuple[ImageClassifier, dict[str, Any]]:
    """The deployed image-only model of a run, in eval mode, and its metadata."""
    path = run_dir / MODEL_FILE
    if not path.exists():
        raise RunError(f"{run_dir} is not a finished training run: {MODEL_FILE} is missing (train one with `framewatch train`)")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload["kind"] != "image-classifier":
        raise RunError(f"{run_dir} is a {payload['kind']} run: it needs text at inference and cannot be deployed image-only")
    model = ImageClassifier(build_image_encoder(payload["image_encoder"], False), payload["num_classes"], payload.get("dropout", 0.1))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise RunError(f"{run_dir} was trained by another framewatch version (its model does not fit this one's: "
                       f"{str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}); train it again") from None
    return model.eval(), payload
