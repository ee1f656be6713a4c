# Slim CPU worker: ONNX Runtime, PyAV, kafka-python, redis. No torch.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY framewatch ./framewatch
COPY worker ./worker
COPY engines ./engines
COPY training/__init__.py training/cli.py ./training/
RUN pip install --no-cache-dir ".[worker]" \
 && python -c "import worker.service, sys; assert 'torch' not in sys.modules"
RUN useradd --system --uid 10001 framewatch
USER 10001
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz').status == 200 else 1)"]
ENTRYPOINT ["framewatch", "worker"]
CMD ["--model", "/models/current"]
