# The moderator dashboard (framewatch dashboard): Starlette, templates and one script inside the
# package; it reads Redis and the evidence store only. No torch, no PyAV, no Kafka client.
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
RUN pip install --no-cache-dir --find-links /wheels "framewatch[dashboard]" \
 && site="$(python -c 'import framewatch, os; print(os.path.dirname(framewatch.__file__))')" \
 && rm -rf "$site/training" "$site/benchmarks" /wheels \
 && python -c "import framewatch.dashboard.app, framewatch.cli.main as m, sys; m.build_parser(); assert 'torch' not in sys.modules and 'kafka' not in sys.modules"
RUN useradd --system --uid 10001 framewatch
USER 10001
WORKDIR /home/framewatch
EXPOSE 8780
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8780/healthz').status == 200 else 1)"]
ENTRYPOINT ["framewatch", "dashboard"]
# Inside the container it listens on all interfaces; compose publishes it on the host's loopback only.
CMD ["--users", "/run/secrets/dashboard_users", "--host", "0.0.0.0"]
