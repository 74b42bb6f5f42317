"""IOI Circuit Lab: datasets, fine-tuning, circuit analyses and experiments on the IOI task.

The `ioi` command (also `python -m ioi`). Each subcommand is a small function registered in
`registry.COMMANDS` by the modules below; `--help` imports none of torch, transformers or pandas.

Users' mistakes (bad sizes, unknown names, missing models) end with one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ioi.cli import analyze, models, runs  # noqa: F401  (each registers its commands)
from ioi.cli.registry import COMMANDS

USER_ERRORS: dict[str, tuple[str, ...]] = {
    "ioi.task.data": ("DatasetError",),
    "ioi.models.load": ("ModelUnavailableError",),
    "ioi.models.train": ("TrainingError",),
    "ioi.runs.experiment": ("ExperimentError",),
    "ioi.runs.jobs": ("JobError",),
}
"""Where the exceptions that mean "the user asked for something that cannot be" are defined."""


def user_errors() -> tuple[type[Exception], ...]:
    """The user-error classes of the modules imported so far: an exception can only come from a
    module that ran, so the CLI need not import heavy modules just to name their errors."""
    loaded = [sys.modules[m] for m in USER_ERRORS if m in sys.modules]
    return (FileNotFoundError, *(getattr(m, n) for m in loaded for n in USER_ERRORS[m.__name__]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ioi", description=__doc__.splitlines()[0])
    subs = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS.values():
        sub = subs.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(sub)
        sub.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as err:
        cancelled = getattr(sys.modules.get("ioi.models.train"), "Cancelled", ())
        if cancelled and isinstance(err, cancelled):
            print(f"stopped: {err}", file=sys.stderr)
            return 130
        if not isinstance(err, user_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
