"""`ioi compare --experiment ID [--family]`: the timeline, the matrices and (for a reversal) the
recovery of a cached experiment's checkpoints, read from the cache or computed by a job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ioi.cli.registry import UsageError, command, detached


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="an experiment id (`ioi jobs list`, or the demo's)")
    p.add_argument(
        "--family",
        action="store_true",
        help="also its lineage: a toxic run's reversal, a reversal's toxic parent",
    )
    p.add_argument("--cache", type=Path, help="cache directory (default $IOI_CACHE_DIR or ./cache)")
    p.add_argument("--no-wait", action="store_true", help="submit the job and print its id")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _find(exp_id: str, cache: Path | None) -> Path | None:
    """The cache (the user's, then the demo ones) that knows `exp_id`."""
    from ioi.runs.cache import cache_root, demo_roots, read_experiment

    for root in [cache_root(cache), *demo_roots()]:
        if read_experiment(root, exp_id) is not None:
            return root
    return None


@command(
    "compare",
    "compare the checkpoints of a cached experiment: timeline, transfer and CMAP matrices",
    _compare_args,
)
def run_compare(args: argparse.Namespace) -> int:
    from ioi.runs.cache import cache_root, check_id, read_experiment
    from ioi.runs.compare import COMPARE, COMPARE_FAMILY, load_comparison

    try:
        check_id(args.experiment)
    except ValueError as err:
        raise UsageError(f"--experiment: {err}") from None
    root = _find(args.experiment, args.cache)
    if root is None:
        raise UsageError(f"no experiment {args.experiment} in {cache_root(args.cache)} or the demo cache")
    result = load_comparison(root, args.experiment, family=args.family)
    if result is None:
        from dataclasses import replace

        from ioi.runs import jobs
        from ioi.runs.experiment import ExperimentConfig

        cfg = ExperimentConfig.from_json(read_experiment(root, args.experiment)["config"])
        cfg = replace(cfg, analyses=(COMPARE_FAMILY if args.family else COMPARE,))
        target = cache_root(args.cache)
        job = jobs.submit(cfg, target)
        if args.no_wait:
            print(job)
            return 0
        print(f"job {job}: comparing (weights re-created by training if the cache has none)", file=sys.stderr)
        try:
            info = jobs.wait(job, target)
        except KeyboardInterrupt:
            print(detached(job), file=sys.stderr)
            return 130
        if info.status != "done":
            print(
                f"error: job {job} is {info.status}: {info.error or 'see `ioi jobs show`'}", file=sys.stderr
            )
            return 1
        root = target
        result = load_comparison(root, args.experiment, family=args.family)
    from ioi.cli.analyze import json_safe
    from ioi.runs.cache import load_analysis
    from ioi.runs.recovery import RECOVERY

    model = read_experiment(root, args.experiment)["config"]["model"]
    out = {"experiment": args.experiment, "model": model, **result.to_json()}
    for exp_id, scenario, epoch in zip(
        result.summary["experiments"], result.summary["scenarios"], result.summary["epochs"], strict=True
    ):
        dynamics = load_analysis(root, exp_id, epoch, RECOVERY) if scenario == "reversal" else None
        if dynamics is not None and "recovery" not in out:
            out["recovery"] = dynamics.to_json()
    out = json_safe(out)
    if args.json:
        print(json.dumps(out))
    else:
        for row in result.tables["overlap"].itertuples():
            print(
                f"{row.checkpoint:>24}: {row.n_edges:4d} edges, edge Jaccard {row.edge_jaccard:.2f} "
                f"[{row.edge_jaccard_lo:.2f}, {row.edge_jaccard_hi:.2f}], "
                f"node Jaccard {row.node_jaccard:.2f}, "
                f"faithfulness {row.faithfulness:.2f}, stability {row.stability:.2f}"
            )
    return 0
