"""Export a run's deployed image-only model to the engines' artifact format.

The graph takes raw pixels (uint8, N×H×W×3, RGB) and returns class probabilities, so every
runtime — ONNX Runtime, TensorRT, the worker — passes frames straight in. MobileOne is
reparameterized first (its multi-branch training blocks fold into single convolutions),
which is the architecture whose latency the report measures.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from timm.utils import reparameterize_model
from torch import nn

from framewatch.engines.manifest import (
    FORMAT_VERSION,
    ONNX_FP16_NAME,
    ONNX_NAME,
    REFERENCE_NAME,
    ModelManifest,
    Preprocessing,
    ReferenceFrames,
    sha256_file,
    write_manifest,
)
from framewatch.errors import FrameWatchError
from framewatch.training.data import RESIZE, imagefolder_frames
from framewatch.training.preprocess import Preprocess
from framewatch.training.runs import load_image_classifier

# On probabilities. 1e-4 failed once at 1.1e-4 (MobileOne's BatchNorm folded into its convs, oneDNN
# off); a wrong mean, std or channel order moves them by 1e-2 and more.
PARITY_TOLERANCE = 5e-4
PARITY_IMAGES = 32
# Frames stored in the artifact with their expected probabilities, for `framewatch engine check`:
# a few per class is enough to catch a wrong channel order, mean/std or precision (~40 KB at 64 px).
REFERENCE_FRAMES = 8
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


class ExportError(FrameWatchError, RuntimeError):
    pass


class PixelsToProbabilities(nn.Module):
    """uint8 NHWC RGB → (optional cast) → network → softmax probabilities in float32."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], half: bool = False) -> None:
        super().__init__()
        self.preprocess = Preprocess(mean, std)
        self.model = model
        self.half_precision = half

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(pixels)
        if self.half_precision:
            x = x.half()
        logits = self.model(x).float()
        return logits.softmax(dim=-1)


def parity_images(run_dir: Path, size: int, count: int = PARITY_IMAGES) -> np.ndarray:
    """Real frames of the run's own data set (test split first), resized as in training."""
    root = Path(json.loads((run_dir / "config.json").read_text())["data"])
    images = imagefolder_frames(root, size, size, count)
    if not images:
        raise ExportError(f"no images of the run's data set ({root}) could be read for the parity check")
    return np.stack(images)


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        module, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset, dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _ort_probs(path: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0], dtype=np.float32)


def export_run(run_dir: Path, out: Path, input_size: int | None = None, fp16: bool = False, opset: int = 17, max_batch: int = 64) -> dict[str, Any]:
    if opset < 17:
        raise ExportError(f"opset {opset} is below 17, the minimum of the artifact contract")
    model, payload = load_image_classifier(run_dir)
    size = input_size or int(payload["image_size"])
    mean, std = tuple(payload["mean"]), tuple(payload["std"])
    deployed = reparameterize_model(copy.deepcopy(model)).eval()
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_NAME
    wrapper = PixelsToProbabilities(deployed, mean, std).eval()
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    _export_onnx(wrapper, example, onnx_path, opset)

    # Parity: the ONNX graph given uint8 pixels against the *unreparameterized* PyTorch model
    # given the normalised tensor, so export, folding and reparameterization are all checked.
    pixels = parity_images(run_dir, size)
    with torch.no_grad():
        reference = model(Preprocess(mean, std)(torch.from_numpy(pixels))).softmax(-1).numpy()
    onnx_probs = _ort_probs(onnx_path, pixels)
    max_abs_diff = float(np.abs(onnx_probs - reference).max())
    report: dict[str, Any] = {"max_abs_diff": max_abs_diff, "parity_images": len(pixels), "tolerance": PARITY_TOLERANCE}
    if max_abs_diff > PARITY_TOLERANCE:
        raise ExportError(f"ONNX and PyTorch disagree: max |Δp| {max_abs_diff:.2e} > {PARITY_TOLERANCE:.0e} on {len(pixels)} images")

    fp16_file = fp16_sha = None
    if fp16:
        half = PixelsToProbabilities(copy.deepcopy(deployed).half(), mean, std, half=True).eval()
        fp16_path = out / ONNX_FP16_NAME
        _export_onnx(half, example, fp16_path, opset)
        fp16_file, fp16_sha = ONNX_FP16_NAME, sha256_file(fp16_path)
        try:
            report["fp16_max_abs_diff"] = float(np.abs(_ort_probs(fp16_path, pixels) - reference).max())
        except Exception as exc:  # ORT's CPU provider lacks some FP16 kernels; TensorRT is the target
            report["fp16_check"] = f"not run on ONNX Runtime CPU: {exc.__class__.__name__}"

    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    config = json.loads((run_dir / "config.json").read_text())
    manifest = ModelManifest(
        format_version=FORMAT_VERSION,
        name=f"{config['mode']}-{config['image_encoder']}-{run_dir.name}",
        onnx_file=ONNX_NAME, onnx_sha256=sha256_file(onnx_path), onnx_fp16_file=fp16_file, onnx_fp16_sha256=fp16_sha,
        input_name=INPUT_NAME, output_name=OUTPUT_NAME, input_height=size, input_width=size,
        labels=list(payload["labels"]), violent_index=int(payload["violent_index"]), threshold=float(payload["threshold"]),
        # What training did: its resize (training/data.py), not the encoder's pretraining config.
        preprocessing=Preprocessing(resize=payload.get("resize", RESIZE), mean=mean, std=std),
        reference=_reference_frames(pixels, reference, int(payload["violent_index"]), out),
        opset=opset, max_batch=max_batch,
        training={
            "run": str(run_dir), "mode": config["mode"], "variant": metrics.get("variant"), "image_encoder": config["image_encoder"],
            "text_encoder": config.get("text_encoder") if config["mode"] != "baseline" else None, "seed": config["seed"],
            "data": config["data"], "trained_image_size": payload["image_size"],
            "val": _short(metrics, "val"), "test": _short(metrics, "test"), "export_parity_max_abs_diff": max_abs_diff,
        },
    )
    write_manifest(out, manifest)
    return report


def _reference_frames(pixels: np.ndarray, probabilities: np.ndarray, violent_index: int, out: Path) -> ReferenceFrames:
    """The most and least violent of the parity frames and a few between, with what PyTorch gave
    them: `engine check` compares any backend with these, with no data set in reach."""
    order = np.argsort(probabilities[:, violent_index])
    picks = np.unique(np.linspace(0, len(order) - 1, min(REFERENCE_FRAMES, len(order))).round().astype(int))
    chosen = order[picks]
    path = out / REFERENCE_NAME
    np.savez_compressed(path, frames=pixels[chosen], probabilities=probabilities[chosen].astype(np.float32))
    return ReferenceFrames(file=REFERENCE_NAME, sha256=sha256_file(path), count=len(chosen), tolerance=PARITY_TOLERANCE)


def _short(metrics: dict[str, Any], split: str) -> dict[str, float] | None:
    values = metrics.get("splits", {}).get(split)
    if not values:
        return None
    return {k: values[k] for k in ("precision", "recall", "accuracy", "f1", "roc_auc") if k in values}
