"""ONNX Runtime backend: the embedded default on machines without TensorRT (CUDA provider when
onnxruntime-gpu sees a GPU, else the CPU). Registers the ``onnxruntime`` backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from framewatch.engines.base import EngineOptions, engine_fields, register_backend
from framewatch.engines.manifest import ModelManifest
from framewatch.logs import get_logger

log = get_logger(__name__)


class OnnxRuntimeEngine:
    backend = "onnxruntime"

    def __init__(
        self, artifact_dir: Path, manifest: ModelManifest, providers: list[str] | None = None, intra_op_threads: int = 0,
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        # The worker calls infer from one thread; ORT's inter-op pool would only add threads.
        options.inter_op_num_threads = 1
        # ORT's intra-op threads spin between runs by default. The worker calls infer with small
        # batches between decodes, so the spinning threads took cores from the decode processes:
        # on 2 cores (Lite0 96 px, bench pipeline) turning it off raised end-to-end throughput
        # from 15.6 to 27.5 frames/s on the grid and from 33.7 to 45.6 on key frames.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(artifact_dir / manifest.onnx_file), sess_options=options, providers=providers or ["CPUExecutionProvider"],
        )
        self.providers = self.session.get_providers()
        requested = providers or ["CPUExecutionProvider"]
        # ONNX Runtime drops a provider it cannot start (no GPU, CUDA or cuDNN libraries missing)
        # with a warning of its own and runs on the next; framewatch says so in its log too.
        self.fallback = None
        if requested[0] != self.providers[0]:
            self.fallback = f"{requested[0]} could not start; running on {self.providers[0]}"
            log.warning("onnxruntime provider fallback", requested=requested[0], running=self.providers[0],
                        hint="onnxruntime-gpu needs a visible GPU and its CUDA 12 / cuDNN 9 libraries")
        fields = engine_fields(manifest)
        self.name: str = fields["name"]
        self.input_size: tuple[int, int] = fields["input_size"]
        self.labels: list[str] = fields["labels"]
        self.violent_index: int = fields["violent_index"]
        self.interpolation: str = fields["interpolation"]
        self.max_batch = manifest.max_batch
        self._input_name = manifest.input_name
        self._output_names = [manifest.output_name]
        self._on_cuda = self.providers[0] == "CUDAExecutionProvider"
        self._expected_tail = (manifest.input_height, manifest.input_width, 3)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != self._expected_tail:
            raise ValueError(f"expected uint8 N×{self._expected_tail[0]}×{self._expected_tail[1]}×3, got {batch.dtype} {batch.shape}")
        if self._on_cuda:
            return self._infer_bound(batch)
        outputs = self.session.run(self._output_names, {self._input_name: batch})
        return np.asarray(outputs[0], dtype=np.float32)

    def _infer_bound(self, batch: np.ndarray) -> np.ndarray:
        # On CUDA, I/O binding copies the uint8 batch once and lets ORT allocate the output on the
        # host side; on CPU plain run() is already zero-copy and binding only adds Python calls.
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._input_name, np.ascontiguousarray(batch))
        binding.bind_output(self._output_names[0], "cpu")
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then the CPU."""
    available = ort.get_available_providers()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available else ["CPUExecutionProvider"]


def _probe(artifact_dir: Path, manifest: ModelManifest) -> tuple[bool, str]:
    chosen = providers()
    if chosen[0] == "CUDAExecutionProvider":
        return True, "ONNX Runtime CUDA provider (the session logs a fallback to the CPU if it cannot start)"
    return True, "ONNX Runtime CPU provider"


def _create(artifact_dir: Path, manifest: ModelManifest, options: EngineOptions) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(artifact_dir, manifest, providers=providers(), intra_op_threads=options.intra_op_threads)


register_backend("onnxruntime", priority=10, probe=_probe, create=_create)
