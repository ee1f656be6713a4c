"""GPU check: run on a machine with an NVIDIA GPU; says plainly what it verified and what it could not.

    python -m framewatch.benchmarks.gpu_check --out gpu_check.json

Steps, each reported as VERIFIED, FAILED or NOT VERIFIED (with the reason); every value a step
prints as checked is computed from what the GPU did, never written in:

1. the GPU as cuda.bindings reports it, the versions in use (TensorRT, the CUDA runtime library
   and cuda-python's own build version, the driver, GPU model) and the TensorRT support matrix;
2. the cuda-python path of the TensorRT backend without TensorRT: pinned host buffers,
   device buffers, async copies on a stream, round-tripping real bytes;
3. training on CUDA (bf16 autocast): a guidance run (fused stage + adapt) and a baseline on
   a small synthetic set, then export with the PyTorch-vs-ONNX parity check;
4. ONNX Runtime's CUDA provider through engines.load, against the artifact's reference probabilities;
5. TensorRT: build FP32 and FP16 engines, load them, compare with the artifact's reference probabilities,
   and time them by batch size.

This script imports torch (training steps); the engines package itself never does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS: list[dict[str, Any]] = []
VERSIONS: dict[str, Any] = {}


def step(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    started = time.monotonic()
    try:
        detail = fn()
        status = detail.pop("status", "VERIFIED")
    except Exception as exc:
        detail = {"error": f"{exc.__class__.__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
        status = "FAILED"
    detail["seconds"] = round(time.monotonic() - started, 2)
    RESULTS.append({"step": name, "status": status, **detail})
    print(f"[{status}] {name}: " + json.dumps({k: v for k, v in detail.items() if k != "trace"}, default=str), flush=True)
    return detail if status == "VERIFIED" else None


def versions(cudart: Any, gpu: Any) -> dict[str, Any]:
    """What this run actually used: the GPU, CUDA runtime library (and where it was read), the CUDA
    version cuda-python was built for (reported apart: it is not the runtime's), the driver,
    cuda-python, TensorRT, ONNX Runtime and torch where installed."""
    import importlib.metadata

    from framewatch.engines.tensorrt_platform import cuda_python_version

    err, bindings_build = cudart.cudaRuntimeGetVersion()
    found: dict[str, Any] = {
        "gpu": gpu.name, "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
        "cuda_runtime": gpu.cuda_runtime_version, "cuda_runtime_source": gpu.cuda_runtime_source,
        "cuda_python_built_for": (bindings_build // 1000, bindings_build % 1000 // 10) if int(err) == 0 else None,
        "driver_cuda_version": gpu.driver_cuda_version, "driver_release": gpu.driver_release,
        "cuda_python": cuda_python_version(),
    }
    for name in ("onnxruntime", "onnxruntime-gpu", "torch", "av"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    try:  # the module, whichever distribution (tensorrt, tensorrt-cu12-bindings, …) brought it
        import tensorrt

        found["tensorrt"] = str(tensorrt.__version__)
    except ImportError:
        found["tensorrt"] = None
    return found


def gpu_and_matrix(cudart: Any = None, runtime: tuple[tuple[int, int] | None, str] | None = None) -> dict[str, Any]:
    from framewatch.engines.tensorrt_platform import check_support, import_cudart, query_gpu

    cudart = cudart or import_cudart()
    gpu = query_gpu(cudart, 0, runtime)
    VERSIONS.update(versions(cudart, gpu))
    matrix = {}
    for version in ("10.0.1", "10.4.0", "10.5.0", "10.13.0", "11.0.0"):
        try:
            check_support(version, gpu)
            matrix[version] = "supported"
        except Exception as exc:
            matrix[version] = f"refused: {exc}"
    return {**VERSIONS, "tensorrt_matrix": matrix}


def cuda_python_roundtrip(cudart: Any = None, size: int = 8 << 20) -> dict[str, Any]:
    from framewatch.engines.tensorrt_platform import import_cudart
    from framewatch.engines.tensorrt_runtime import PinnedBuffers

    buffers = PinnedBuffers(cudart or import_cudart(), size, size)
    try:
        handle = buffers.stream_handle
        if handle == 0:
            # 0 is the legacy default stream: copies "on our stream" would serialise with every other.
            raise AssertionError("cudaStreamCreate gave handle 0 (the default stream), not a stream of our own")
        payload = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
        buffers.host_in[:] = payload
        buffers.host_out[:] = 0
        buffers.upload(size)
        buffers.device_copy(size)
        buffers.download(size)
        buffers.synchronize()
        same = bool(np.array_equal(buffers.host_out, payload))
    finally:
        buffers.close()
    if not same:
        raise AssertionError("bytes changed on the way host → device → device → host")
    return {"bytes": size, "stream_handle": hex(handle), "stream_handle_nonzero": handle != 0, "bytes_identical": same}


def make_tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ("stream title things got heated no mercy tonight chill vibes and chat category the streamer has past moderation "
             "violation violations streaming from pc phone webcam shooter racing irl street music cooking travel sports").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    (folder / "vocab.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)).save_pretrained(folder)
    return folder


def training_on_cuda(work: Path, device: str = "cuda") -> dict[str, Any]:
    import torch

    from framewatch.training.config import TrainConfig
    from framewatch.training.export import export_run
    from framewatch.training.synth import write_dataset
    from framewatch.training.train import train

    if device.startswith("cuda") and not torch.cuda.is_available():
        return {"status": "NOT VERIFIED", "reason": "torch sees no CUDA device"}
    write_dataset(work / "data", {"train": 256, "val": 64, "test": 64}, seed=0, image_size=64, progress=False)
    text = make_tiny_bert(work / "tiny-bert")
    out: dict[str, Any] = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device}
    for mode, freeze in (("guidance", False), ("baseline", True)):
        cfg = TrainConfig(data=work / "data", out=work / f"run-{mode}", mode=mode, image_encoder="mobileone_s0", pretrained=False, image_size=64,
                          text_encoder=str(text), text_max_length=16, freeze_text=freeze, fusion_dim=64, epochs=2, batch_size=64,
                          device=device, progress=False)
        summary = train(cfg)
        losses = [h["train_loss"] for h in summary["history"]]
        if not all(np.isfinite(losses)):
            raise AssertionError(f"{mode}: non-finite loss {losses}")
        out[mode] = {"stages": sorted({h["stage"] for h in summary["history"]}), "losses": [round(x, 4) for x in losses],
                     "test_roc_auc": summary["splits"]["test"]["roc_auc"], "seconds": summary["train_seconds"]}
    report = export_run(work / "run-guidance", work / "artifact", fp16=True)
    out["export"] = report
    return out


def onnxruntime_cuda(work: Path) -> dict[str, Any]:
    import onnxruntime as ort

    from framewatch.engines import load
    from framewatch.engines.check import check_engine

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"status": "NOT VERIFIED", "reason": f"this onnxruntime has no CUDA provider ({ort.get_available_providers()})"}
    engine = load(work / "artifact", "onnxruntime")
    providers = list(getattr(engine, "providers", []))
    if not providers or providers[0] != "CUDAExecutionProvider":
        raise AssertionError(f"the session runs on {providers}: ONNX Runtime could not start its CUDA provider (CUDA 12 / cuDNN 9 libraries?)")
    result = check_engine(work / "artifact", "onnxruntime")
    result["providers"] = providers
    if result["max_abs_diff_vs_reference"] > 2e-3:
        raise AssertionError(f"CUDA provider differs from the reference probabilities by {result['max_abs_diff_vs_reference']}")
    return result


def tensorrt(work: Path) -> dict[str, Any]:
    try:
        import tensorrt as trt
    except ImportError:
        return {"status": "NOT VERIFIED", "reason": "tensorrt is not installed on this machine"}
    from framewatch.engines.check import check_engine
    from framewatch.engines.manifest import load_manifest
    from framewatch.engines.tensorrt_build import build_engine
    from framewatch.engines.tensorrt_platform import BuildRequest, Precision

    artifact = work / "artifact"
    manifest = load_manifest(artifact)
    out: dict[str, Any] = {"tensorrt": trt.__version__}
    precisions: tuple[Precision, ...] = ("fp32", "fp16")
    for precision in precisions:
        _, info = build_engine(artifact, manifest, BuildRequest(max_batch=64, opt_batch=32, precision=precision, timing_cache=work / "timing"))
        if precision == "fp32" and info.tf32 is not False:
            raise AssertionError(f"the FP32 build left TF32 {info.tf32!r}: FP32 parity would be TF32's")
        result = check_engine(artifact, "tensorrt", batch_sizes=(1, 8, 32, 64))
        # Against PyTorch's probabilities: the FP32 graph itself is held to reference.tolerance at export.
        limit = 2 * (manifest.reference.tolerance if manifest.reference else 5e-4) if precision == "fp32" else 1e-2
        if result["max_abs_diff_vs_reference"] > limit:
            raise AssertionError(f"{precision}: max |Δp| {result['max_abs_diff_vs_reference']} > {limit}")
        out[precision] = {"build_seconds": info.build_seconds, "tf32": info.tf32, "timing_cache": info.timing_cache,
                          "builder_version": info.tensorrt_version, "cuda_runtime": info.cuda_runtime, **result}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--device", default="cuda", help="training device; 'cpu' rehearses the script on a machine without a GPU")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="framewatch-gpu-"))
    step("GPU and TensorRT support matrix (cuda.bindings)", gpu_and_matrix)
    step("cuda-python pinned buffers and async copies on a stream", cuda_python_roundtrip)
    trained = step(f"training on {args.device} (guidance with text trained, baseline) and export", lambda: training_on_cuda(work, args.device))
    if trained:
        step("ONNX Runtime CUDA provider vs CPU", lambda: onnxruntime_cuda(work))
        step("TensorRT build (FP32, FP16), run and parity", lambda: tensorrt(work))
    args.out.write_text(json.dumps({"versions": VERSIONS, "steps": RESULTS}, indent=2, default=str) + "\n")
    print("\nversions used: " + json.dumps(VERSIONS, default=str))
    print("\nsummary:")
    for result in RESULTS:
        print(f"  {result['status']:13} {result['step']}" + (f" — {result.get('reason') or result.get('error')}" if result["status"] != "VERIFIED" else ""))
    return 1 if any(r["status"] == "FAILED" for r in RESULTS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
