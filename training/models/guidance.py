"""The multi-modality guidance network (Zhao et al., ICME 2024) and its image-only deployment.

Training (mode ``guidance`` / ``teacher``)::

    image ─▶ image encoder ─▶ C×h×w ─▶ SpatialMatch (learned conv) ─▶ C×s×s ───────────┐
    text  ─▶ text encoder  ─▶ L×D (L = s²) ─▶ fold to D×s×s ─┐                          │
                                         concat ─▶ fusion convs ─▶ F×s×s ─▶ AttentionPool │
                                                                    s×s map ─▶  ×  ◀──────┘
                                                                  ClassifierHead (pool, MLP)

The attention map re-weights the *image-only* features; text never reaches the head directly.
Deployment (:class:`ImageClassifier`) is encoder → pool → head, the baseline's architecture
and cost: the guidance-trained encoder is kept and a fresh head is fine-tuned on images alone
(the "adapt" stage).

Differences from the official code, on purpose:
* the attention slice is ``[:, 0, 1:]`` (the mean token's weights over the s² spatial tokens);
  the official ``[:, 0, :-1]`` keeps the mean token and drops the last cell;
* the fusion block is configurable: the paper's three conv + BatchNorm + ReLU (default) or the
  official code's two conv + ReLU;
* the head has a ReLU between its linear layers (the official three stacked Linear layers
  without activations collapse to one linear map);
* the spatial-match conv is followed by BatchNorm and ReLU (see :class:`SpatialMatch`);
* the map is scaled by s² before it multiplies the image features, so its mean over the cells is
  ~1: re-weighting moves the head's attention without shrinking the features. The official map
  sums to ≤ 1, which divides the pooled features by s² (121 at 224 px); trained from random
  initialisation on the CPU, that fused stage stayed at chance (validation ROC-AUC 0.46–0.55 over
  10 epochs, docs/results.md) while the baseline learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

FusionVariant = Literal["paper", "official"]
FUSION_VARIANTS: tuple[FusionVariant, ...] = ("paper", "official")


def spatial_match_geometry(in_side: int, out_side: int) -> tuple[int, int]:
    """(kernel, padding) of a stride-1 conv mapping an in_side² map to out_side², no interpolation.

    The paper's case, 7 → 11, is kernel 3 with padding 3. When the difference is odd a kernel
    of 2 keeps the arithmetic exact; when the map is larger than the target, an unpadded
    kernel of in_side - out_side + 1 shrinks it.
    """
    if in_side <= out_side:
        kernel = 3 if (out_side - in_side) % 2 == 0 else 2
        padding = (out_side - in_side + kernel - 1) // 2
        return kernel, padding
    return in_side - out_side + 1, 0


class SpatialMatch(nn.Module):
    """The learned h×h → s×s convolution, followed by BatchNorm and ReLU.

    The paper's conv alone hands the head unnormalised, signed features, unlike the encoder's
    own output; trained from random initialisation, the head's ReLU units died on them (44 of
    512 alive, constant logits, training loss stuck at ln 2). BatchNorm + ReLU give the head
    features distributed like the encoder's, which the adapt stage then feeds it directly.
    """

    def __init__(self, channels: int, in_side: int, out_side: int, depthwise: bool = False) -> None:
        super().__init__()
        kernel, padding = spatial_match_geometry(in_side, out_side)
        # depthwise: one k×k filter per channel (C·k² weights instead of C²·k²). The paper's full conv
        # on EfficientNet-Lite0's 1280 channels costs ~5× the encoder's own multiply-adds at 96 px.
        self.conv = nn.Conv2d(channels, channels, kernel_size=kernel, padding=padding, bias=False,
                              groups=channels if depthwise else 1)
        self.norm = nn.BatchNorm2d(channels)
        self.out_side = out_side

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = F.relu(self.norm(self.conv(features)))
        return out


@dataclass(frozen=True)
class FusionConfig:
    variant: FusionVariant = "paper"
    out_channels: int | None = None  # None: half the image channels (1024 for MobileOne-S4)
    spatial_match: Literal["conv", "depthwise"] = "conv"  # the paper's full conv, or one filter per channel


def build_fusion(in_channels: int, image_channels: int, cfg: FusionConfig) -> tuple[nn.Sequential, int]:
    out = cfg.out_channels or image_channels // 2
    hidden = 2 * out
    if cfg.variant == "official":
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out, 3, padding=1), nn.ReLU(inplace=True),
        ]
    elif cfg.variant == "paper":
        layers = []
        for cin, cout in ((in_channels, hidden), (hidden, out), (out, out)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    else:
        raise ValueError(f"unknown fusion variant {cfg.variant!r}; choose from {FUSION_VARIANTS}")
    return nn.Sequential(*layers), out


class AttentionPool(nn.Module):
    """CLIP-style attention pooling: a prepended mean token attends over the s² tokens.

    Returns the pooled vector and the mean token's attention weights over the spatial tokens
    (averaged over heads), as a B×s×s map.
    """

    def __init__(self, side: int, dim: int, heads: int = 8) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads")
        self.side = side
        self.heads = heads
        self.positional = nn.Parameter(torch.randn(side * side + 1, dim) / dim**0.5)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def attention_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: B×(1+s²)×D with the mean token first → B×(1+s²) weights of the mean token."""
        b, n, d = tokens.shape
        head_dim = d // self.heads
        q = self.q(tokens[:, :1]).view(b, 1, self.heads, head_dim).transpose(1, 2)
        k = self.k(tokens).view(b, n, self.heads, head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)  # B×H×1×N
        weights: torch.Tensor = scores.softmax(dim=-1).mean(dim=1)[:, 0]  # B×N, averaged over heads
        return weights

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, h, w = fused.shape
        spatial = fused.flatten(2).transpose(1, 2)  # B×s²×D
        tokens = torch.cat([spatial.mean(dim=1, keepdim=True), spatial], dim=1) + self.positional
        weights = self.attention_weights(tokens)
        # Pooled vector (the CLIP output), kept for completeness; the network uses the map.
        head_dim = d // self.heads
        v = self.v(tokens).view(b, -1, self.heads, head_dim)
        pooled = self.out(torch.einsum("bn,bnhd->bhd", weights, v).reshape(b, d))
        spatial_weights = weights[:, 1:]  # drop the mean token's weight on itself, keep all s² cells
        return pooled, spatial_weights.reshape(b, h, w)


class ClassifierHead(nn.Module):
    """Global average pool → LayerNorm → Linear → ReLU → Linear: the same head for baseline and deployment.

    The LayerNorm is the fix for a head whose ReLUs died: the encoder's pooled output is non-negative
    (it ends in an activation), so every hidden unit saw inputs of one sign, and AdamW pushed most
    units below zero for every frame (0.4–21 % of the 512 ever fired on validation, docs/results.md).
    Normalised per frame, the pooled features are centred and scaled, about half of each unit's inputs
    push either way, and the units keep firing (measured: ``head_firing`` in metrics.json)."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, channels // 2)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(channels // 2, num_classes)

    def hidden(self, features: torch.Tensor) -> torch.Tensor:
        """The hidden units' activations (after ReLU) for a feature map: for the firing diagnostic."""
        return F.relu(self.fc1(self.norm(features.mean(dim=(2, 3)))))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.drop(self.hidden(features)))
        return out


class ImageClassifier(nn.Module):
    """The deployed model and the baseline: image encoder → pool → head. Takes normalised images."""

    def __init__(self, encoder: nn.Module, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClassifierHead(int(encoder.num_features), num_classes, dropout)  # type: ignore[arg-type]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.encoder.forward_features(images))  # type: ignore[operator]
        return out


class GuidanceNetwork(nn.Module):
    """Image + text training network; ``forward`` returns (logits, attention map)."""

    def __init__(
        self, image_encoder: nn.Module, text_hidden: int, text_side: int, image_side: int, num_classes: int,
        fusion: FusionConfig | None = None, heads: int = 8, dropout: float = 0.1,
    ) -> None:
        super().__init__()
        channels = int(image_encoder.num_features)  # type: ignore[arg-type]
        self.image_encoder = image_encoder
        self.side = text_side
        fusion = fusion or FusionConfig()
        self.spatial_match = SpatialMatch(channels, image_side, text_side, depthwise=fusion.spatial_match == "depthwise")
        self.fusion, fused_dim = build_fusion(channels + text_hidden, channels, fusion)
        self.attention = AttentionPool(text_side, fused_dim, heads)
        self.head = ClassifierHead(channels, num_classes, dropout)

    def fold_text(self, text_tokens: torch.Tensor) -> torch.Tensor:
        """B×L×D → B×D×s×s; token i goes to cell (i // s, i % s)."""
        b, length, d = text_tokens.shape
        if length != self.side * self.side:
            raise ValueError(f"expected {self.side * self.side} text tokens, got {length}")
        return text_tokens.reshape(b, self.side, self.side, d).permute(0, 3, 1, 2)

    def forward(self, images: torch.Tensor, text_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_map = self.spatial_match(self.image_encoder.forward_features(images))  # type: ignore[operator]
        fused = self.fusion(torch.cat([image_map, self.fold_text(text_tokens)], dim=1))
        _, attention_map = self.attention(fused)
        weighted = image_map * (attention_map * self.side * self.side).unsqueeze(1)
        return self.head(weighted), attention_map

    def deployable(self, num_classes: int, dropout: float = 0.1) -> ImageClassifier:
        """The adapt stage's starting point: this encoder (shared, not copied) with a fresh head."""
        return ImageClassifier(self.image_encoder, num_classes, dropout)
