"""Every command explains itself, and none of them imports torch to do so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from framewatch.cli.main import build_parser

COMMANDS = [
    [], ["dev"], ["dev", "up"], ["dev", "down"], ["dev", "status"], ["config", "show"], ["demo"],
    ["worker"], ["produce"], ["scores", "get"], ["scores", "history"], ["scores", "top"], ["scores", "alerts"],
    ["data", "synth"], ["train"], ["report"], ["evaluate-clip"], ["export"],
    ["engine", "build"], ["engine", "check"], ["bench", "engine"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "framewatch")
def test_help_explains_each_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: framewatch" in text and len(text) > 200


def test_help_does_not_import_torch() -> None:
    code = "import sys; from framewatch.cli.main import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit: pass\nassert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
