"""The house: one import root, layers that only point down, no import circles, and one front door
that answers a common mistake with one line.

The import picture is read from the source (every import, the lazy ones inside functions too), with
module names as installed: pyproject.toml's package-dir maps worker/ to framewatch.worker and so on.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]

# Layers, top to bottom (docs/layout.md). A module may import its own room, and anything on a lower floor.
GROUND = {"framewatch", "framewatch.config", "framewatch.logs", "framewatch.errors", "framewatch.devservices", "framewatch.machine"}
ROOMS = {"framewatch.engines": 1, "framewatch.worker": 2, "framewatch.training": 2, "framewatch.cli": 3, "framewatch.benchmarks": 3,
         "framewatch.dashboard": 3}
# Sideways doors that the design allows: training reads the worker's decoder (frames as the worker sees
# them); the command line runs the benchmarks. Nothing in the product imports the benchmarks.
ALLOWED_SIDEWAYS = {("framewatch.training", "framewatch.worker"), ("framewatch.cli", "framewatch.benchmarks"),
                    ("framewatch.cli", "framewatch.dashboard")}


def room(module: str) -> str:
    if module in GROUND:
        return "ground"
    for name in ROOMS:
        if module == name or module.startswith(name + "."):
            return name
    raise AssertionError(f"{module} is in no room of the layout: add it to GROUND or ROOMS (and docs/layout.md)")


def floor(name: str) -> int:
    return 0 if name == "ground" else ROOMS[name]


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGE_DIR.items():
        base = REPO / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            # a subfolder mapped on its own (framewatch.worker inside framewatch/) is not walked twice
            if package == "framewatch" and parts and f"framewatch.{parts[0]}" in PACKAGE_DIR:
                continue
            found[".".join([package, *parts]) if parts else package] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        for name in names:
            # the longest known module the name is, or lies in
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def test_no_import_runs_up_a_floor_or_across_rooms() -> None:
    bad = []
    for module, targets in graph().items():
        here = room(module)
        for target in targets:
            there = room(target)
            if there == here or floor(there) < floor(here) or (here, there) in ALLOWED_SIDEWAYS:
                continue
            bad.append(f"{module} → {target} ({here} → {there})")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_the_dashboard_reads_redis_and_evidence_only() -> None:
    """The dashboard never talks to Kafka or the engine, and never needs torch (docs/review.md)."""
    edges = graph()
    reached, todo = set(), [m for m in edges if m.startswith("framewatch.dashboard")]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    forbidden = {m for m in reached if m.startswith(("framewatch.engines", "framewatch.training", "framewatch.worker.kafka_client",
                                                       "framewatch.worker.service", "framewatch.worker.inference"))}
    assert not forbidden, forbidden
    for path in (REPO / "framewatch" / "dashboard").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(name.split(".")[0] in ("kafka", "torch", "onnxruntime", "tensorrt") for name in names), (path, names)


def test_no_import_circles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_layout_check_sees_a_violation() -> None:
    """The walker is not blind: a lazy import inside a function, from the product up to the CLI, is found."""
    src = "def f():\n    from framewatch.cli.main import main\n    from . import contracts\n"
    path = Path(REPO / ".pytest_cache" / "probe_layout.py")
    path.parent.mkdir(exist_ok=True)
    path.write_text(src)
    found = imports_of("framewatch.worker.probe", path, set(modules()))
    assert {"framewatch.cli.main", "framewatch.worker.contracts"} <= found
    assert floor(room("framewatch.cli.main")) > floor(room("framewatch.worker.probe"))


@pytest.mark.timeout(240)
def test_a_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """`pip install .` puts framewatch and nothing else at the top of site-packages."""
    src = tmp_path / "src"  # built from a copy: setuptools writes build/ beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in PACKAGE_DIR.values():
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
                   check=True, timeout=200, capture_output=True)
    (wheel,) = tmp_path.glob("framewatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"framewatch", next(t for t in top if t.endswith(".dist-info"))}, top
    for must in ("framewatch/worker/service.py", "framewatch/engines/registry.py", "framewatch/training/recipes/default.yaml",
                 "framewatch/cli/main.py", "framewatch/benchmarks/pipeline.py"):
        assert must in names, must

    # The worker image: the wheel with the training side and the benchmarks removed (docker/worker-*.Dockerfile).
    # Python runs without site (-S), so the editable install of this checkout cannot stand in for them.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    for gone in ("training", "benchmarks"):
        shutil.rmtree(site / "framewatch" / gone)
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    env = {"PYTHONPATH": os.pathsep.join([str(site), deps]), "PATH": "/usr/bin:/bin"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-S", "-m", "framewatch.cli", *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    assert "--model" in cli("worker", "--help").stdout
    for args in (("train", "--data", "x"), ("bench", "engine", "x", "--json", "y")):
        run = cli(*args)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert "image leaves" in run.stderr or "not installed" in run.stderr, run.stderr


def test_the_worker_side_runs_with_a_torch_that_cannot_be_imported(tmp_path: Path) -> None:
    blocker = tmp_path / "torch.py"
    blocker.write_text("raise ImportError('no torch here')\n")
    code = ("import framewatch.cli.main as m, framewatch.worker.service, framewatch.engines; m.build_parser(); "
            "import sys; assert 'torch' not in sys.modules")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=60)
    help_text = subprocess.run([sys.executable, "-m", "framewatch.cli", "worker", "--help"], check=True, env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=60).stdout
    assert "--model" in help_text


# --- the front door --------------------------------------------------------------------------

def leaf_commands() -> list[tuple[str, ...]]:
    import argparse

    from framewatch.cli.main import build_parser

    out: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append(path)
            return
        for name, sub in subs[0].choices.items():
            walk(sub, (*path, name))

    walk(build_parser(), ())
    return out


DEAD_REDIS = "redis://127.0.0.1:1/0"  # port 1: nothing listens
DEAD_KAFKA = "127.0.0.1:1"


def mistakes(tmp: Path) -> dict[tuple[str, ...], list[str]]:
    """A common mistake for every command: a missing path, or a service that does not answer."""
    missing = str(tmp / "nonexistent")
    under_a_file = str(tmp / "a-file" / "sub")  # cannot be created, even by root
    (tmp / "a-file").write_text("")
    video = tmp / "clip.mp4"
    return {
        ("dev", "status"): ["--state-dir", missing],
        ("config", "show"): ["--config", missing + ".yaml"],
        ("worker",): ["--model", missing],
        ("produce",): [missing, "--stream-id", "cam1", "--bootstrap-servers", DEAD_KAFKA],
        ("scores", "get"): ["cam1", "--redis-url", DEAD_REDIS],
        ("scores", "history"): ["cam1", "--redis-url", DEAD_REDIS],
        ("scores", "top"): ["--redis-url", DEAD_REDIS],
        ("scores", "alerts"): ["--redis-url", DEAD_REDIS],
        ("dashboard",): ["--users", missing],
        ("dashboard", "dead-redis"): ["--trusted-header", "X-User", "--redis-url", DEAD_REDIS],
        ("dashboard", "passwd"): [under_a_file, "ana", "--password-stdin"],
        ("feedback", "export"): ["--out", str(tmp / "feedback"), "--redis-url", DEAD_REDIS],
        ("webhook",): ["--url", "http://127.0.0.1:1/hook", "--secret-file", missing, "--once"],
        ("data", "synth"): [under_a_file, "--train", "2", "--val", "2", "--test", "2", "--quiet"],
        ("data", "check"): [missing, "--quiet"],
        ("data", "preview"): [missing, "--out", str(tmp / "preview.png")],
        ("data", "from-videos"): [missing + ".csv", "--out", str(tmp / "frames"), "--quiet"],
        ("train",): ["--data", missing, "--out", str(tmp / "run"), "--quiet"],
        ("report",): [missing, "--out", str(tmp / "report.md")],
        ("evaluate-clip",): ["--data", missing],
        ("export",): [missing, "--out", str(tmp / "artifact")],
        ("engine", "build"): [missing],
        ("engine", "check"): [missing],
        ("bench", "pipeline"): ["--model", missing, "--json", str(tmp / "p.json")],
        ("bench", "soak"): ["--model", missing, "--json", str(tmp / "s.json")],
        ("bench", "engine"): [missing, "--json", str(tmp / "e.json")],
        ("bench", "train"): ["--data", missing, "--json", str(tmp / "t.json")],
        # a real video, a dead broker
        ("produce", "dead-broker"): [str(video), "--stream-id", "cam1", "--bootstrap-servers", DEAD_KAFKA, "--quiet"],
    }


# Commands that start things a walk should not: they are exercised by their own tests.
EXEMPT = {("dev", "up"): "starts the services (tests/integration/test_services.py)",
          ("dev", "down"): "stops what `dev up` started; nothing to get wrong",
          ("demo",): "trains a model for minutes (`make demo`)"}


def test_every_command_has_a_mistake_in_the_walk(tmp_path: Path) -> None:
    covered = set(mistakes(tmp_path)) | set(EXEMPT)
    missing = [" ".join(c) for c in leaf_commands() if c not in covered]
    assert not missing, f"commands the front-door walk does not try: {missing}"


@pytest.mark.timeout(200)
def test_every_command_answers_a_mistake_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """In one process (each command's imports are paid once): exit status non-zero, one line on
    stderr that starts with `framewatch COMMAND:`, and no traceback."""
    import os
    import traceback

    import av
    import numpy as np

    from framewatch.cli.main import main

    with av.open(str(tmp_path / "clip.mp4"), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(10):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode())
    for key in [k for k in os.environ if k.startswith("FRAMEWATCH_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    failures = []
    for command, extra in mistakes(tmp_path).items():
        argv = [c for c in command if c not in ("dead-broker", "dead-redis")] + extra
        try:
            status = main(argv)
        except BaseException as exc:  # a traceback would have reached the user
            failures.append(f"{' '.join(argv)} → raised {exc.__class__.__name__}: {exc}\n{traceback.format_exc()[-800:]}")
            continue
        err = capsys.readouterr().err
        ours = [line for line in err.splitlines() if line.startswith("framewatch ")]
        if status == 0 or len(ours) != 1 or "Traceback" in err:
            failures.append(f"{' '.join(argv)} → exit {status}\n{err[-600:]}")
    assert not failures, "\n\n".join(failures)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "framewatch.cli", "engine", "check", str(tmp_path / "nope"), "--log-level", "debug"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" in run.stderr and "ManifestError" in run.stderr


def test_export_and_report_do_not_import_the_training_loop() -> None:
    edges = graph()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for module in ("framewatch.training.export", "framewatch.training.report", "framewatch.engines.check"):
        assert "framewatch.training.train" not in reach(module), module
