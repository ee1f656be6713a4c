"""framewatch engines: the model artifact contract and the runtimes that execute it.

``engines.load(path)`` returns an :class:`Engine`: ``infer(uint8 N×H×W×3) -> float32 N×C``
class probabilities, whatever runs underneath (ONNX Runtime on CPU or CUDA, TensorRT).
Only numpy, onnx and onnxruntime are imported here; tensorrt and cuda-python are imported
inside :mod:`engines.tensorrt_backend` alone.
"""

from __future__ import annotations

from engines.api import Backend, Engine, EngineError, load, select_backend
from engines.manifest import ManifestError, ModelManifest, load_manifest

__all__ = ["Backend", "Engine", "EngineError", "ManifestError", "ModelManifest", "load", "load_manifest", "select_backend"]
