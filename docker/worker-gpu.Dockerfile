# GPU worker on NVIDIA's TensorRT runtime image (TensorRT 10.x, CUDA 12.x). No torch.
# For a V100 (compute capability 7.0) keep a base with TensorRT <= 10.4 (see docs/deployment.md).
# Stage 1 builds framewatch's wheel; stage 2 installs it and keeps only what the worker imports.
FROM python:3.11.10-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY framewatch ./framewatch
COPY worker ./worker
COPY engines ./engines
COPY training ./training
COPY benchmarks ./benchmarks
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM nvcr.io/nvidia/tensorrt:24.08-py3
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=wheel /wheels /wheels
# tensorrt ships in the base image; cuda-python gives the runtime calls the backend uses.
RUN pip install --no-cache-dir --find-links /wheels "framewatch[worker]" "cuda-python>=12.3,<13" \
 && site="$(python -c 'import framewatch, os; print(os.path.dirname(framewatch.__file__))')" \
 && rm -rf "$site/training" "$site/benchmarks" /wheels \
 && python -c "import framewatch.worker.service, framewatch.cli.main as m, sys; m.build_parser(); assert 'torch' not in sys.modules"
RUN useradd --system --uid 10001 framewatch
USER 10001
WORKDIR /home/framewatch
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz').status == 200 else 1)"]
ENTRYPOINT ["framewatch", "worker"]
CMD ["--model", "/models/current", "--backend", "auto"]
