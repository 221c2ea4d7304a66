"""The ``fsx-stage`` command line.

Each sub-command lives in its own module with a ``register(subparsers)`` function
that adds its parser and sets ``handler`` to a callable taking the parsed
arguments and returning the exit status. Exit status contract: 0 success,
1 when any object or entry failed, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from fsx_stage import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def _command_modules(argv: Sequence[str] | None = None) -> list[ModuleType]:
    # A copy imports only its own module (the others load the site config, the planner,
    # the hook state: ~0.1 s of start-up); --help and the other commands import all.
    from fsx_stage.cli import transfer

    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in transfer.COMMANDS:
        return [transfer]
    # One import per command module; keep this list in the order of --help.
    from fsx_stage.cli import agent, bb, check, doctor, hooks

    modules: list[ModuleType] = [check, transfer, hooks, doctor, agent, bb]
    return modules


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsx-stage",
        description="Stage data between Amazon S3 and FSx for Lustre scratch for Slurm jobs.",
    )
    parser.add_argument("--version", action="version", version=f"fsx-stage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules(argv):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("fsx-stage: interrupted", file=sys.stderr)
        return 130
