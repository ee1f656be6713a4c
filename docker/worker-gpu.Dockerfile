# GPU worker: CUDA 12.6 and cuDNN 9 runtime on Ubuntu 24.04 (Python 3.12), TensorRT and cuda-python
# from framewatch's per-generation extra, ONNX Runtime's CUDA build; no torch.
#   docker build -f docker/worker-gpu.Dockerfile .                                  # V100 (Volta): TensorRT 10.0–10.4
#   docker build -f docker/worker-gpu.Dockerfile --build-arg GPU_EXTRA=tensorrt .   # Turing and newer: TensorRT 10.5+
# Why not nvcr.io/nvidia/tensorrt:24.08-py3: it is Ubuntu 22.04 with Python 3.10, and framewatch
# needs 3.11+ (tests/unit/test_docker.py keeps a table of each base image's Python).
# The pip TensorRT wheels have no trtexec: engines are built with the Python API.
# Stage 1 builds framewatch's wheel; stage 2 installs it and keeps only what the worker imports.
ARG GPU_EXTRA=tensorrt-volta

FROM python:3.12.8-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY framewatch ./framewatch
COPY worker ./worker
COPY engines ./engines
COPY training ./training
COPY benchmarks ./benchmarks
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG GPU_EXTRA
# ONNX Runtime's CUDA 12 / cuDNN 9 build, used when no TensorRT engine is built for this GPU.
ARG ONNXRUNTIME_GPU=1.20.1
# "video" mounts the driver's NVDEC library (libnvcuvid) for decode.hwaccel: cuda; the nvidia/cuda
# images ask for compute and utility only.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PATH=/opt/venv/bin:$PATH \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video
# Ubuntu's python3.12 follows the pinned base image's release; pinning a package version that
# the archive later replaces would only break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3.12 -m venv /opt/venv
COPY --from=wheel /wheels /wheels
# The worker extra brings the CPU onnxruntime; it and onnxruntime-gpu install the same module,
# so the CPU build is removed first and the CUDA provider's presence checked.
RUN pip install --no-cache-dir --find-links /wheels "framewatch[worker,${GPU_EXTRA}]" \
 && pip uninstall -y onnxruntime \
 && pip install --no-cache-dir "onnxruntime-gpu==${ONNXRUNTIME_GPU}" \
 && site="$(python -c 'import framewatch, os; print(os.path.dirname(framewatch.__file__))')" \
 && rm -rf "$site/training" "$site/benchmarks" /wheels \
 && python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()" \
 && python -c "import framewatch.worker.service, framewatch.cli.main as m, sys; m.build_parser(); assert 'torch' not in sys.modules"
# /cache: the timing-cache volume of docker/compose.yaml, writable whichever uid the build runs as.
RUN useradd --system --uid 10001 framewatch && mkdir -m 1777 /cache
USER 10001
WORKDIR /home/framewatch
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz').status == 200 else 1)"]
ENTRYPOINT ["framewatch", "worker"]
CMD ["--model", "/models/current", "--backend", "auto"]
