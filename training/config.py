"""The one validated schema of a training run, the way framewatch.config is the worker's.

A run's options come from, lowest precedence first: the defaults here, a recipe file
(``framewatch train --config training/recipes/NAME.yaml``, or just ``--config NAME`` for a recipe
shipped with framewatch), and command-line flags. An invalid value stops before any work with
:class:`TrainConfigError`, naming the field, the value and where it came from. The run folder
keeps the resolved configuration (``config.json``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from framewatch.errors import FrameWatchError

Mode = Literal["baseline", "guidance", "teacher", "distill"]
MODES: tuple[Mode, ...] = ("baseline", "guidance", "teacher", "distill")
RECIPES_DIR = Path(__file__).parent / "recipes"


class TrainConfigError(FrameWatchError, ValueError):
    """An invalid training configuration or recipe; the message names each bad field and its source."""


class TrainConfig(BaseModel):
    """Every option of `framewatch train` (docs/training.md explains the choices)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: Path = Field(description="data folder (imagefolder layout with metadata.jsonl per split) or a .jsonl manifest of image paths")
    out: Path = Field(description="run folder to write")
    mode: Mode = Field("guidance", description="baseline: images only; guidance: text guides training, image-only result; "
                       "teacher: fused image+text model (needs text at inference); distill: image-only student of a fused teacher")
    # The defaults are the measured CPU recipe (training/recipes/default.yaml says why each value);
    # training/recipes/paper.yaml is the paper's GPU setting.
    image_encoder: str = Field("efficientnet_lite0", description="timm model name; efficientnet_lite0/1/2 have packaged ImageNet weights")
    pretrained: bool = Field(True, description="ImageNet weights: packaged for efficientnet_lite0/1/2 (offline), timm's hub for others")
    image_weights: Path | None = Field(None, description="the image encoder's weights from a local state dict or .safetensors file")
    text_encoder: str = Field("minilm",
                              description="Hugging Face encoder name or local folder; 'minilm' = the offline all-MiniLM-L6-v2 package")
    text_max_length: int = Field(25, ge=1, description="tokens, a square number (25 → 5×5 map; 121 → 11×11)")
    freeze_text: bool = Field(True, description="keep the text encoder fixed")
    fusion: Literal["paper", "official"] = Field("paper", description="paper: three conv+BatchNorm+ReLU; official: two conv+ReLU")
    fusion_dim: int | None = Field(64, ge=1, description="fusion output channels (None: half the image channels, the paper's)")
    spatial_match: Literal["conv", "depthwise"] = Field("depthwise", description="image map → text map: the paper's full conv, "
                                                        "or one filter per channel (~1/1000 of the cost on 1280 channels)")
    image_size: int = Field(96, ge=16, description="training and deployed input size, pixels")
    epochs: int = Field(4, ge=1, description="epochs of the first stage")
    adapt_epochs: int | None = Field(None, ge=1, description="epochs of the guidance adapt stage (default: epochs)")
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0, description="learning rate of the layers trained from scratch (head, fusion, attention)")
    encoder_lr: float | None = Field(None, gt=0, description="learning rate of the image encoder (default: lr); lower it when the encoder is pretrained")
    # A pretrained text encoder trained at the image encoder's lr forgets what it knew; BERT-family
    # fine-tuning uses ~2e-5.
    text_lr: float = Field(2e-5, gt=0, description="learning rate of a trained text encoder")
    # Adapt stage: epochs that train only the fresh head on the frozen guided encoder before the
    # whole model is fine-tuned (linear probe, then fine-tune; Kumar et al. 2022), so the
    # randomly initialised head's first gradients do not overwrite the guided features.
    adapt_head_epochs: int = Field(1, ge=0, description="guidance: head-only epochs on the frozen guided encoder before fine-tuning")
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    patience: int = Field(10, ge=1, description="early stopping: epochs without a better val ROC-AUC")
    seed: int = Field(0, ge=0)
    train_size: int | None = Field(None, ge=2, description="train on this many training images, a stratified subset drawn by the seed "
                                   "(the same images for every variant at one seed: a learning curve)")
    variant: str | None = Field(None, description="the run's name in reports (default: from the mode); e.g. a step-matched baseline")
    dropout: float = Field(0.1, ge=0, lt=1)
    distill_alpha: float = Field(0.5, ge=0, le=1, description="distill: weight of the hard-label loss")
    distill_temperature: float = Field(2.0, gt=0)
    teacher: Path | None = Field(None, description="distill: reuse the soft labels of this teacher/guidance run")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="stop before training when more rows are bad")
    allow_leakage: bool = Field(False, description="train even when the same image file is in two splits (refused by default)")
    # Data loading (training/loader.py): decoded per batch by loader processes, or once into memory
    # when every split fits cache_mb at the training size.
    augment: Literal["none", "flip", "stream"] = Field("flip", description="training augmentation: flip (half the frames "
                                                       "mirrored), stream (crop, flip, colour, downscale, JPEG, blur), none")
    loader: Literal["auto", "memory", "streamed"] = Field("auto", description="auto: in memory when the frames fit cache_mb, else streamed")
    loader_workers: int | None = Field(None, ge=0, description="loader processes (default: the cores less one, 1 to 4; 0 = in this process)")
    cache_mb: int = Field(1024, ge=0, description="auto loader: keep the decoded frames in memory up to this size")
    # The operating point, chosen on val (training/metrics.py choose_threshold): the lowest
    # threshold with at most 5 % false alarms on val, unless told otherwise.
    threshold_rule: Literal["fpr", "precision", "f1"] = Field("fpr", description="how the operating point is chosen on val")
    threshold_target: float | None = Field(None, ge=0, le=1, description="the rule's target (fpr 0.05, precision 0.9 by default)")
    positive_label: str | None = Field(None, description="the violent class's label, when the labels do not say it")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 …")
    resume: bool = Field(False, description="continue from RUN_DIR/checkpoints/last.pt")
    progress: bool = Field(True, description="progress bars")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        uses_text = self.mode in ("guidance", "teacher") or (self.mode == "distill" and self.teacher is None)
        if uses_text and math.isqrt(self.text_max_length) ** 2 != self.text_max_length:
            raise ValueError(f"text_max_length {self.text_max_length} is not a square number (the text map is √n × √n tokens; "
                             "121 → 11×11)")
        if self.teacher is not None and self.mode != "distill":
            raise ValueError(f"teacher is only used by mode distill, not {self.mode}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _weights_file_wins(cls, data: Any) -> Any:
        """A weights file replaces the pretrained weights (pretrained is on by default)."""
        if isinstance(data, dict) and data.get("image_weights") is not None:
            data = {**data, "pretrained": False}
        return data

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: a path, or the name of a recipe shipped in training/recipes/."""
    path = Path(name_or_path)
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if path.suffix == "" and shipped.is_file():  # a shipped name, whatever folder of that name lies here
        return shipped
    if path.is_file():
        return path
    known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise TrainConfigError(f"recipe {name_or_path} does not exist (a YAML file, or one of the shipped recipes: {known})")


def read_recipe(name_or_path: str | Path) -> dict[str, Any]:
    path = recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"recipe {path} must hold a mapping of training options")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve(recipe: str | Path | None = None, **flags: Any) -> TrainConfig:
    """Defaults < recipe < flags (a flag given as None is not given)."""
    from_recipe = read_recipe(recipe) if recipe is not None else {}
    given = {k: v for k, v in flags.items() if v is not None}
    merged = {**from_recipe, **given}
    try:
        return TrainConfig(**merged)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"])
            if not name:  # a rule across fields
                problems.append(f"  {error['msg'].removeprefix('Value error, ')}")
                continue
            source = "flag" if name in given else f"recipe {recipe}" if name in from_recipe else "default"
            shown = f" = {merged[name]!r}" if name in merged else ""
            problems.append(f"  {name}{shown} ({source}): {error['msg'].removeprefix('Value error, ')}")
        raise TrainConfigError("invalid training configuration:\n" + "\n".join(problems)) from None
