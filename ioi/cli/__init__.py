"""IOI Circuit Lab: datasets, fine-tuning, circuit analyses and experiments on the IOI task.

The `ioi` command (also `python -m ioi`). Each subcommand is a small function registered in
`registry.COMMANDS` by the modules below; `--help` imports none of torch, transformers or pandas.

Users' mistakes (bad sizes, unknown names, missing models) end with one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import copy
import sys

from ioi import __version__
from ioi.cli import analyze, compare, experiments, models, runs  # noqa: F401  (each registers its commands)
from ioi.cli.registry import COMMANDS

USER_ERRORS: dict[str, tuple[str, ...]] = {
    "ioi.cli.registry": ("UsageError",),
    "ioi.task.defaults": ("SettingError",),
    "ioi.task.data": ("DatasetError",),
    "ioi.models.load": ("ModelUnavailableError",),
    "ioi.models.checks": ("TrainingError",),
    "ioi.runs.cache": ("CorruptEntry",),
    "ioi.runs.experiment": ("ExperimentError",),
    "ioi.runs.jobs": ("JobError",),
}
"""Where the exceptions that mean "the user asked for something that cannot be" are defined.
Every OSError counts too: a path given that is missing, a file where a folder is wanted, a
read-only or full cache are the environment's facts, said in one line."""


def user_errors() -> tuple[type[Exception], ...]:
    """The user-error classes of the modules imported so far: an exception can only come from a
    module that ran, so the CLI need not import heavy modules just to name their errors."""
    loaded = [sys.modules[m] for m in USER_ERRORS if m in sys.modules]
    return (OSError, *(getattr(m, n) for m in loaded for n in USER_ERRORS[m.__name__]))


def _message(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:  # "[Errno 21] Is a directory: 'x'" -> "x: Is a directory"
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return " ".join(str(err).split())  # one line


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default where it has one (not None, False or "") and its help
    does not already say it, also for options without help; epilogs keep their line breaks."""

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        shown = (
            not any(action.default is x for x in (None, False, argparse.SUPPRESS)) and action.default != ""
        )
        return shown and bool(action.option_strings)  # `is`: 0 is a default to show, False is not

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._shows_default(action):
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if not self._shows_default(action) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistyped argument is one `error:` line too (the usage is one --help away)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)  # nested subcommands inherit it
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ioi", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ioi {__version__}")
    subs = parser.add_subparsers(dest="command", required=True)
    for cmd in COMMANDS.values():
        sub = subs.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(sub)
        sub.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # whatever the host set: a recovered damage is always said
        warnings.showwarning = _warning_line  # one line each
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, as a cancel (commands that keep work say where)
        print("stopped: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ioi … | head`: the reader left; not the user's mistake, nothing to say
        import os

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):  # a stdout without a file descriptor (tests)
            pass
        return 141  # 128 + SIGPIPE, as a shell tool killed by it
    except Exception as err:
        cancelled = getattr(sys.modules.get("ioi.models.train"), "Cancelled", ())
        if cancelled and isinstance(err, cancelled):
            print(f"stopped: {err}", file=sys.stderr)
            return 130
        if not isinstance(err, user_errors()):
            raise
        print(f"error: {_message(err)}", file=sys.stderr)
        return 2
