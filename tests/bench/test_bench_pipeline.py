"""`framewatch bench pipeline` and `bench soak` run end to end and write their JSON contract.

Numbers are never asserted (they belong to the benchmark's JSON); only that each phase ran on
real data for every sampling policy: frames were decoded, scored by the worker and by the ffmpeg
peer (where Debian's ffmpeg is installed), and timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from framewatch.benchmarks.pipeline import PacedResult, Timeline
from framewatch.benchmarks.soak import SoakOptions, soak_report
from framewatch.config import FrameWatchSettings

PIPELINE_FIELDS = {"decode_fps", "infer_fps", "e2e_fps", "naive_fps", "peer_fps", "p50_latency_ms", "p99_latency_ms", "rss_mb", "machine",
                   "backend", "model", "batch", "policies"}
POLICY_FIELDS = {"decode_fps", "e2e_fps", "peer_fps", "streams_per_core", "p50_latency_ms", "p99_latency_ms", "rss_mb", "detection_delay_s"}
SMALL = ["--width", "320", "--height", "180", "--fps", "15", "--grain", "0", "--streams", "2"]


def test_rate_between_ignores_start_up_and_tail() -> None:
    # 0 frames for 5 s (start-up), then 10 frames/s, then a slow tail.
    points = [(float(t), 0) for t in range(5)] + [(5.0 + t / 10, t) for t in range(101)] + [(20.0, 105), (30.0, 110)]
    assert Timeline(points).rate_between(110) == pytest.approx(10.0, rel=0.05)
    assert Timeline([(0.0, 0)]).rate_between(110) == 0.0


def test_soak_report_measures_growth_after_warm_up(tmp_path: Path) -> None:
    # RSS: 100 MiB during warm-up, then 200 → 210 MiB: +5 % after warm-up, whatever the warm-up did.
    rss = [(60.0 * m, 100.0 if m < 2 else 200.0 + 10.0 * (m - 2) / 8, 50.0) for m in range(11)]
    paced = PacedResult(latencies_ms=[100.0, 300.0], produced_at=[30.0, 400.0], unfinished=0, rss=rss)
    options = SoakOptions(model=tmp_path, json_out=tmp_path / "soak.json", minutes=10, warmup_minutes=2)
    result = soak_report(options, FrameWatchSettings(), paced, 0.0, 50.0, 1.0, 2.0, 0)
    assert result["rss_mb_after_warmup"] == 200.0 and result["rss_mb_final"] == 210.0
    assert result["rss_growth_after_warmup"] == pytest.approx(0.05) and result["goal_rss_growth_below_10_percent"]
    assert [row["segments"] for row in result["per_minute"]][:7] == [1, 0, 0, 0, 0, 0, 1]
    assert (tmp_path / "soak.png").exists()


@pytest.mark.slow  # ~3 min: the whole benchmark, three policies, on a tiny workload; `make test-slow`
def test_bench_pipeline_writes_every_field(exported_model: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "pipeline.json"
    run = subprocess.run([sys.executable, "-m", "framewatch.cli", "bench", "pipeline", "--model", str(exported_model), "--json", str(out),
                          "--seconds", "3", *SMALL], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) >= PIPELINE_FIELDS and set(result["policies"]) == {"grid", "keyframes", "adaptive"}
    for name, policy in result["policies"].items():
        assert set(policy) >= POLICY_FIELDS, name
        assert policy["workload"]["scored_frames"] > 0 and policy["e2e_fps"] > 0 and policy["derived"]["latency_samples"] > 0, name
        assert policy["derived"]["worker_exit_code"] == 0 and policy["derived"]["backlog_complete"], name
        assert (policy["peer_fps"] or 0) > 0 if shutil.which("ffmpeg") else policy["derived"]["peer_note"], name
    evidence = result["evidence"]
    assert len(evidence["off_fps"]) == len(evidence["on_fps"]) == 2 and min(evidence["off_fps"] + evidence["on_fps"]) > 0
    assert evidence["on_over_off"] > 0 and "evidence_on_within_5pct_of_off" in result["goals"]
    # keyframes take one frame from a one-keyframe segment, the grid one a second
    assert result["policies"]["keyframes"]["workload"]["scored_frames_per_segment"] == 1.0
    assert result["policies"]["grid"]["workload"]["scored_frames_per_segment"] == 2.0
    assert out.with_suffix(".png").exists()
