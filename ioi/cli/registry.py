"""The subcommand registry and the arguments several commands share.

Only light modules are imported here (argparse, ioi.task.defaults): a command's heavy imports
(torch, transformers, TransformerLens, pandas) happen inside its `run`, so `ioi --help` answers at once.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ioi.task.defaults import DEFAULT_EVAL_SIZE, DEFAULT_MODEL, default_lr, torch_threads


@dataclass(frozen=True)
class Command:
    """A subcommand: `configure` adds its arguments, `run(args)` returns the exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Decorator registering `run(args) -> int` as subcommand `name`."""

    def add(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return add


class UsageError(ValueError):
    """A command-line value that cannot be used; the message says which and why."""


def run_id(text: str) -> str:
    """An experiment or job id as typed: ids are lower-case hex, so "16D9954C…" means "16d9954c…"."""
    return text.strip().lower()


def detached(job_id: str) -> str:
    """What Ctrl-C while waiting for a job says: only the waiting stops (a job is its own process)."""
    return (f"stopped waiting: job {job_id} goes on in the background; `ioi jobs show {job_id}` follows "
            f"it, `ioi jobs cancel {job_id}` stops it")  # fmt: skip


def locate_experiment(exp_id: str, cache: Path | None) -> tuple[Path, str]:
    """(the cache holding experiment `exp_id`: the user's, then the demo ones; its whole id, when
    `exp_id` is the start of one, as listings print); a UsageError naming where it looked
    otherwise, with the experiment to give when `exp_id` is a job id."""
    from ioi.runs.cache import cache_root, check_id
    from ioi.runs.catalog import complete_id, find_experiment
    from ioi.runs.jobs import JobError, get_job

    try:
        check_id(exp_id)
        exp_id = complete_id(exp_id, cache)
    except ValueError as err:
        raise UsageError(str(err)) from None
    root = find_experiment(exp_id, cache)
    if root is not None:
        return root, exp_id
    try:  # a job id (what `jobs submit` printed) names its experiment
        job = get_job(exp_id, cache)
    except (JobError, OSError):
        job = None
    hint = f"; {exp_id} is a job: its experiment is {job.experiment}" if job else ""
    raise UsageError(f"no experiment {exp_id} in {cache_root(cache)} or the demo cache{hint}")


def plural(n: int, word: str) -> str:
    """'1 prompt', '3 prompts': a count as output writes it."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def logit_diff_text(metrics: dict) -> str:
    """"12.27 ± 0.13" from task metrics (JSON), without the ± where the standard error is undefined."""
    se = metrics.get("logit_diff_se")
    shown = f"{metrics['logit_diff']:.2f}"
    return f"{shown} ± {se:.2f}" if isinstance(se, float) and math.isfinite(se) else shown


DEVICE_HELP = "cpu or cuda (default: cuda when available)"


def check_device(device: str | None) -> str:
    """`device` if this machine has it (None: cuda when available, else cpu); UsageError otherwise."""
    if device == "cpu":
        return device
    if device is not None and not re.fullmatch(r"cuda(:\d+)?", device):
        raise UsageError(f"unknown device {device!r}: use cpu or cuda (cuda:N for one GPU)")
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this torch has no usable CUDA GPU; use --device cpu")
    return device


def report_unknown_words(samples, tokenizer) -> None:
    """Print one warning line naming the prompt words the model reads as its unknown token."""
    from ioi.task.data import unknown_words

    words = unknown_words(tokenizer, samples)
    if words:
        shown = ", ".join(words[:10]) + (f" and {len(words) - 10} more" if len(words) > 10 else "")
        print(f"warning: words not in the model's vocabulary, read as its unknown token: {shown}",
              file=sys.stderr)  # fmt: skip


def add_inputs(p: argparse.ArgumentParser, size: int = DEFAULT_EVAL_SIZE) -> None:
    """The model a command runs (--model, --checkpoint, --device) and its prompts (--size, --seed,
    --dataset): read back with `model_name` and `command_prompts`."""
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model name or directory (default {DEFAULT_MODEL})"
    )
    p.add_argument(
        "--checkpoint", help="a checkpoint directory written by `ioi finetune` (overrides --model)"
    )
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument(
        "--size",
        type=int,
        help=f"number of prompts (default {size}; with --dataset its first N, default all)",
    )
    p.set_defaults(default_size=size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", type=Path, help="a JSONL file of prompts instead of generated ones")


def use_torch_threads() -> None:
    """The same thread count as a job's (see `torch_threads`), so a direct run is not slower."""
    import torch

    torch.set_num_threads(torch_threads())


def learning_rate(args: argparse.Namespace) -> float:
    """--lr as typed (0 or a negative one too: the run's config refuses it, never swaps in the
    default), else the default of --model."""
    return default_lr(args.model) if args.lr is None else args.lr


def model_name(args: argparse.Namespace) -> str:
    return args.checkpoint or args.model


def load_samples(args: argparse.Namespace, split: str = "eval"):
    """The prompts a command runs on: the user's JSONL (its first --size, when given) or a
    generated split of --size prompts."""
    from ioi.task.data import make_dataset, read_jsonl

    check_size(args)
    if getattr(args, "dataset", None):
        samples = read_jsonl(args.dataset)
        if args.size is not None and args.size > len(samples):
            raise UsageError(f"--size {args.size}, but {args.dataset} has {plural(len(samples), 'prompt')}")
        return samples if args.size is None else samples[: args.size]
    return make_dataset(args.default_size if args.size is None else args.size, args.seed, split)


def check_size(args: argparse.Namespace) -> None:
    """--size, when given, is at least 1 (said before a model loads)."""
    if args.size is not None and args.size < 1:
        raise UsageError(f"--size must be at least 1, got {args.size}")


def command_prompts(args: argparse.Namespace, tokenizer, n_ctx: int | None):
    """(samples, batch): `load_samples(args)` tokenized for the model and checked against its
    context length; the words it reads as its unknown token are named in one warning line."""
    from ioi.task.data import DatasetError, check_context, tokenize

    samples = load_samples(args)
    try:
        batch = check_context(tokenize(samples, tokenizer), n_ctx)
    except DatasetError as err:
        if not getattr(args, "dataset", None):
            raise
        raise DatasetError(f"{_first_failing_line(args.dataset, samples, tokenizer, n_ctx)}: {err}") from None
    report_unknown_words(samples, tokenizer)
    return samples, batch


def _first_failing_line(path: Path, samples, tokenizer, n_ctx: int | None) -> str:
    """`path:N` for the first prompt of the file that does not tokenize or fit on its own (the file's
    lines holding prompts, blank ones skipped as `read_jsonl` does); `path` if each one does."""
    from ioi.task.data import DatasetError, check_context, tokenize

    with open(path, encoding="utf-8-sig") as f:
        lines = [n for n, line in enumerate(f, 1) if line.strip()]
    for n, x in zip(lines, samples):
        try:
            check_context(tokenize([x], tokenizer), n_ctx)
        except DatasetError:
            return f"{path}:{n}"
    return str(path)
