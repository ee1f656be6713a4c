"""Subcommands beyond `dev` and `config`, registered by the sides that implement them."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Each side adds its own commands; none imports torch at registration."""
    from engines.cli import register as register_engines
    from training.cli import register as register_training
    from worker.cli import register as register_worker

    bench = commands.add_parser("bench", help="benchmarks that write JSON", description="Benchmarks; each writes JSON and prints a table.")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    register_worker(commands, bench_commands)
    register_engines(commands, bench_commands)
    register_training(commands)
