"""Mirror the installed layout for mypy, which cannot follow setuptools' package-dir mapping.

pyproject.toml maps framewatch.worker → worker/, framewatch.training → training/ and so on, so
mypy run on the repository would see four top-level packages instead of one. This writes
OUT/framewatch/ with links to framewatch/'s own entries and to each mapped folder, read from
pyproject.toml so the two never disagree; `make lint` runs mypy there."""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path


def build(repo: Path, out: Path) -> Path:
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    root = out / "framewatch"
    if out.exists():
        shutil.rmtree(out)
    root.mkdir(parents=True)
    for entry in (repo / mapping["framewatch"]).iterdir():
        if entry.name != "__pycache__":
            (root / entry.name).symlink_to(entry.resolve())
    for package, folder in mapping.items():
        if package == "framewatch":
            continue
        parent, _, name = package.rpartition(".")
        assert parent == "framewatch", f"only framewatch.X mappings are mirrored, not {package}"
        (root / name).symlink_to((repo / folder).resolve(), target_is_directory=True)
    return root


if __name__ == "__main__":
    repo = Path(__file__).resolve().parent.parent
    print(build(repo, Path(sys.argv[1]) if len(sys.argv) > 1 else repo / ".typecheck"))
