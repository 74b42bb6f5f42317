"""`ioi compare --experiment ID [--family]`: the timeline, the matrices and (for a reversal) the
recovery of a cached experiment's checkpoints, read from the cache or computed by a job."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ioi.cli.registry import UsageError, command, detached, locate_experiment, run_id


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--experiment", required=True, type=run_id, help="an experiment id (`ioi experiments` lists them)"
    )
    p.add_argument(
        "--family",
        action="store_true",
        help="also its lineage: a toxic run's reversal, a reversal's toxic parent",
    )
    p.add_argument(
        "--no-recovery",
        action="store_true",
        help="skip a reversal's recovery dynamics when not cached (computing them re-trains the toxic "
        "run and the reversal, a few minutes on the bundled model)",
    )
    p.add_argument("--cache", type=Path, help="cache directory (default $IOI_CACHE_DIR or ./cache)")
    p.add_argument("--no-wait", action="store_true", help="submit the job and print its id")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _recovery(reversal: tuple[str, int], *roots):
    """The reversal's cached recovery dynamics in the first of `roots` (or a demo cache) holding them."""
    from ioi.runs.cache import demo_roots, load_analysis
    from ioi.runs.recovery import RECOVERY

    for root in dict.fromkeys([*roots, *demo_roots()]):
        if (found := load_analysis(root, reversal[0], reversal[1], RECOVERY)) is not None:
            return found
    return None


def _job(cfg, target: Path, args: argparse.Namespace, what: str) -> int | None:
    """Submit `cfg` to the job system and wait (or print its id with --no-wait): None when it is
    done, else the exit status to return."""
    from ioi.runs import jobs

    job = jobs.submit(cfg, target)
    if args.no_wait:
        print(job)
        return 0
    print(f"job {job}: {what}", file=sys.stderr)
    try:
        info = jobs.wait(job, target)
    except KeyboardInterrupt:
        print(detached(job), file=sys.stderr)
        return 130
    if info.status != "done":
        print(f"error: job {job} is {info.status}: {info.error or 'see `ioi jobs show`'}", file=sys.stderr)
        return 1
    return None


@command(
    "compare",
    "compare the checkpoints of a cached experiment: timeline, transfer and CMAP matrices",
    _compare_args,
)
def run_compare(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ioi.runs.cache import cache_root, read_experiment
    from ioi.runs.catalog import find_experiment, search_roots
    from ioi.runs.compare import (
        ambiguous_lineage,
        comparison_name,
        lineage_reversal,
        load_comparison,
        reversals_of,
    )
    from ioi.runs.experiment import ExperimentConfig
    from ioi.runs.recovery import RECOVERY

    root, args.experiment = locate_experiment(args.experiment, args.cache)
    cfg = ExperimentConfig.from_json(read_experiment(root, args.experiment)["config"])
    if args.family and cfg.parent is None:  # the user's reversals and the demo's continue one lineage each
        roots = search_roots(args.cache)
        children = sorted({c for base in roots for c in reversals_of(base, args.experiment)})
        if len(children) > 1:
            raise UsageError(ambiguous_lineage(args.experiment, children))
    result = load_comparison(root, args.experiment, family=args.family)
    target = cache_root(args.cache)
    if result is None:
        status = _job(replace(cfg, analyses=(comparison_name(cfg, args.family),)), target, args,
                      "comparing (weights re-created by training if the cache has none)")  # fmt: skip
        if status is not None:
            return status
        root = target
        result = load_comparison(root, args.experiment, family=args.family)
    reversal = lineage_reversal(result.summary)
    if reversal is not None and not args.no_recovery and _recovery(reversal, root, target) is None:
        rev_root = find_experiment(reversal[0], args.cache) or root
        cfg = ExperimentConfig.from_json(read_experiment(rev_root, reversal[0])["config"])
        what = f"recovery dynamics of reversal {reversal[0]} (re-trains the toxic run and the reversal)"
        status = _job(replace(cfg, analyses=(RECOVERY,)), target, args, what)
        if status is not None:
            return status
    from ioi.cli.analyze import json_safe

    model = read_experiment(root, args.experiment)["config"]["model"]
    out = {"experiment": args.experiment, "model": model, **result.to_json()}
    dynamics = _recovery(reversal, root, target) if reversal is not None else None
    if dynamics is not None:
        out["recovery"] = dynamics.to_json()
    out = json_safe(out)
    if args.json:
        print(json.dumps(out))
    else:
        for row in result.tables["overlap"].itertuples():
            if row.n_edges == 0:  # the model does not do the task (F(M) ~ 0): nothing to overlap
                print(f"{row.checkpoint:>24}:    0 edges, edge Jaccard undefined (no circuit: F(M) "
                      f"{row.f_model:.2f}, the model does not do the task)")  # fmt: skip
                continue
            print(
                f"{row.checkpoint:>24}: {row.n_edges:4d} edges, edge Jaccard {row.edge_jaccard:.2f} "
                f"[{row.edge_jaccard_lo:.2f}, {row.edge_jaccard_hi:.2f}], "
                f"node Jaccard {row.node_jaccard:.2f}, "
                f"faithfulness {row.faithfulness:.2f}, stability {row.stability:.2f}"
            )
        if dynamics is not None:
            d, pts = dynamics.summary, dynamics.tables["points"]
            end = pts[pts.run == "reversal"].sort_values("step").iloc[-1]
            f0, revive = d["pretrained_logit_diff"], d["steps_to_revive"]
            outcome = f"revived at step {revive}" if revive is not None else "not revived within the run"
            print(
                f"{'recovery':>24}: every {d['every']} steps; at the reversal's last measurement (step "
                f"{int(end['step'])}) F is {end['logit_diff']:.2f} (pretrained [{f0['lo']:.2f}, "
                f"{f0['hi']:.2f}]) and top-edge Jaccard {end['jaccard']:.2f} (floor "
                f"{d['jaccard_floor']:.2f}); {outcome}"
            )
    return 0
