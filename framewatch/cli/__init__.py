"""The `framewatch` command line: the top floor. :mod:`framewatch.cli.main` builds the parser and is
the front door; each command module (worker, training, engines, bench, demo) registers its
subcommands and imports what it runs only when it runs, so `framewatch --help` and the worker
never import torch."""
