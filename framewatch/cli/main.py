"""The `framewatch` command line: the parser, the `dev` and `config` commands, and the front door.

Each command module (worker, training, engines, bench, demo) registers its subcommands; what a
command runs is imported when it runs, so `framewatch --help` and the worker never import torch.
The front door (:func:`main`) turns the project's own errors, missing files and unreachable
services into one line on stderr and a non-zero exit; `--log-level debug` adds the traceback."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from framewatch import __version__
from framewatch.cli.settings import add_log_flags, add_settings_flags, settings_from_args

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


# --- dev ---------------------------------------------------------------------------------

def _dev_up(args: argparse.Namespace) -> int:
    from framewatch.devservices import default_state_dir, dev_up

    services = dev_up(args.state_dir or default_state_dir())
    print("\n".join(services.env_lines()))
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    from framewatch.devservices import default_state_dir, dev_down

    stopped = dev_down(args.state_dir or default_state_dir())
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running", file=sys.stderr)
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    from framewatch.devservices import default_state_dir, read_state

    services = read_state(args.state_dir or default_state_dir())
    if services is None:
        print("framewatch dev status: not running (no state file); start with `framewatch dev up`", file=sys.stderr)
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
    from framewatch.cli.demo import run_demo

    return run_demo(args.dir, args.seconds, args.table_seconds)


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
    add_settings_flags(show)
    show.set_defaults(handler=_config_show)

    demo = commands.add_parser(
        "demo", help="the whole system end to end on this machine (make demo)",
        description="Generate data, train a small guidance model on the CPU, export it, start the embedded broker and Redis, "
        "stream synthetic videos (some violent) through `framewatch produce`, run the worker and show a live table of "
        "scores from Redis, then serve the moderator dashboard on the same streams until Ctrl-C (or --seconds); then stop "
        "everything. Reuses what an earlier run left in DIR.",
    )
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="working folder (default demo/)")
    demo.add_argument("--table-seconds", type=float, default=35.0, help="how long to show the live table (default 35)")
    demo.add_argument("--seconds", type=float, default=None,
                      help="how long the dashboard stays up before the demo stops (default: until Ctrl-C in a terminal, else 20 s)")
    demo.set_defaults(handler=_demo)

    from framewatch.cli import bench, engines, review, training, worker

    for module in (worker, review, training, engines, bench):
        module.register(commands)
    _log_flags_everywhere(parser)
    return parser


def _log_flags_everywhere(parser: argparse.ArgumentParser) -> None:
    """Every command takes --log-level (debug shows the traceback behind a one-line error)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _log_flags_everywhere(sub)
            return
    if not any("--log-level" in action.option_strings for action in parser._actions):
        add_log_flags(parser)


# --- the front door ------------------------------------------------------------------------

EXIT_INPUT = 2  # a mistake in what was asked: a missing path, a bad recipe, an invalid artifact
EXIT_UNREACHABLE = 3  # a service (Kafka, Redis) that does not answer


def service_error(exc: BaseException) -> str | None:
    """One line for a Redis or Kafka client error meaning "cannot reach the service", else None.
    Matched by the exception's module so the front door imports neither client."""
    names = {f"{cls.__module__}.{cls.__name__}" for cls in type(exc).__mro__}
    if names & {"redis.exceptions.AuthenticationError", "redis.exceptions.AuthorizationError", "redis.exceptions.NoPermissionError"}:
        return None  # reachable, but refused: a configuration mistake (explain() gives it exit 2)
    if names & {"redis.exceptions.ConnectionError", "redis.exceptions.TimeoutError", "redis.exceptions.ClusterDownError"}:
        return f"Redis is unreachable ({exc}); check --redis-url / FRAMEWATCH_REDIS__URL, or start one with `framewatch dev up`"
    if names & {"kafka.errors.NoBrokersAvailable", "kafka.errors.KafkaConnectionError"}:
        return (f"the Kafka broker is unreachable ({exc.__class__.__name__}: {exc}); check --bootstrap-servers / "
                "FRAMEWATCH_KAFKA__BOOTSTRAP_SERVERS, or start one with `framewatch dev up`")
    if "kafka.errors.KafkaTimeoutError" in names:
        return f"the Kafka broker did not answer in time ({exc}); is the topic there, and the broker healthy?"
    return None


def explain(exc: BaseException) -> tuple[int, str] | None:
    """(exit status, one line) for an error a user can act on; None for a bug."""
    from framewatch.errors import FrameWatchError

    if isinstance(exc, FrameWatchError):
        return EXIT_INPUT, str(exc)
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)):
        where = f": {exc.filename}" if exc.filename else ""
        return EXIT_INPUT, f"{exc.strerror or exc}{where}"
    line = service_error(exc)
    if line is not None:
        return EXIT_UNREACHABLE, line
    names = {f"{cls.__module__}.{cls.__name__}" for cls in type(exc).__mro__}
    if names & {"redis.exceptions.AuthenticationError", "redis.exceptions.AuthorizationError", "redis.exceptions.NoPermissionError"}:
        return EXIT_INPUT, f"Redis refused the credentials or the command ({exc}); check redis.username / password / ACLs"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    import os

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_anything", False):  # only a stand-in for a part this image leaves out does
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Handler = args.handler
    command = " ".join(part for part in (args.command, *(getattr(args, f"{args.command}_command", None),)) if part)
    debug = (getattr(args, "log_level", None) or os.environ.get("FRAMEWATCH_LOG_LEVEL", "")).lower() == "debug"
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        known = explain(exc)
        if known is None:
            raise
        status, line = known
        if debug:
            import traceback

            traceback.print_exc()
        first, _, rest = line.partition("\n")
        # One line, unless the error is a list (an invalid configuration names each field).
        print(f"framewatch {command}: {first}" + (f"\n{rest}" if rest else ""), file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
