"""The `python -m ioi` command line. Each subcommand is a small function registered in COMMANDS.

Users' mistakes (bad sizes, unknown names, missing models) end with one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ioi.models.load import DEFAULT_MODEL, ModelUnavailableError
from ioi.models.train import SCENARIOS, Cancelled, TrainingError, parse_epochs
from ioi.runs.experiment import ExperimentError
from ioi.runs.jobs import JobError
from ioi.task.corruptions import CORRUPTIONS, corrupt
from ioi.task.data import (
    DEFAULT_EVAL_SIZE,
    DEFAULT_TRAIN_SIZE,
    DatasetError,
    make_dataset,
    read_jsonl,
    tokenize,
    write_jsonl,
)

USER_ERRORS: tuple[type[Exception], ...] = (
    DatasetError,
    ModelUnavailableError,
    TrainingError,
    ExperimentError,
    JobError,
    FileNotFoundError,
)


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


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"model name or directory (default {DEFAULT_MODEL})"
    )
    p.add_argument(
        "--checkpoint", help="a checkpoint directory written by `ioi finetune` (overrides --model)"
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def add_data_args(p: argparse.ArgumentParser, size: int = DEFAULT_EVAL_SIZE) -> None:
    p.add_argument("--size", type=int, default=size, help=f"number of prompts (default {size})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", type=Path, help="a JSONL file of prompts instead of generated ones")


def model_name(args: argparse.Namespace) -> str:
    return args.checkpoint or args.model


def load_samples(args: argparse.Namespace, split: str = "eval"):
    """The prompts a command runs on: the user's JSONL or a generated split."""
    if getattr(args, "dataset", None):
        return read_jsonl(args.dataset)
    return make_dataset(args.size, args.seed, split)


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=DEFAULT_TRAIN_SIZE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("train", "eval"), default="train")
    p.add_argument("--corruption", help=f"a toxic dataset: {', '.join(CORRUPTIONS)}")
    p.add_argument("--model", help="check that names, places and objects are single tokens for this model")
    p.add_argument("--out", type=Path, required=True, help="output JSONL file")


@command("dataset", "write an IOI dataset (clean or toxic) as JSONL", _dataset_args)
def run_dataset(args: argparse.Namespace) -> int:
    samples = make_dataset(args.size, args.seed, args.split)
    if args.corruption:
        samples = corrupt(samples, args.corruption, args.seed)
    if args.model:
        from ioi.models.load import load_hf

        _, tok, _ = load_hf(args.model)
        tokenize(samples, tok)  # raises, naming the offenders, if any role is not one token
    write_jsonl(samples, args.out)
    print(f"wrote {len(samples)} samples to {args.out}", file=sys.stderr)
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


@command("eval", "logit difference, accuracy and IO probability of a model", _eval_args)
def run_eval(args: argparse.Namespace) -> int:
    from ioi.models.load import load_hf
    from ioi.task.metrics import evaluate

    hf, tok, source = load_hf(model_name(args))
    if args.device:
        hf.to(args.device)
    result = evaluate(hf.eval(), tokenize(load_samples(args), tok)).to_json()
    result |= {"model": model_name(args), "source": source}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>14}: {v}")
    return 0


def _finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--scenario", choices=SCENARIOS, default="clean")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--from", dest="init_from", help="checkpoint to start from (required for reversal)")
    p.add_argument("--checkpoint-epochs", default="", help="comma-separated epochs to save, e.g. 1,3,5")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=DEFAULT_TRAIN_SIZE)
    p.add_argument("--eval-size", type=int, default=DEFAULT_EVAL_SIZE)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True, help="directory for epoch-NNN checkpoints")


@command("finetune", "fine-tune a model on a clean, toxic or reversal scenario", _finetune_args)
def run_finetune(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ioi.models.train import TrainConfig, finetune

    cfg = TrainConfig(
        model=args.model,
        scenario=args.scenario,
        epochs=args.epochs,
        init_from=args.init_from,
        checkpoint_epochs=parse_epochs(args.checkpoint_epochs),
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        seed=args.seed,
        train_size=args.train_size,
        eval_size=args.eval_size,
    )
    cfg.validate()
    bar = tqdm(total=None, unit="step", desc=cfg.scenario)

    def progress(epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        if bar.total is None:
            bar.reset(total=epochs * steps)
        bar.n = (epoch - 1) * steps + step
        bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss:.3f}", refresh=False)
        bar.update(0)

    paths = finetune(cfg, args.out, device=args.device, progress=progress)
    bar.close()
    for p in paths:
        print(p)
    return 0


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    from ioi.models.load import ASSETS

    p.add_argument("--out", type=Path, default=ASSETS / "ioi-tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="training steps (default: the model card's)")


@command("pretrain-tiny", "rebuild the bundled ioi-tiny model from its synthetic corpus", _pretrain_args)
def run_pretrain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ioi.models.tiny import pretrain_tiny

    bar = tqdm(unit="step", desc="pretrain-tiny")

    def progress(step: int, total: int, loss: float) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(0)

    kwargs = {"steps": args.steps} if args.steps else {}
    result = pretrain_tiny(args.out, seed=args.seed, progress=progress, **kwargs)
    bar.close()
    print(json.dumps(result, indent=2))
    return 0


def _experiment_args(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    from ioi.runs.experiment import DEFAULT_ANALYSES

    p.add_argument("--model", default=DEFAULT_MODEL)
    if not sweep:
        p.add_argument("--scenario", choices=SCENARIOS, default="clean")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--parent", help="the toxic experiment id a reversal starts from (`jobs list`)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--checkpoint-epochs", default="", help="comma-separated epochs to analyse, e.g. 1,3,5")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=DEFAULT_TRAIN_SIZE)
    p.add_argument("--eval-size", type=int, default=DEFAULT_EVAL_SIZE)
    p.add_argument("--analysis-size", type=int, default=100, help="prompts the analyses run on")
    p.add_argument("--analyses", default=",".join(DEFAULT_ANALYSES), help="comma-separated analysis names")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache", type=Path, help="cache directory (default $IOI_CACHE_DIR or ./cache)")


def experiment_config(args: argparse.Namespace, **overrides):
    from ioi.runs.experiment import ExperimentConfig

    fields = dict(
        model=args.model, scenario=getattr(args, "scenario", "clean"), epochs=args.epochs,
        checkpoint_epochs=parse_epochs(args.checkpoint_epochs), seed=getattr(args, "seed", 0), lr=args.lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, train_size=args.train_size,
        eval_size=args.eval_size, analysis_size=args.analysis_size, parent=getattr(args, "parent", None),
        analyses=tuple(a.strip() for a in args.analyses.split(",") if a.strip()),
    )  # fmt: skip
    cfg = ExperimentConfig(**fields | overrides)
    cfg.validate()
    return cfg


def _jobs_args(p: argparse.ArgumentParser) -> None:
    subs = p.add_subparsers(dest="action", required=True)
    submit = subs.add_parser("submit", help="queue an experiment; prints the job id")
    _experiment_args(submit)
    submit.add_argument("--wait", action="store_true", help="block with a progress bar until it ends")
    listing = subs.add_parser("list", help="every job, newest first")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--cache", type=Path)
    actions = (
        ("show", "one job's state, progress and log"),
        ("cancel", "stop a job at its next step"),
        ("resume", "continue an interrupted, failed or cancelled job"),
    )
    for name, help in actions:
        sub = subs.add_parser(name, help=help)
        sub.add_argument("id")
        sub.add_argument("--cache", type=Path)
        if name == "show":
            sub.add_argument("--json", action="store_true")
        if name == "resume":
            sub.add_argument("--wait", action="store_true")


def _wait_with_bar(job_id: str, root: Path | None) -> int:
    from tqdm import tqdm

    from ioi.runs.jobs import wait

    bar = tqdm(total=1.0, unit="run", desc=job_id, bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")

    shown: list[str] = []

    def update(job) -> None:
        text = f"{job.status} epoch {job.epoch}/{job.epochs} {job.phase}"
        if shown[-1:] != [text]:
            shown.append(text)
            bar.n = job.fraction
            bar.set_postfix_str(text)

    job = wait(job_id, root, on_update=update)
    bar.close()
    if job.status != "done":
        print(f"job {job_id} {job.status}: {job.error}", file=sys.stderr)
        return 1
    return 0


def _job_line(job) -> str:
    progress = f"epoch {job.epoch}/{job.epochs} step {job.step}/{job.steps}" if job.epochs else ""
    cfg = job.config
    what = f"{cfg['scenario']} {cfg['model']} seed {cfg['seed']} {cfg['epochs']} ep"
    return f"{job.id}  {job.status:<11} {job.experiment}  {what:<40} {progress}"


@command("jobs", "background experiments: submit, list, show, cancel, resume", _jobs_args)
def run_jobs(args: argparse.Namespace) -> int:
    from ioi.runs import jobs
    from ioi.runs.cache import cache_root

    root = args.cache
    if args.action == "submit":
        job_id = jobs.submit(experiment_config(args), root, device=args.device)
        print(job_id)
        return _wait_with_bar(job_id, root) if args.wait else 0
    if args.action == "list":
        listed = jobs.list_jobs(root)
        if args.json:
            print(json.dumps([j.to_json() for j in listed], indent=1))
        for job in [] if args.json else listed:
            print(_job_line(job))
        return 0
    if args.action == "show":
        job = jobs.get_job(args.id, root)
        if args.json:
            print(json.dumps(job.to_json(), indent=1))
            return 0
        print(_job_line(job))
        print(json.dumps(job.config))
        if job.error:
            print(f"error: {job.error}")
        print(job.log)
        print(f"(process output: {cache_root(root) / 'jobs' / f'{job.id}.log'})")
        return 0
    if args.action == "cancel":
        print(_job_line(jobs.cancel(args.id, root)))
        return 0
    job = jobs.resume(args.id, root)
    print(_job_line(job))
    return _wait_with_bar(job.id, root) if args.wait else 0


def _sweep_args(p: argparse.ArgumentParser) -> None:
    _experiment_args(p, sweep=True)
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--scenarios", default="clean", help="comma-separated: clean and/or toxic datasets")
    p.add_argument("--reversal-epochs", type=int, help="also run a reversal from each toxic run, this long")
    p.add_argument("--n-jobs", type=int, help="parallel experiments (default $IOI_MAX_JOBS)")
    p.add_argument("--dask", metavar="ADDRESS", help="run on this Dask scheduler, e.g. tcp://host:8786")


@command("sweep", "run seeds × scenarios (+ reversals) in parallel, locally or on Dask", _sweep_args)
def run_sweep_cmd(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from ioi.runs.jobs import max_jobs
    from ioi.runs.sweep import run_sweep, sweep_configs

    base = experiment_config(args)
    stages = sweep_configs(
        base, seeds=[int(s) for s in args.seeds.split(",")], scenarios=args.scenarios.split(","),
        reversal_epochs=args.reversal_epochs,
    )  # fmt: skip
    context = nullcontext()
    if args.dask:
        import joblib
        from dask.distributed import Client

        client = Client(args.dask)
        context = joblib.parallel_config(backend="dask", wait_for_workers_timeout=60)
        print(f"running on {client.dashboard_link}", file=sys.stderr)
    with context:
        n_jobs = args.n_jobs or (-1 if args.dask else max_jobs())
        for summary in run_sweep(stages, args.cache, n_jobs=n_jobs, device=args.device, verbose=5):
            last = max(summary.metrics)
            print(f"{summary.id}  epoch {last}: logit diff {summary.metrics[last]['logit_diff']:.3f}")
    return 0


def _precompute_args(p: argparse.ArgumentParser) -> None:
    from ioi.runs.cache import DEMO_ROOT

    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--out", type=Path, default=DEMO_ROOT, help=f"cache to fill (default {DEMO_ROOT})")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few epochs, to check the pipeline")
    p.add_argument("--clean-epochs", type=int, help="default: the longest run up to 100 that fits --budget")
    p.add_argument("--budget", type=float, default=15, help="minutes the clean run may take (default 15)")
    p.add_argument("--keep-weights", action="store_true", help="keep checkpoints (large) in the demo cache")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    p.add_argument("--other-seeds-clean-epochs", type=int,
                   help="clean epochs of the seeds after the first (default --clean-epochs)")  # fmt: skip
    p.add_argument("--toxic-epochs", type=int, default=5, help="epochs of each toxic run and reversal")
    p.add_argument("--n-jobs", type=int, help="parallel experiments (default $IOI_MAX_JOBS)")


@command("precompute", "fill the shipped demo cache (cache/demo) for a model", _precompute_args)
def run_precompute(args: argparse.Namespace) -> int:
    from ioi.runs.jobs import max_jobs
    from ioi.runs.precompute import clean_epochs_within, demo_stages, epoch_seconds, prune_weights
    from ioi.runs.sweep import run_sweep

    if args.clean_epochs is None and not args.quick:
        seconds = epoch_seconds(args.model)
        args.clean_epochs = clean_epochs_within(args.budget * 60, seconds)
        print(f"a clean epoch takes ~{seconds:.0f} s here: {args.clean_epochs} epochs", file=sys.stderr)
    stages = demo_stages(
        args.model, quick=args.quick, clean_epochs=args.clean_epochs or 100, lr=args.lr, seeds=args.seeds,
        other_seeds_clean_epochs=args.other_seeds_clean_epochs, toxic_epochs=args.toxic_epochs,
    )
    summaries = run_sweep(stages, args.out, n_jobs=args.n_jobs or max_jobs(), verbose=5)
    if not args.keep_weights:
        prune_weights(args.out)
    for summary in summaries:
        print(summary.id, sorted(summary.metrics), *summary.notes[:1])


ANALYZE_SIZE = 100
TEXT_OPTIONS = {"heads"}
"""Options kept as text: head lists like "10.10" must not become the number 10.1."""


def _analyze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "method",
        help="an analysis of the registry (e.g. patch, path-patch, classify, knockout, "
        "faithfulness); an unknown name lists them",
    )
    add_model_args(p)
    p.add_argument("--other", help="second model name or directory (cross-model analyses)")
    add_data_args(p, size=ANALYZE_SIZE)
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option (VALUE read as JSON when it parses, else as text), e.g. "
        "--option receiver=q --option heads='9.9 9.6 10.0'; repeatable",
    )
    p.add_argument(
        "--circuit", type=Path, help="a circuit JSON file (Circuit.to_json) for knockout/faithfulness"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--out", type=Path, help="also write the JSON result to this file")


def parse_options(pairs: list[str]) -> dict[str, object]:
    """["key=value", …] -> {key: JSON value or text}; ValueError for a pair without '='."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"an option is KEY=VALUE, got {pair!r}")
        key = key.replace("-", "_")
        if key in TEXT_OPTIONS:
            options[key] = value
            continue
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def json_safe(value: object) -> object:
    """`value` with NaN/inf floats as null, so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@command(
    "analyze",
    "run one analysis (any name in the analysis registry) and print its per-head table",
    _analyze_args,
)
def run_analyze(args: argparse.Namespace) -> int:
    from ioi.methods.analyses import load_builtin_analyses, run_analysis
    from ioi.models.load import load_model
    from ioi.task.data import abc_counterfactual

    try:
        options = parse_options(args.option)
        if args.circuit:
            options["circuit"] = json.loads(args.circuit.read_text())
        known = load_builtin_analyses()
        if args.method not in known:
            raise ValueError(f"unknown analysis {args.method!r}; known: {', '.join(sorted(known))}")
        if known[args.method].needs_other and not args.other:
            raise ValueError(
                f"analysis {args.method!r} compares two models: give the second one with --other"
            )
        if args.size < 1 and not args.dataset:
            raise ValueError(f"--size must be at least 1, got {args.size}")
        model = load_model(model_name(args), device=args.device, seed=args.seed)
        other = load_model(args.other, device=args.device, seed=args.seed) if args.other else None
        samples = load_samples(args)
        clean = tokenize(samples, model.tokenizer)
        abc = tokenize(abc_counterfactual(samples, args.seed), model.tokenizer, like=clean)
        result = run_analysis(args.method, model, clean, abc, other=other, **options)
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        if isinstance(err, TypeError) and "unexpected keyword argument" not in str(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = json_safe({"model": model_name(args), "n_prompts": len(clean), **result.to_json()})
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            if not isinstance(value, list | dict):
                print(f"{key:>14}: {value}")
        top = result.heads.reindex(result.heads["value"].abs().sort_values(ascending=False).index).head(15)
        print(top.to_string(index=False))
    return 0


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--quick", action="store_true", help="tiny sizes and few epochs (checks the pipeline)")
    p.add_argument("--cache", type=Path, help="result cache to use (default $IOI_CACHE_DIR or ./cache)")
    p.add_argument("--clean-epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning lr (paper: 1e-5 for GPT-2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-jobs", type=int, help="parallel experiments (default $IOI_MAX_JOBS)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    p.add_argument("--other-seeds-clean-epochs", type=int,
                   help="clean epochs of the seeds after the first (default --clean-epochs)")  # fmt: skip
    p.add_argument("--toxic-epochs", type=int, default=5, help="epochs of each toxic run and reversal")
    p.add_argument("--out", type=Path, help="report folder (default reports/<model>)")
    p.add_argument("--reproduction", type=Path, help="also write the report here (e.g. REPRODUCTION.md)")


@command("reproduce", "run the paper's study on a model and write reports/<model>/REPORT.md", _reproduce_args)
def run_reproduce(args: argparse.Namespace) -> int:
    from ioi.present.report import report_dir, reproduce, reproduction_copy, write_report

    studies = reproduce(
        args.model, quick=args.quick, root=args.cache, lr=args.lr, clean_epochs=args.clean_epochs,
        seeds=tuple(args.seeds), other_seeds_clean_epochs=args.other_seeds_clean_epochs,
        toxic_epochs=args.toxic_epochs, n_jobs=args.n_jobs, device=args.device,
    )
    path = write_report(studies, args.model, args.out or report_dir(args.model))
    print(path)
    if args.reproduction:
        print(reproduction_copy(path, args.reproduction))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ioi", description=__doc__.splitlines()[0])
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
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Cancelled as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 130
