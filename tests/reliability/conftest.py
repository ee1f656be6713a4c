"""The reliability suite: the worker's promises under faults, hostile input and load.

`make test-reliability` runs it in full (FRAMEWATCH_RELIABILITY_FULL=1: five kills, longer
fuzzing); `make test` runs the same tests reduced to fit its budget. Each test that kills a
service starts its own copy on a free port; the others share the session's broker and Redis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FULL = os.environ.get("FRAMEWATCH_RELIABILITY_FULL") == "1"
REPORT = Path(os.environ.get("FRAMEWATCH_RELIABILITY_REPORT", ".framewatch/reliability.json"))


def report(test: str, **figures: Any) -> None:
    """Counts a test measured (duplicates, kills, …), printed and kept in one JSON file per run."""
    print(f"{test}: {figures}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[test] = {"full": FULL, **figures}
    REPORT.write_text(json.dumps(data, indent=2) + "\n")
