"""Flags that map onto the configuration schema, shared by every command that talks to a service."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framewatch.config import FrameWatchSettings


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that map onto the configuration schema (framewatch.config); they win over env and file."""
    group = parser.add_argument_group("configuration (flags > FRAMEWATCH_* env > --config file > defaults)")
    group.add_argument("--config", type=Path, help="YAML or TOML file with the settings schema (see docs/operations.md)")
    group.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, host:port[,host:port]")
    group.add_argument("--redis-url", help="Redis URL, e.g. redis://127.0.0.1:6379/0")
    add_log_flags(group)


def add_log_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--log-level (debug also shows the traceback behind a one-line error) and --log-format."""
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="debug also prints the traceback behind an error")
    parser.add_argument("--log-format", choices=["auto", "json", "console"])


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
