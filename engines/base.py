"""What every runtime is to the rest of framewatch: the :class:`Engine` protocol, :class:`EngineError`,
and the backend registry that runtimes add themselves to (the way Frigate's detector plugins or
timm's model registry work). The factory that picks one is :func:`framewatch.engines.load`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from framewatch.engines.manifest import ModelManifest
from framewatch.errors import FrameWatchError


class EngineError(FrameWatchError, RuntimeError):
    """An engine cannot be loaded or cannot run; the message says what to do."""


@runtime_checkable
class Engine(Protocol):
    """What the worker needs from any runtime."""

    name: str
    backend: str
    max_batch: int
    input_size: tuple[int, int]  # (height, width)
    labels: list[str]
    violent_index: int
    interpolation: str  # how frames are resized to input_size, as training did (model.json preprocessing.resize)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """uint8 N×H×W×3 RGB pixels in, float32 N×C class probabilities out; any N ≥ 1."""
        ...


@dataclass(frozen=True)
class EngineOptions:
    """What the caller may ask of any backend; a backend ignores what it has no use for."""

    intra_op_threads: int = 0


Probe = Callable[[Path, ModelManifest], tuple[bool, str]]
Create = Callable[[Path, ModelManifest, EngineOptions], Any]


@dataclass(frozen=True)
class BackendSpec:
    """A registered runtime. ``probe`` says whether it can run an artifact here, and why (it must
    not raise); ``create`` loads it. ``auto`` takes the usable backend of highest ``priority``."""

    name: str
    priority: int
    probe: Probe
    create: Create


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(name: str, *, priority: int, probe: Probe, create: Create) -> BackendSpec:
    """Add a runtime; called by the backend's own module when it is imported."""
    spec = BackendSpec(name, priority, probe, create)
    _REGISTRY[name] = spec
    return spec


def registered() -> dict[str, BackendSpec]:
    return dict(_REGISTRY)


def engine_fields(manifest: ModelManifest) -> dict[str, Any]:
    """The Engine attributes every backend takes from the manifest (``interpolation`` included, so
    the worker's decoder resizes frames the way training did)."""
    return {
        "name": manifest.name,
        "input_size": (manifest.input_height, manifest.input_width),
        "labels": list(manifest.labels),
        "violent_index": manifest.violent_index,
        "interpolation": manifest.preprocessing.resize,
    }
