"""The model's input step: uint8 NHWC RGB pixels → normalised float NCHW. Training runs it before the
encoder and export folds the same module into the ONNX graph, so every runtime gets raw pixels."""

from __future__ import annotations

import torch
from torch import nn


class Preprocess(nn.Module):
    """uint8 NHWC RGB → normalised float NCHW. The same maths is folded into the ONNX graph."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # contiguous(): the permuted NHWC batch has channels-last strides, and torch 2.14.1's CPU
        # oneDNN convolution backward on such input corrupts the heap ("double free", "invalid
        # pointer", SIGSEGV within the first steps: MobileOne-S0, 64 px, batch 16). The fault is in
        # oneDNN's channels-last 1x1 weight-gradient kernel, not the permute as such: converting the
        # model to channels_last too crashed 3 of 3 runs. Never train in channels_last on the CPU
        # with this torch (docs/training.md). In the ONNX graph this is a no-op.
        x = pixels.permute(0, 3, 1, 2).contiguous().float()
        return (x - self.mean) / self.std
