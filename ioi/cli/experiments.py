"""`ioi experiments [ID]`: the experiments a cache holds (and the demo's), and one experiment's
evaluation at each cached epoch, so finished runs can be read without the dashboard."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ioi.cli.registry import command, locate_experiment, logit_diff_text, plural, run_id


def _experiments_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", nargs="?", type=run_id, help="one experiment: its metrics at every cached epoch")
    p.add_argument("--cache", type=Path, help="cache directory (default $IOI_CACHE_DIR or ./cache)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _what(cfg: dict) -> str:
    parent = f" from {cfg['parent'][:8]}" if cfg.get("parent") else ""
    return f"{cfg['scenario']}{parent} {cfg['model']} seed {cfg['seed']} {cfg['epochs']} ep"


def _lineage_order(info) -> tuple:
    """Seed by seed: the clean run, then each toxic run followed by its reversals."""
    cfg = info.config
    parent = cfg.get("parent")
    return (cfg["seed"], cfg["scenario"] != "clean", parent or info.id, parent is not None)


def _epoch_rows(root: Path, exp_id: str) -> list[dict]:
    """Per cached epoch: the evaluation metrics (held-out names) and the analyses cached there."""
    from ioi.runs.cache import cached_epochs, load_metrics_series

    series = load_metrics_series(root, exp_id)
    keep = [c for c in ("logit_diff", "logit_diff_se", "accuracy", "io_prob", "n", "seen_logit_diff")
            if c in series]
    analyses = cached_epochs(root, exp_id)
    rows = []
    for rec in series[["epoch", *keep]].to_dict("records"):
        epoch = int(rec.pop("epoch"))
        metrics = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        rows.append({"epoch": epoch, **metrics, "analyses": [a for a in analyses[epoch] if a != "metrics"]})
    return rows


@command("experiments", "list the cached experiments, or one experiment's metrics per epoch",
         _experiments_args)  # fmt: skip
def run_experiments(args: argparse.Namespace) -> int:
    from ioi.runs.cache import cache_root, is_demo
    from ioi.runs.catalog import best_copies, list_experiments, search_roots

    if args.id is not None:
        return _show(args)
    if args.cache is not None and not cache_root(args.cache).is_dir():  # a mistyped path hides your runs
        print(f"warning: cache {cache_root(args.cache)} does not exist: only the demo's experiments are "
              "listed", file=sys.stderr)  # fmt: skip
    roots = [r for r in search_roots(args.cache) if r.is_dir()]
    listed = best_copies([(root, info) for root in roots for info in list_experiments(root)])
    if args.json:
        out = [{"id": i.id, "cache": str(r), "demo": is_demo(r), "status": i.status, "config": i.config,
                "cached_epochs": sorted(i.epochs)} for r, i in listed]  # fmt: skip
        print(json.dumps(out, indent=1))
        return 0
    if not listed:
        print(f"no experiments in {cache_root(args.cache)}", file=sys.stderr)
        return 0
    for root in roots:
        here = sorted((i for r, i in listed if r == root), key=_lineage_order)
        if not here:
            print(f"no experiments in {root}\n")
            continue
        demo = " (the demo, read-only)" if is_demo(root) else ""
        print(f"{root}{demo}: {plural(len(here), 'experiment')}")
        for info in here:
            cached = ",".join(str(e) for e in sorted(info.epochs)) or "-"
            print(f"  {info.id}  {info.status:<9} {_what(info.config):<44} cached epochs {cached}")
        print()
    print("`ioi experiments ID` shows one's metrics per epoch; `ioi compare --experiment ID` its checkpoints")
    return 0


def _show(args: argparse.Namespace) -> int:
    from ioi.runs.cache import read_experiment

    root, args.id = locate_experiment(args.id, args.cache)
    record = read_experiment(root, args.id)
    rows = _epoch_rows(root, args.id)
    if args.json:
        print(json.dumps({"id": args.id, "cache": str(root), "config": record["config"], "epochs": rows}))
        return 0
    print(f"{args.id}: {_what(record['config'])} (in {root})")
    if not rows:
        print("no epoch is cached yet (`ioi jobs list` shows whether its job runs)")
        return 0
    n = next((int(r["n"]) for r in rows if "n" in r), None)
    print(f"evaluation on {n} held-out-name prompts: logit diff = logit(IO) − logit(S) at the end, ± its "
          "standard error; accuracy = share with logit(IO) > logit(S)")  # fmt: skip
    for row in rows:
        if "logit_diff" not in row:
            print(f"  epoch {row['epoch']:>3}: no evaluation; analyses {', '.join(row['analyses']) or '-'}")
            continue
        seen = f"{row['seen_logit_diff']:.2f}" if "seen_logit_diff" in row else "-"
        print(f"  epoch {row['epoch']:>3}: logit diff {logit_diff_text(row):<13} (training names {seen:>5})  "
              f"accuracy {row['accuracy']:.3f}  analyses {', '.join(row['analyses']) or '-'}")  # fmt: skip
    return 0
