"""The model artifact contract: a folder with ``model.onnx`` and ``model.json``.

``model.json`` is the one description every runtime reads; docs/contracts.md explains
each field. TensorRT engines built from the artifact live beside it under
``engines/<tensorrt-version>/<compute-capability>/`` (see :mod:`framewatch.engines.tensorrt_platform`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from framewatch.errors import FrameWatchError

# 2: the `reference` frames (a reader of 1 refuses 2 by its version, not by an unknown field).
# A version-1 manifest is still read; its `preprocessing.resize` was copied from the encoder's
# pretraining config while training resized bilinear, so it is read as bilinear.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "model.json"
ONNX_NAME = "model.onnx"
ONNX_FP16_NAME = "model.fp16.onnx"
REFERENCE_NAME = "reference.npz"


class ManifestError(FrameWatchError, ValueError):
    """The artifact is missing, malformed, of another format version, or its hashes do not match."""


class Preprocessing(BaseModel):
    """What happens to a frame before the network. ``resize`` is the filter training resized frames
    with, which the worker's decoder uses too; the rest is folded into the graph (runtimes pass raw
    uint8 pixels)."""

    model_config = ConfigDict(extra="forbid")

    color: Literal["RGB"] = "RGB"
    resize: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = Field(1 / 255, description="Pixels are multiplied by this before mean/std.")


class ReferenceFrames(BaseModel):
    """A few input frames and the probabilities the trained model gave them, stored in the artifact
    so that any backend can be checked against them (`framewatch engine check`)."""

    model_config = ConfigDict(extra="forbid")

    file: str = REFERENCE_NAME
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    count: int = Field(ge=1)
    tolerance: float = Field(gt=0, description="the bound export held the FP32 ONNX graph to (max |Δp| against PyTorch)")


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int
    name: str
    onnx_file: str = ONNX_NAME
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    onnx_fp16_file: str | None = None
    onnx_fp16_sha256: str | None = None
    input_name: str = "pixels"
    output_name: str = "probabilities"
    input_layout: Literal["NHWC"] = "NHWC"
    input_dtype: Literal["uint8"] = "uint8"
    input_height: int = Field(gt=0)
    input_width: int = Field(gt=0)
    labels: list[str] = Field(min_length=2)
    violent_index: int = Field(ge=0)
    threshold: float = Field(0.5, ge=0, le=1, description="Decision threshold chosen on the validation split.")
    preprocessing: Preprocessing
    reference: ReferenceFrames | None = None
    opset: int = Field(ge=17)
    max_batch: int = Field(64, ge=1)
    training: dict[str, Any] = Field(default_factory=dict, description="Summary of the run that produced the model.")

    @model_validator(mode="after")
    def _check(self) -> ModelManifest:
        if self.format_version not in READABLE_VERSIONS:
            raise ValueError(f"format_version {self.format_version} is not supported (this framewatch reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
        if self.format_version == 1:
            self.preprocessing = self.preprocessing.model_copy(update={"resize": "bilinear"})
        if self.violent_index >= len(self.labels):
            raise ValueError(f"violent_index {self.violent_index} is outside labels {self.labels}")
        return self


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(artifact_dir: Path, manifest: ModelManifest) -> Path:
    path = artifact_dir / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path


def load_manifest(artifact_dir: Path | str, verify_hash: bool = True) -> ModelManifest:
    """Read and validate ``model.json``; with ``verify_hash`` also check the ONNX files' sha256."""
    artifact_dir = Path(artifact_dir)
    path = artifact_dir / MANIFEST_NAME
    if not path.exists():
        raise ManifestError(f"{artifact_dir} is not a model artifact: {MANIFEST_NAME} is missing (make one with `framewatch export`)")
    try:
        manifest = ModelManifest.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise ManifestError(f"{path} is invalid: {problems}") from None
    if verify_hash:
        pairs = [(manifest.onnx_file, manifest.onnx_sha256)]
        if manifest.onnx_fp16_file and manifest.onnx_fp16_sha256:
            pairs.append((manifest.onnx_fp16_file, manifest.onnx_fp16_sha256))

        for file_name, expected in pairs:
            onnx_path = artifact_dir / file_name
            if not onnx_path.exists():
                raise ManifestError(f"{onnx_path} named by {MANIFEST_NAME} is missing")
            actual = sha256_file(onnx_path)
            if actual != expected:
                raise ManifestError(
                    f"{onnx_path} has sha256 {actual[:12]}…, but {MANIFEST_NAME} says {expected[:12]}…: "
                    "the artifact was modified after export; export it again"
                )
    return manifest
