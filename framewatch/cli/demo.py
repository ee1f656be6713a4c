"""`framewatch demo`: the whole system on one machine, end to end, on the CPU.

Steps (each reuses what an earlier run left in ``demo/``): synthetic data set → guidance
training (MobileOne-S0 + the offline MiniLM text encoder) → ONNX export → embedded broker and
Redis → synthetic videos streamed by `framewatch produce` (with stream titles and categories) →
`framewatch worker` → a live table of the streams read from Redis → the moderator dashboard on the
same streams (its URL and a generated sign-in printed) until Ctrl-C or ``--seconds`` → everything
stopped.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

console = Console()

# Demo streams: (id, violent?, cues, style), in pairs of one style so that a score difference
# within a pair is about violence, not about the look of a game or a camera. Violent streams show
# several cues; calm ones only the generator's look-alikes.
STREAMS = [
    ("arena-brawl", True, ("struggle", "blood", "weapon"), "shooter-hud"),
    ("ranked-match", False, (), "shooter-hud"),
    ("street-fight", True, ("struggle", "blood"), "night-cam"),
    ("night-walk", False, (), "night-cam"),
    ("cel-battle", True, ("blood", "weapon", "muzzle-flash"), "cel"),
    ("cel-cooking", False, (), "cel"),
]
# The metadata each stream's producer sends (stream-title, stream-category): kept with evidence,
# never scored.
TITLES = {
    "arena-brawl": ("no-scope arena brawl, ranked", "shooters"), "ranked-match": ("ranked match, chill vibes", "shooters"),
    "street-fight": ("downtown night walk IRL", "IRL"), "night-walk": ("late walk home, rain", "IRL"),
    "cel-battle": ("boss fight speedrun", "anime games"), "cel-cooking": ("cozy cooking sim", "anime games"),
}
CLIP_FRAMES = 100  # 10 s at 10 fps, looped
# The recipe the report and the benchmarks use too (training/recipes/default.yaml).
TRAIN_RECIPE = "default"


def _fw(*args: str) -> list[str]:
    return [sys.executable, "-m", "framewatch.cli", *args]


def _step(title: str) -> None:
    console.rule(f"[bold]{title}")


def write_videos(folder: Path, size: int) -> list[tuple[str, bool, Path]]:
    from framewatch.training.synth import CUE_SCALE, render_clip
    from framewatch.worker.media import encode_segment

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for index, (stream, violent, cues, style) in enumerate(STREAMS):
        path = folder / f"{stream}.mp4"
        if not path.exists():
            # Rendered at the model's input size and the benchmark's cue scale, as the training frames
            # are, then doubled pixel for pixel: the worker's bilinear resize back gives the rendered frame.
            small = render_clip(100 + index, size, int(violent), CLIP_FRAMES, cue_scale=CUE_SCALE, cues=cues, style=style)
            frames = [pixels.repeat(2, axis=0).repeat(2, axis=1) for pixels in small]
            payload, _ = encode_segment(frames, 10.0, "mp4")
            path.write_bytes(payload)
        out.append((stream, violent, path))
    return out


def table(rows: list[dict[str, object]], violent: dict[str, bool], elapsed: float) -> Table:
    t = Table(title=f"framewatch demo — live scores from Redis ({elapsed:.0f} s)")
    for column in ("stream", "truth", "score", "EMA", "max recent", "frames", "alert"):
        t.add_column(column, justify="left" if column in ("stream", "truth") else "right")
    for row in rows:
        name = str(row["stream"])
        t.add_row(name, "violent" if violent.get(name) else "calm", f"{float(row.get('score', 0)):.3f}",  # type: ignore[arg-type]
                  f"{float(row.get('ema', 0)):.3f}", f"{float(row.get('max_recent', 0)):.3f}", str(row.get("frames", 0)),  # type: ignore[arg-type]
                  "[bold red]ALERT[/]" if row.get("alert") == 1 else "")
    return t


def start_dashboard(demo_dir: Path, env: dict[str, str], logs: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """`framewatch dashboard` on the demo's Redis with a generated user; (process, URL, password)."""
    from framewatch.devservices import free_port

    users = demo_dir / "dashboard-users"
    password = secrets.token_urlsafe(9)
    subprocess.run(_fw("dashboard", "passwd", str(users), "moderator", "--password-stdin"), input=f"{password}\n".encode(), env=env,
                   check=True, capture_output=True)
    port = free_port()
    with open(logs / "dashboard.log", "wb") as log:
        process = subprocess.Popen(_fw("dashboard", "--users", str(users), "--port", str(port)), env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}/", password


def run_demo(demo_dir: Path, seconds: float | None = None, table_seconds: float = 35.0) -> int:
    import redis

    from framewatch.devservices import dev_down, dev_up
    from framewatch.worker.redis_io import Scores

    started = time.monotonic()
    demo_dir = demo_dir.resolve()
    data, run, artifact = demo_dir / "data", demo_dir / "run", demo_dir / "artifact"
    _step("1. synthetic data set")
    from framewatch.training.config import resolve

    size = resolve(TRAIN_RECIPE, data=data, out=run).image_size
    if not (data / "dataset.json").exists():
        # The benchmark generator at its own cue scale (the report's data set is made the same way):
        # 400 training frames are enough for the pretrained encoder, and keep the demo within minutes.
        subprocess.run(_fw("data", "synth", str(data), "--train", "400", "--val", "200", "--test", "200", "--seed", "11",
                           "--image-size", str(size), "--quiet"), check=True)
    else:
        console.print(f"reusing {data}")
    _step("2. train a guidance model on the CPU (ImageNet-pretrained encoder; fused image+text stage, then image-only adapt)")
    if not (run / "model.pt").exists():
        subprocess.run(_fw("train", "--data", str(data), "--out", str(run), "--config", TRAIN_RECIPE), check=True)
    else:
        console.print(f"reusing {run}")
    _step("3. export to ONNX")
    if not (artifact / "model.json").exists():
        subprocess.run(_fw("export", str(run), "--out", str(artifact)), check=True)
    else:
        console.print(f"reusing {artifact}")
    videos = write_videos(demo_dir / "videos", size)
    truth = {stream: violent for stream, violent, _ in videos}
    _step("4. embedded Kafka broker and Redis")
    state_dir = demo_dir / "services"
    services = dev_up(state_dir)
    console.print("\n".join(services.env_lines()))
    prefix = f"demo{int(time.time())}"
    env = dict(os.environ, FRAMEWATCH_KAFKA__BOOTSTRAP_SERVERS=services.kafka_bootstrap, FRAMEWATCH_REDIS__URL=services.redis_url,
               FRAMEWATCH_REDIS__PREFIX=prefix, FRAMEWATCH_KAFKA__GROUP=prefix, FRAMEWATCH_METRICS_PORT="0",
               FRAMEWATCH_LOG_FORMAT="json", FRAMEWATCH_KAFKA__SESSION_TIMEOUT_MS="6000",
               FRAMEWATCH_KAFKA__HEARTBEAT_INTERVAL_MS="1000", FRAMEWATCH_BATCH__MAX_DELAY_MS="100")
    children: list[subprocess.Popen[bytes]] = []
    logs = demo_dir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        _step("5. worker and producers (one `framewatch produce --realtime --loop` per stream)")
        with open(logs / "worker.log", "wb") as worker_log:
            children.append(subprocess.Popen(_fw("worker", "--model", str(artifact)), env=env, stdout=worker_log, stderr=subprocess.STDOUT))
        for stream, _, path in videos:
            with open(logs / f"produce-{stream}.log", "wb") as log:
                title, category = TITLES.get(stream, (stream, "demo"))
                children.append(subprocess.Popen(_fw("produce", str(path), "--stream-id", stream, "--realtime", "--loop",
                                                     "--segment-seconds", "2", "--quiet", "--title", title, "--category", category),
                                                 env=env, stdout=log, stderr=subprocess.STDOUT))
        scores = Scores(redis.Redis.from_url(services.redis_url), prefix)
        _step(f"6. live scores for {table_seconds:.0f} s")
        watch_start = time.monotonic()
        rows: list[dict[str, object]] = []
        with Live(table(rows, truth, 0), console=console, refresh_per_second=2) as live:
            while time.monotonic() - watch_start < table_seconds:
                rows = scores.top(len(STREAMS))
                live.update(table(rows, truth, time.monotonic() - watch_start))
                time.sleep(0.5)
        violent_ema = [float(r["ema"]) for r in rows if truth.get(str(r["stream"]))]  # type: ignore[arg-type]
        calm_ema = [float(r["ema"]) for r in rows if not truth.get(str(r["stream"]))]  # type: ignore[arg-type]
        if violent_ema and calm_ema:
            separated = min(violent_ema) > max(calm_ema)
            ema = {str(r["stream"]): float(r["ema"]) for r in rows}  # type: ignore[arg-type]
            pairs = [(STREAMS[i][0], STREAMS[i + 1][0]) for i in range(0, len(STREAMS), 2)]
            within = sum(1 for v, c in pairs if v in ema and c in ema and ema[v] > ema[c])
            console.print(f"mean EMA: violent {sum(violent_ema) / len(violent_ema):.3f}, calm {sum(calm_ema) / len(calm_ema):.3f}; "
                          f"violent above calm in the same style: {within}/{len(pairs)}; "
                          f"every violent stream above every calm one: {'yes' if separated else 'NO'}")
            false_alarms = [str(r["stream"]) for r in rows if r.get("alert") == 1 and not truth.get(str(r["stream"]))]
            console.print(f"calm streams in alert: {', '.join(false_alarms) if false_alarms else 'none'}")
        else:
            console.print("[yellow]not every stream was scored in time; see demo/logs/worker.log")
        _step("7. the moderator dashboard on the demo's streams")
        dashboard, url, password = start_dashboard(demo_dir, env, logs)
        children.insert(0, dashboard)
        if not _wait_for_http(url + "healthz", 30) or dashboard.poll() is not None:
            console.print(f"[red]the dashboard did not start; see {logs / 'dashboard.log'}")
            return 1
        console.print(f"[bold]{url}[/]  sign in as [bold]moderator[/] with password [bold]{password}[/] "
                      f"(users file {demo_dir / 'dashboard-users'})")
        console.print("the review queue holds the demo's alerts and near misses, with their evidence (blurred until clicked); "
                      "decisions go to framewatch:feedback, and `framewatch feedback export` makes them a data set")
        interactive = seconds is None and sys.stdin.isatty()
        wait = None if interactive else (seconds if seconds is not None else 20.0)
        console.print("Ctrl-C stops the demo" if wait is None else f"stopping in {wait:.0f} s (--seconds; Ctrl-C stops sooner)")
        try:
            until = None if wait is None else time.monotonic() + wait
            while until is None or time.monotonic() < until:
                if dashboard.poll() is not None:
                    console.print(f"[red]the dashboard stopped; see {logs / 'dashboard.log'}")
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("Ctrl-C")
    finally:
        _step("8. stopping everything the demo started")
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        stopped = dev_down(state_dir)
        console.print("stopped: " + ", ".join(stopped))
    console.print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0


def _wait_for_http(url: str, timeout_s: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.3)
    return False
