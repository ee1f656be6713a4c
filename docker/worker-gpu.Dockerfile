# GPU worker on NVIDIA's TensorRT runtime image (TensorRT 10.x, CUDA 12.x). No torch.
# For a V100 (compute capability 7.0) keep a base with TensorRT <= 10.4 (see docs/deployment.md).
FROM nvcr.io/nvidia/tensorrt:24.08-py3

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY framewatch ./framewatch
COPY worker ./worker
COPY engines ./engines
COPY training/__init__.py training/cli.py ./training/
# tensorrt ships in the base image; cuda-python gives the runtime calls the backend uses.
RUN pip install --no-cache-dir ".[worker]" "cuda-python>=12.3,<13" \
 && python -c "import worker.service, sys; assert 'torch' not in sys.modules"
RUN useradd --system --uid 10001 framewatch
USER 10001
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz').status == 200 else 1)"]
ENTRYPOINT ["framewatch", "worker"]
CMD ["--model", "/models/current", "--backend", "auto"]
