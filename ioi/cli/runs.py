"""Commands on experiments: background jobs, sweeps, the demo cache's precompute, the paper's study."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ioi.cli.registry import DEVICE_HELP, UsageError, check_device, command, detached, learning_rate, run_id
from ioi.methods.analyses import ANALYSES
from ioi.task.defaults import (
    DEFAULT_ANALYSES,
    DEFAULT_EVAL_SIZE,
    DEFAULT_MODEL,
    DEFAULT_TRAIN_SIZE,
    SCENARIOS,
    lr_help,
)


def _experiment_args(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL)
    if not sweep:
        p.add_argument("--scenario", choices=SCENARIOS, default="clean")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--parent", type=run_id, help="the toxic experiment a reversal starts from: its id "
                       "or its first 8+ characters (`ioi experiments` lists them)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--checkpoint-epochs", default="", help="comma-separated epochs to analyse, e.g. 1,3,5")
    p.add_argument("--lr", type=float, help=lr_help())
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-size", type=int, default=DEFAULT_TRAIN_SIZE)
    p.add_argument("--eval-size", type=int, default=DEFAULT_EVAL_SIZE)
    p.add_argument("--analysis-size", type=int, default=100, help="prompts the analyses run on")
    ends = ", ".join(n for n, a in ANALYSES.items() if a.at_ends)
    p.add_argument("--analyses", default=",".join(DEFAULT_ANALYSES),
                   help=f"comma-separated analysis names ({ends}: at the last checkpoint only, and at a "
                        "clean run's start)")  # fmt: skip
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--cache", type=Path, help="cache directory (default $IOI_CACHE_DIR or ./cache)")


def experiment_config(args: argparse.Namespace, **overrides):
    from ioi.models.checks import parse_epochs
    from ioi.runs.catalog import complete_id
    from ioi.runs.experiment import ExperimentConfig

    parent = getattr(args, "parent", None)
    fields = dict(
        model=args.model, scenario=getattr(args, "scenario", "clean"), epochs=args.epochs,
        checkpoint_epochs=parse_epochs(args.checkpoint_epochs), seed=getattr(args, "seed", 0),
        lr=learning_rate(args),
        weight_decay=args.weight_decay, batch_size=args.batch_size, train_size=args.train_size,
        eval_size=args.eval_size, analysis_size=args.analysis_size,
        parent=parent and complete_id(parent, args.cache),
        analyses=tuple(dict.fromkeys(a.strip() for a in args.analyses.split(",") if a.strip())),  # once each
    )  # fmt: skip
    cfg = ExperimentConfig(**fields | overrides)
    cfg.validate()
    args.device = check_device(args.device)
    return cfg


def _jobs_args(p: argparse.ArgumentParser) -> None:
    subs = p.add_subparsers(dest="action", required=True)
    submit = subs.add_parser(
        "submit", help="queue an experiment; prints the job id",
        description="Queue an experiment (fine-tuning with its analyses at each saved checkpoint) for the\n"
        "background worker; prints the job id. Results go to the cache; `jobs show ID` follows it.",
    )  # fmt: skip
    _experiment_args(submit)
    submit.add_argument("--wait", action="store_true", help="block with a progress bar until it ends")
    listing = subs.add_parser("list", help="every job, newest first", description="Every job, newest first.")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--cache", type=Path)
    actions = (
        ("show", "one job's state, progress and log"),
        ("cancel", "stop a job at its next step"),
        ("resume", "continue an interrupted, failed or cancelled job"),
    )
    for name, help in actions:
        sub = subs.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        sub.add_argument("id", type=run_id)
        sub.add_argument("--cache", type=Path)
        if name == "show":
            sub.add_argument("--json", action="store_true")
        if name == "resume":
            sub.add_argument("--wait", action="store_true")


def _wait_with_bar(job_id: str, root: Path | None) -> int:
    from tqdm import tqdm

    from ioi.runs.jobs import wait

    # the state goes in the description: tqdm writes a postfix after ", "
    bar = tqdm(total=1.0, unit="run", desc=job_id, bar_format="{percentage:3.0f}%|{bar}| {desc}")

    shown: list[str] = []

    def update(job) -> None:
        text = job.status  # a queued job has no epochs yet
        if job.epochs:
            text = f"{job.status} epoch {job.epoch}/{job.epochs} {job.phase}".strip()
        if shown[-1:] != [text]:
            shown.append(text)
            bar.n = job.fraction
            bar.set_description_str(f"{job_id} {text}")

    try:
        job = wait(job_id, root, on_update=update)
    except KeyboardInterrupt:  # only the waiting stops: the job is a detached process
        bar.close()
        print(detached(job_id), file=sys.stderr)
        return 130
    bar.close()
    if job.status != "done":
        print(f"job {job_id} {job.status}: {job.error}", file=sys.stderr)
        return 1
    print(f"results: {results_dir(job, root)}", file=sys.stderr)
    return 0


def results_dir(job, root: Path | None) -> Path:
    """Where a job's experiment keeps its results (checkpoints/, epoch-NNN/<analysis>.json): the
    user's cache, or the demo's for a run the demo ships."""
    from ioi.runs.cache import experiment_dir
    from ioi.runs.catalog import find_experiment

    return experiment_dir(find_experiment(job.experiment, root) or root, job.experiment)


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
    if args.action != "submit" and not cache_root(root).is_dir():  # a mistyped --cache is not created
        if args.action != "list":
            raise UsageError(f"no job {args.id!r}: cache {cache_root(root)} does not exist")
        print("[]" if args.json else f"no jobs: cache {cache_root(root)} does not exist",
              file=sys.stdout if args.json else sys.stderr)  # fmt: skip
        return 0
    if args.action == "list":
        listed = jobs.list_jobs(root)
        if not listed and not args.json:
            print(f"no jobs in {cache_root(root)}", file=sys.stderr)
        if args.json:
            print(json.dumps([j.to_json() for j in listed], indent=1))
        for job in [] if args.json else listed:
            print(_job_line(job))
        return 0
    args.id = _job_id(args.id, root)
    if args.action == "show":
        job = jobs.get_job(args.id, root)
        if args.json:
            print(json.dumps(job.to_json() | {"results": str(results_dir(job, root))}, indent=1))
            return 0
        print(_job_line(job))
        print(json.dumps(job.config))
        print(f"results: {results_dir(job, root)}")
        if job.error:  # a cancelled or interrupted job says so; only a failure is an error
            print(f"{'error' if job.status == 'failed' else job.status}: {job.error}")
        print(job.log)
        print(f"(process output: {cache_root(root) / 'jobs' / f'{job.id}.log'})")
        return 0
    if args.action == "cancel":
        job = jobs.cancel(args.id, root)
        print(_job_line(job))
        if job.status in ("done", "failed", "cancelled"):
            print(f"job {job.id} had already ended ({job.status}): nothing to cancel", file=sys.stderr)
        elif job.status in ("queued", "running"):
            print(f"cancel requested: job {job.id} stops at its next training step (`ioi jobs show "
                  f"{job.id}` follows it)", file=sys.stderr)  # fmt: skip
        return 0
    job = jobs.resume(args.id, root)
    print(_job_line(job))
    if job.status == "done":
        print(f"job {job.id} is done: nothing to resume", file=sys.stderr)
        return 0
    return _wait_with_bar(job.id, root) if args.wait else 0


def _job_id(typed: str, root: Path | None) -> str:
    """The job `typed` names: its id, or the one job whose id starts with it; a UsageError saying
    so when it names several jobs, or an experiment rather than a job."""
    from ioi.runs import jobs
    from ioi.runs.cache import check_id
    from ioi.runs.catalog import complete_id, find_experiment

    ids = [j.id for j in jobs.list_jobs(root)]
    if typed in ids:
        return typed
    starting = [i for i in ids if i.startswith(typed)]
    if len(starting) == 1:
        return starting[0]
    if len(starting) > 1:
        raise UsageError(f"{typed} starts {len(starting)} job ids ({', '.join(starting)}): give more of it")
    try:
        exp_id = complete_id(check_id(typed), root)
    except ValueError:
        exp_id = None
    if exp_id and find_experiment(exp_id, root) is not None:
        raise UsageError(f"{typed} is an experiment, not a job: `ioi experiments {exp_id}` shows it")
    return typed


def _n_jobs(args: argparse.Namespace, default: int | None) -> int | None:
    """--n-jobs as typed (a count, or joblib's negative "all cores but …"), else `default`."""
    if args.n_jobs == 0:
        raise UsageError("--n-jobs 0 runs nothing: give 1 or more parallel experiments (-1: one per core)")
    return default if args.n_jobs is None else args.n_jobs


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

    from ioi.models.checks import parse_seeds
    from ioi.runs.jobs import max_jobs
    from ioi.runs.sweep import run_sweep, sweep_configs

    base = experiment_config(args)
    stages = sweep_configs(
        base, seeds=parse_seeds(args.seeds), scenarios=args.scenarios.split(","),
        reversal_epochs=args.reversal_epochs,
    )  # fmt: skip
    n_jobs = _n_jobs(args, -1 if args.dask else max_jobs())
    context = nullcontext()
    if args.dask:
        import joblib
        from dask.distributed import Client

        client = Client(args.dask)
        context = joblib.parallel_config(backend="dask", wait_for_workers_timeout=60)
        print(f"running on {client.dashboard_link}", file=sys.stderr)
    with context:
        for summary in run_sweep(stages, args.cache, n_jobs=n_jobs, device=args.device, verbose=5):
            last = max(summary.metrics)
            print(f"{summary.id}  epoch {last}: logit diff {summary.metrics[last]['logit_diff']:.3f}")
    return 0


def _study_args(p: argparse.ArgumentParser) -> None:
    """The study's shape: seeds, the later seeds' clean epochs, the toxic runs' epochs."""
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    p.add_argument("--other-seeds-clean-epochs", type=int,
                   help="clean epochs of the seeds after the first (default --clean-epochs)")  # fmt: skip
    p.add_argument("--toxic-epochs", type=int, default=5, help="epochs of each toxic run and reversal")


def _study_shape(args: argparse.Namespace) -> dict:
    """The study's shape as `demo_stages` takes it; a UsageError for an epoch count or budget below
    1 (said before anything runs)."""
    from ioi.models.checks import parse_seeds

    for flag in ("clean_epochs", "toxic_epochs", "other_seeds_clean_epochs"):
        if (n := getattr(args, flag, None)) is not None and n < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {n}")
    if getattr(args, "budget", 1) <= 0:
        raise UsageError(f"--budget is minutes the clean run may take: give a positive number, got "
                         f"{args.budget}")
    return {"seeds": parse_seeds(args.seeds), "toxic_epochs": args.toxic_epochs,
            "other_seeds_clean_epochs": args.other_seeds_clean_epochs}  # fmt: skip


def _precompute_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--out", type=Path, help="cache to fill (default the shipped cache/demo)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few epochs, to check the pipeline")
    p.add_argument("--clean-epochs", type=int, help="default: the longest run up to 100 that fits --budget")
    p.add_argument("--budget", type=float, default=15, help="minutes the clean run may take (default 15)")
    p.add_argument("--keep-weights", action="store_true", help="keep checkpoints (large) in the demo cache")
    p.add_argument("--lr", type=float, help=lr_help())
    _study_args(p)
    p.add_argument("--n-jobs", type=int, help="parallel experiments (default $IOI_MAX_JOBS)")


@command("precompute", "fill the shipped demo cache (cache/demo) for a model", _precompute_args)
def run_precompute(args: argparse.Namespace) -> int:
    import os

    from ioi.runs.cache import DEMO_ROOT
    from ioi.runs.jobs import max_jobs
    from ioi.runs.precompute import (
        add_start_knockouts,
        clean_epochs_within,
        demo_stages,
        epoch_seconds,
        playground_experiments,
        prune_weights,
    )
    from ioi.runs.sweep import run_sweep

    shape = _study_shape(args)
    if args.clean_epochs is None and not args.quick:
        seconds = epoch_seconds(args.model)
        args.clean_epochs = clean_epochs_within(args.budget * 60, seconds)
        print(f"a clean epoch takes ~{seconds:.0f} s here: {args.clean_epochs} epochs", file=sys.stderr)
    stages = demo_stages(args.model, quick=args.quick, clean_epochs=args.clean_epochs or 100,
                         lr=learning_rate(args), **shape)  # fmt: skip
    os.environ["IOI_DEMO_WRITE"] = "1"  # the one writer of the read-only demo cache (its workers inherit it)
    summaries = run_sweep(stages, args.out or DEMO_ROOT, n_jobs=_n_jobs(args, max_jobs()), verbose=5)
    add_start_knockouts(args.out or DEMO_ROOT, log=lambda m: print(m, file=sys.stderr))
    if not args.keep_weights:
        prune_weights(args.out or DEMO_ROOT, keep=playground_experiments(args.out or DEMO_ROOT))
    from ioi.present.findings import store_findings

    store_findings(args.out or DEMO_ROOT)  # judged once here: the Findings page only reads them
    for summary in summaries:
        print(summary.id, sorted(summary.metrics), *summary.notes[:1])
    return 0


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--quick", action="store_true", help="tiny sizes and few epochs (checks the pipeline)")
    p.add_argument("--cache", type=Path, help="result cache to use (default $IOI_CACHE_DIR or ./cache)")
    p.add_argument("--clean-epochs", type=int, default=100)
    p.add_argument("--lr", type=float, help=lr_help())
    p.add_argument("--device", help=DEVICE_HELP)
    _study_args(p)
    p.add_argument("--n-jobs", type=int, help="parallel experiments (default $IOI_MAX_JOBS)")
    p.add_argument("--out", type=Path, help="report folder (default reports/<model>)")
    p.add_argument("--reproduction", type=Path, help="also write the report here (e.g. REPRODUCTION.md)")
    p.add_argument("--note", default="", help="a sentence on how the study was run, printed in the report")
    p.add_argument("--from-cache", action="store_true",
                   help="run nothing: report what the cache holds (e.g. --cache cache/demo)")  # fmt: skip


@command("reproduce", "run the paper's study on a model and write reports/<model>/REPORT.md", _reproduce_args)
def run_reproduce(args: argparse.Namespace) -> int:
    from ioi.present.findings import find_studies
    from ioi.present.report import report_dir, reproduce, reproduction_copy, write_report
    from ioi.runs.cache import cache_root

    if args.from_cache:
        studies = find_studies(cache_root(args.cache), args.model)
        if not studies:
            raise UsageError(
                f"no cached clean experiment of {args.model!r} in {cache_root(args.cache)} "
                "to report on; run `ioi reproduce` without --from-cache, or give --cache"
            )
    else:
        lr = learning_rate(args)
        args.device = check_device(args.device)
        studies = reproduce(
            args.model, quick=args.quick, root=args.cache, lr=lr, clean_epochs=args.clean_epochs,
            n_jobs=_n_jobs(args, None), device=args.device, **_study_shape(args),
        )  # fmt: skip
    path = write_report(studies, args.model, args.out or report_dir(args.model), note=args.note)
    print(path)
    if args.reproduction:
        print(reproduction_copy(path, args.reproduction))
    return 0
