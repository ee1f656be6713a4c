"""Where training runs: one process on a CPU or GPU, or many under ``torchrun`` (DDP), and what
the ranks must agree on (seeds, BatchNorm statistics)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Placement:
    """Where this process trains: its device, and its rank among `world` DDP processes."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def place(requested: str) -> Placement:
    if os.environ.get("FRAMEWATCH_CPU_ONEDNN", "1") == "0":
        # An escape hatch: oneDNN off (8-10x slower). The heap corruption it was added for comes from
        # oneDNN's channels-last convolution backward, avoided by NCHW batches (Preprocess).
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Placement(device, rank, world)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    # Deterministic on CPU; on GPU some kernels have no deterministic version, so only warn.
    torch.use_deterministic_algorithms(True, warn_only=True)


@torch.no_grad()
def average_buffers(model: nn.Module, world: int) -> None:
    """BatchNorm running statistics averaged over the ranks (each saw its own batches last)."""
    for buffer in model.buffers():
        if buffer.dtype.is_floating_point:
            dist.all_reduce(buffer)
            buffer /= world


class DDPAdapter(nn.Module):
    """Lets DDP wrap a (model, forward function) pair: DDP calls module(batch)."""

    def __init__(self, model: nn.Module, forward: Callable[[dict[str, torch.Tensor], bool], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._forward(batch, True)


