"""The install's disk check (scripts/check_disk.py): a first install into too little disk is refused
in one line with the numbers, before pip fills the disk; enough disk, or an installed venv, passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_disk.py"


def _run(path: Path, needed_gb: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(path), needed_gb],
                          capture_output=True, text=True, timeout=30)


def test_too_little_disk_is_refused_with_the_numbers(tmp_path: Path) -> None:
    result = _run(tmp_path, "1e12")  # no disk has a zettabyte free
    assert result.returncode == 2
    assert "not enough disk to install framewatch" in result.stderr
    assert "GB free on" in result.stderr and "INSTALL_FREE_GB" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_enough_disk_passes(tmp_path: Path) -> None:
    assert _run(tmp_path, "0").returncode == 0


def test_an_installed_venv_is_not_checked_again(tmp_path: Path) -> None:
    (tmp_path / ".venv" / "lib" / "python3.11" / "site-packages" / "torch").mkdir(parents=True)
    assert _run(tmp_path, "1e12").returncode == 0
