"""The `framewatch` command line. Each subcommand imports what it needs when it runs,
so `framewatch --help` and the worker never import torch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from framewatch import __version__

if TYPE_CHECKING:
    from framewatch.config import FrameWatchSettings

Handler = Callable[[argparse.Namespace], int]

EPILOG = """\
typical flow:
  framewatch data synth data/ --train 600 --val 150 --test 300      make a data set
  framewatch train --data data/ --mode guidance --out runs/g1       train (image+text → image-only)
  framewatch report runs/* --out report.md                          compare runs (the paper's Table 3)
  framewatch export runs/g1 --out artifacts/g1                      ONNX with preprocessing folded in
  eval "$(framewatch dev up)"                                       embedded Kafka broker + Redis
  framewatch worker --model artifacts/g1 \\
      --bootstrap-servers $KAFKA_BOOTSTRAP --redis-url $REDIS_URL   score streams
  framewatch produce video.mp4 --stream-id cam1 --bootstrap-servers $KAFKA_BOOTSTRAP
  framewatch scores top --redis-url $REDIS_URL                      the riskiest streams now
"""


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that map onto the configuration schema (framewatch.config); they win over env and file."""
    group = parser.add_argument_group("configuration (flags > FRAMEWATCH_* env > --config file > defaults)")
    group.add_argument("--config", type=Path, help="YAML or TOML file with the settings schema (see docs/operations.md)")
    group.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, host:port[,host:port]")
    group.add_argument("--redis-url", help="Redis URL, e.g. redis://127.0.0.1:6379/0")
    group.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    group.add_argument("--log-format", choices=["auto", "json", "console"])


def settings_from_args(args: argparse.Namespace, **extra: object) -> FrameWatchSettings:
    from framewatch.config import load_settings

    overrides: dict[str, object] = {
        "log_level": getattr(args, "log_level", None),
        "log_format": getattr(args, "log_format", None),
        "kafka": {"bootstrap_servers": getattr(args, "bootstrap_servers", None)},
        "redis": {"url": getattr(args, "redis_url", None)},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(overrides.get(key), dict):
            overrides[key] = {**overrides[key], **value}  # type: ignore[dict-item]
        else:
            overrides[key] = value
    return load_settings(getattr(args, "config", None), **overrides)


# --- dev ---------------------------------------------------------------------------------

def _dev_up(args: argparse.Namespace) -> int:
    from framewatch.services import default_state_dir, dev_up

    services = dev_up(args.state_dir or default_state_dir())
    print("\n".join(services.env_lines()))
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    from framewatch.services import default_state_dir, dev_down

    stopped = dev_down(args.state_dir or default_state_dir())
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running", file=sys.stderr)
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    from framewatch.services import default_state_dir, read_state

    services = read_state(args.state_dir or default_state_dir())
    if services is None:
        print("not running (no state file); start with `framewatch dev up`")
        return 1
    rc = 0
    for service in (services.kafka, services.redis):
        alive = service.alive()
        rc |= 0 if alive else 1
        print(f"{service.name:6} pid {service.pid:<7} {service.host}:{service.port:<6} {'running' if alive else 'DEAD'}  log {service.log_path}")
    if rc == 0:
        print("\n".join(services.env_lines()))
    return rc


def _demo(args: argparse.Namespace) -> int:
    from framewatch.demo import run_demo

    return run_demo(args.dir, args.seconds)


# --- config ------------------------------------------------------------------------------

def _config_show(args: argparse.Namespace) -> int:
    from framewatch.config import redacted

    print(json.dumps(redacted(settings_from_args(args)), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framewatch",
        description="Violence moderation for live video streams: train an image-only classifier with text "
        "guidance, export it to ONNX/TensorRT, and score Kafka video segments into Redis.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"framewatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dev = commands.add_parser("dev", help="embedded Kafka broker and Redis for development",
                              description="Start, stop or inspect an embedded Kafka-protocol broker (Tansu, memory storage) "
                              "and Redis server (Valkey) on free loopback ports. State lives in .framewatch/ "
                              "(or $FRAMEWATCH_STATE_DIR).")
    dev_cmds = dev.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("up", _dev_up, "start both services and print KAFKA_BOOTSTRAP=… and REDIS_URL=… (use with eval)"),
        ("down", _dev_down, "stop the services `dev up` started"),
        ("status", _dev_status, "say what runs, where, and its log file"),
    ):
        sub = dev_cmds.add_parser(name, help=text, description=text)
        sub.add_argument("--state-dir", type=Path, help="where pid and port files live (default .framewatch/)")
        sub.set_defaults(handler=handler)

    config = commands.add_parser("config", help="show the effective configuration",
                                 description="Validate and print the effective settings (secrets masked).")
    config_cmds = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_cmds.add_parser("show", help="print the merged, validated settings as JSON")
    _add_settings_flags(show)
    show.set_defaults(handler=_config_show)

    demo = commands.add_parser(
        "demo", help="the whole system end to end on this machine (make demo)",
        description="Generate data, train a small guidance model on the CPU, export it, start the embedded broker and Redis, "
        "stream synthetic videos (some violent) through `framewatch produce`, run the worker and show a live table of "
        "scores from Redis; then stop everything. Reuses what an earlier run left in DIR.",
    )
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="working folder (default demo/)")
    demo.add_argument("--seconds", type=float, default=35.0, help="how long to watch the live table")
    demo.set_defaults(handler=_demo)

    from framewatch import cli_commands

    cli_commands.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from framewatch.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"framewatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
