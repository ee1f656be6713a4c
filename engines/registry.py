"""The one factory: load an artifact onto the best registered backend, or the one asked for.

Built-in backends are modules that register themselves when imported; installed packages may add
more through the ``framewatch.engines`` entry-point group (each entry names a module to import).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from framewatch.engines.base import BackendSpec, Engine, EngineError, EngineOptions, registered
from framewatch.engines.manifest import ModelManifest, load_manifest
from framewatch.logs import get_logger

log = get_logger("engines")

BUILTIN_BACKENDS = ("framewatch.engines.onnxrt", "framewatch.engines.tensorrt_runtime")
ENTRY_POINT_GROUP = "framewatch.engines"
_discovered = False


def backends() -> dict[str, BackendSpec]:
    """Every registered backend, importing the built-in and entry-point ones on first use."""
    global _discovered
    if not _discovered:
        for module in BUILTIN_BACKENDS:
            importlib.import_module(module)
        from importlib.metadata import entry_points

        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry.load()
            except Exception as exc:  # a broken plugin must not take the built-in backends down
                log.warning("engine plugin failed to load", plugin=entry.name, error=f"{exc.__class__.__name__}: {exc}")
        _discovered = True
    return registered()


def backend_names() -> list[str]:
    return ["auto", *sorted(backends())]


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    reason: str


def select_backend(requested: str, statuses: dict[str, tuple[bool, str]], priorities: dict[str, int]) -> BackendChoice:
    """Pure decision of :func:`load`: which backend, and why. ``statuses`` maps each probed backend
    to (usable, reason); ``auto`` takes the usable one of highest priority."""
    if requested != "auto":
        if requested not in priorities:
            raise EngineError(f"unknown backend {requested!r}; registered: {', '.join(sorted(priorities))}")
        ok, reason = statuses[requested]
        if not ok:
            raise EngineError(f"backend={requested} was requested but cannot be used: {reason}")
        return BackendChoice(requested, f"requested; {reason}")
    skipped: list[str] = []
    for name in sorted(statuses, key=lambda n: -priorities[n]):
        ok, reason = statuses[name]
        if ok:
            why = f"auto: {reason}" + (f" ({'; '.join(skipped)})" if skipped else "")
            return BackendChoice(name, why)
        skipped.append(f"{name} not used: {reason}")
    raise EngineError("no backend can run this artifact: " + "; ".join(skipped))


def _probe(spec: BackendSpec, artifact_dir: Path, manifest: ModelManifest) -> tuple[bool, str]:
    """A probe that raises (a plugin's bug) counts as "cannot be used", never as a failed load."""
    try:
        return spec.probe(artifact_dir, manifest)
    except Exception as exc:
        return False, f"its probe failed: {exc.__class__.__name__}: {exc}"


def load(path: Path | str, backend: str = "auto", *, intra_op_threads: int = 0, verify_hash: bool = True) -> Engine:
    """Load a model artifact folder onto the best (or the requested) backend and log the choice."""
    artifact_dir = Path(path)
    manifest = load_manifest(artifact_dir, verify_hash=verify_hash)
    specs = backends()
    names = list(specs) if backend == "auto" else [backend] if backend in specs else []
    statuses = {name: _probe(specs[name], artifact_dir, manifest) for name in names}
    choice = select_backend(backend, statuses, {name: spec.priority for name, spec in specs.items()})
    log.info("engine selected", backend=choice.backend, reason=choice.reason, model=manifest.name, artifact=str(artifact_dir))
    engine: Engine = specs[choice.backend].create(artifact_dir, manifest, EngineOptions(intra_op_threads=intra_op_threads))
    return engine
