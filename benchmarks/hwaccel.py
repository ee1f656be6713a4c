"""Hardware decoding measured where a GPU exists: software and ``decode.hwaccel`` per sampling policy.

    python -m framewatch.benchmarks.hwaccel --device cuda --json hwaccel.json

Encodes real H.264 segments (the pipeline benchmark's 720p30 camera-like workload, and 1080p),
then decodes them through the worker's own ``decode_segment`` in this process: in software, and
with the hardware decoder (PyAV's ``av.open(..., hwaccel=...)``), for the grid and for key frames.
It reports sampled frames per second per process, milliseconds per segment, and whether each
message really ran on the device (``DecodeResult.hwaccel``), so a silent fallback shows. First it
runs the worker's start-up probe; if that refuses, the JSON says why and nothing else is measured.

Not run in CI and not run on this project's build machines (no GPU); the lent GPU machines had no
PyAV (its wheel is larger than what can be carried there). docs/performance.md says what was
measured. One decode process is measured; the worker runs ``decode.workers`` of them, each with
its own device context (PyAV opens one per container: part of what this measures).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from framewatch.config import DecodeSettings
from framewatch.machine import describe


def _segments(width: int, height: int, count: int = 3) -> list[tuple[bytes, str]]:
    from framewatch.benchmarks.pipeline import synthetic_frames
    from framewatch.worker.media import encode_segment

    return [encode_segment(synthetic_frames(seed, 60, width, height, 6.0), 30.0, "mpegts", crf=23) for seed in range(count)]


def measure(device: str | None, policy: str, segments: list[tuple[bytes, str]], seconds: float) -> dict[str, Any]:
    from framewatch.worker.decode import decode_request, decode_segment

    model = type("Model", (), {"input_size": (224, 224), "interpolation": "bilinear"})()
    settings = DecodeSettings(policy=policy, hwaccel=device)
    requests = [decode_request(settings, model, payload, content_type, 0, 2000) for payload, content_type in segments]
    decode_segment(requests[0])  # warm-up (a device context, codecs)
    done = sampled = 0
    where: dict[str, int] = {}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        result = decode_segment(requests[done % len(requests)])
        done += 1
        sampled += len(result.frames)
        key = result.hwaccel or "software (not asked)"
        where[key] = where.get(key, 0) + 1
    elapsed = time.monotonic() - started
    return {"segments": done, "sampled_fps": round(sampled / elapsed, 2), "ms_per_segment": round(elapsed / done * 1000, 2), "decoded_on": where}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=Path("hwaccel.json"))
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    args = parser.parse_args()
    from framewatch.worker.decode import HWAccelError, probe_hwaccel

    result: dict[str, Any] = {"machine": describe(), "device": args.device}
    try:
        result["probe"] = probe_hwaccel(args.device)
    except HWAccelError as exc:
        result["probe"] = f"refused: {exc}"
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(result["probe"])
        return 1
    for label, (width, height) in (("720p30", (1280, 720)), ("1080p30", (1920, 1080))):
        segments = _segments(width, height)
        for policy in ("grid", "keyframes"):
            for name, device in (("software", None), (args.device, args.device)):
                row = measure(device, policy, segments, args.seconds)
                result.setdefault(label, {}).setdefault(policy, {})[name] = row
                print(label, policy, name, json.dumps(row), flush=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
