"""The same training code under torchrun: two CPU processes (gloo), one run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framewatch.training.synth import write_dataset

pytestmark = pytest.mark.integration


@pytest.mark.slow  # 28 s: two processes train; `make test-slow`
def test_torchrun_two_processes_train_one_model(tmp_path: Path) -> None:
    # 35 samples over 2 ranks at batch 16: unpadded, rank 0 would take 2 steps and rank 1 one (its
    # second batch a single sample, dropped), and the ranks would wait on each other forever.
    write_dataset(tmp_path / "data", {"train": 35, "val": 8, "test": 8}, seed=2, image_size=32, progress=False)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "framewatch.cli",
           "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--mode", "baseline",
           "--image-encoder", "mobileone_s0", "--no-pretrained", "--image-size", "32", "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--quiet"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert [h["steps"] for h in metrics["history"]] == [2, 2]  # ceil(ceil(35 / 2) / 16) on every rank
    assert metrics["splits"]["test"]["n"] == 8
