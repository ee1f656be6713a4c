# Training, reports and export (PyTorch with CUDA).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY framewatch ./framewatch
COPY worker ./worker
COPY engines ./engines
COPY training ./training
COPY benchmarks ./benchmarks
# The image's own torch is kept; the train extra adds timm, transformers and the plotting stack.
RUN pip install --no-cache-dir --no-deps . \
 && pip install --no-cache-dir "timm>=1.0.9" "transformers>=4.44" "onnx>=1.16" "onnxruntime>=1.18" "onnxscript>=0.1" \
    "pydantic>=2.6" "pydantic-settings>=2.3" "pyyaml>=6" "structlog>=24.1" "rich>=13.7" "matplotlib>=3.8" "pillow>=10"
ENTRYPOINT ["framewatch"]
CMD ["--help"]
