"""structlog set-up: JSON lines for machines, readable console output for people.

Worker code binds ``stream``, ``partition`` and ``offset`` to its loggers where it has
them, so one message's life can be followed with a single grep.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    use_console = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=True) if use_console else structlog.processors.JSONRenderer()
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # sys.stderr as it is when a line is written, not when logging was set up: a caller that swaps
        # stderr (a test's capture, a daemon redirect) and closes the old one must not break logging.
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard module; keep their chatter at warning and above.
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR if numeric_level > logging.DEBUG else logging.INFO)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
