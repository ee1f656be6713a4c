"""Refuse an install that cannot fit, in one line, before pip fills the disk.

Usage: python scripts/check_disk.py PATH NEEDED_GB. Exit 0 when PATH's file system has NEEDED_GB
free (or the venv is already installed there), 2 with the numbers otherwise. Standard library
only: it runs before the venv exists.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check_disk.py PATH NEEDED_GB", file=sys.stderr)
        return 2
    path, needed_gb = Path(argv[0]), float(argv[1])
    if any((path / ".venv").glob("lib/python*/site-packages/torch")):
        return 0  # an update of an installed venv needs far less than a first install
    free_gb = shutil.disk_usage(path).free / 1e9
    if free_gb < needed_gb:
        print(
            f"not enough disk to install framewatch: {free_gb:.1f} GB free on {path.resolve()}, "
            f"about {needed_gb:g} GB needed (torch's CUDA build and its nvidia-* wheels); "
            "free some space or set INSTALL_FREE_GB to override",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
