"""framewatch engines: the model artifact contract and the runtimes that execute it.

``framewatch.engines.load(path)`` returns an :class:`Engine`: ``infer(uint8 N×H×W×3) -> float32 N×C``
class probabilities, whatever runs underneath (ONNX Runtime on CPU or CUDA, TensorRT). Runtimes
register themselves (:mod:`framewatch.engines.base`); only numpy, onnx and onnxruntime are imported
eagerly, tensorrt and cuda-python only inside the TensorRT modules, when they run.
"""

from __future__ import annotations

from framewatch.engines.base import Engine, EngineError, EngineOptions, register_backend
from framewatch.engines.manifest import ManifestError, ModelManifest, load_manifest
from framewatch.engines.registry import backend_names, load, select_backend

__all__ = ["Engine", "EngineError", "EngineOptions", "ManifestError", "ModelManifest", "backend_names", "load", "load_manifest",
           "register_backend", "select_backend"]
