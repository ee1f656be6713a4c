# Slim CPU worker: ONNX Runtime, PyAV, kafka-python, redis. No torch.
# Stage 1 builds framewatch's wheel from the source tree (pyproject maps worker/, engines/, … under
# the one import root framewatch); stage 2 installs it and keeps only what the worker imports.
FROM python:3.11.10-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY framewatch ./framewatch
COPY worker ./worker
COPY engines ./engines
COPY training ./training
COPY benchmarks ./benchmarks
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY --from=wheel /wheels /wheels
# The training side and the benchmarks leave the image: the command line says so if asked for them.
RUN pip install --no-cache-dir --find-links /wheels "framewatch[worker]" \
 && site="$(python -c 'import framewatch, os; print(os.path.dirname(framewatch.__file__))')" \
 && rm -rf "$site/training" "$site/benchmarks" /wheels \
 && python -c "import framewatch.worker.service, framewatch.cli.main as m, sys; m.build_parser(); assert 'torch' not in sys.modules"
RUN useradd --system --uid 10001 framewatch
USER 10001
WORKDIR /home/framewatch
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz').status == 200 else 1)"]
ENTRYPOINT ["framewatch", "worker"]
CMD ["--model", "/models/current"]
