"""Subcommands beyond `dev` and `config`, registered by the sides that implement them."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Each side adds its own commands; none imports torch at registration."""
    from engines.cli import register as register_engines
    from training.cli import register as register_training
    from worker.cli import register as register_worker

    register_worker(commands)
    register_engines(commands)
    register_training(commands)
