"""Time the full comparison of an experiment family (`ioi compare`) and check it against the cache.

    PYTHONPATH=. python benchmarks/compare.py                      # the shipped clean family, demo cache
    PYTHONPATH=. python benchmarks/compare.py --experiment ID --weights DIR [--family] [--threads 1]
    PYTHONPATH=. python benchmarks/compare.py --checkpoint-epochs 1,2,3,4,5,7,10   # 8 checkpoints

`--weights`: a cache holding the family's checkpoints (default the demo cache, which keeps the
weights of the shipped clean family of seed 0; for the others re-create them with `ioi jobs
submit`, or point at a user cache). Nothing is written. Prints the wall and CPU time, the machine's
load before and after, the stage split, and the largest difference of every table from the stored
comparison entry (where there is one): the timing is of a computation that gives the cached result.

`--checkpoint-epochs`: the shipped clean run re-trained (same config and seed, ~1 minute, not
timed) into `--scratch` with checkpoints at these epochs, and that family timed instead.
"""

from __future__ import annotations

import argparse
import os
import time

CLEAN_FAMILY = "beb0361aac0eeba0"
"""The shipped clean run (seed 0, epochs 0, 1, 3, 5, 10) in the demo cache."""


def _stage_timer(log: list[tuple[str, float]]):
    """A `log` callback recording when each checkpoint's profiling starts."""
    return lambda message: log.append((message, time.perf_counter()))


def _differences(stored, fresh) -> dict[str, float | str]:
    """Per table the largest absolute difference of its numeric columns (NaN where both are NaN
    counts as equal) and whether every other column is identical."""
    import numpy as np

    out: dict[str, float | str] = {}
    for name, a in stored.tables.items():
        b = fresh.tables[name]
        num = a.select_dtypes("number").columns
        x, y = a[num].to_numpy(float), b[num].to_numpy(float)
        both_nan = np.isnan(x) & np.isnan(y)
        diff = np.where(both_nan, 0.0, np.abs(x - y))
        other = [c for c in a.columns if c not in num]
        same = all((a[c].astype(str) == b[c].astype(str)).all() for c in other)
        out[name] = float(np.nanmax(diff)) if diff.size else 0.0
        if not same:
            out[name] = f"{out[name]:.2g}, text columns DIFFER"
    return out


def retrain(root, exp_id: str, epochs: str, scratch: str) -> str:
    """`exp_id`'s config with checkpoints at `epochs`, trained into `scratch` (resumed if there);
    the new experiment's id."""
    from ioi.runs.cache import read_experiment
    from ioi.runs.experiment import ExperimentConfig, run_experiment

    config = read_experiment(root, exp_id)["config"]
    want = sorted({int(e) for e in epochs.split(",")})
    cfg = ExperimentConfig.from_json(config | {"checkpoint_epochs": want, "analyses": ["metrics"]})
    t = time.perf_counter()
    done = run_experiment(cfg, scratch)
    print(f"re-trained {exp_id} with checkpoints {want} as {done.id} in {time.perf_counter() - t:.1f} s")
    return done.id


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default=CLEAN_FAMILY)
    p.add_argument("--weights", help="cache directory with the checkpoints (default the demo cache)")
    p.add_argument("--root", help="cache holding the experiment records (default the demo cache)")
    p.add_argument("--family", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the jobs)")
    p.add_argument(
        "--checkpoint-epochs", help="re-train the shipped clean run with these, e.g. 1,2,3,4,5,7,10"
    )
    p.add_argument("--scratch", default="/tmp/ioi-compare-benchmark", help="cache for --checkpoint-epochs")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ioi.runs.cache import DEMO_ROOT
    from ioi.runs.compare import compare_experiment, load_comparison

    root = args.root or DEMO_ROOT
    if args.checkpoint_epochs:
        args.experiment = retrain(root, args.experiment, args.checkpoint_epochs, args.scratch)
        root = args.weights = args.scratch
    stored = load_comparison(root, args.experiment, family=args.family)
    load, log = os.getloadavg(), []
    t, cpu = time.perf_counter(), time.process_time()
    r = compare_experiment(
        root,
        args.experiment,
        family=args.family,
        weights_root=args.weights or root,
        write=False,
        log=_stage_timer(log),
    )
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(
        f"{len(r.summary['checkpoints'])} checkpoints ({', '.join(r.summary['checkpoints'])}), "
        f"{args.threads} torch thread(s): {wall:.1f} s wall, {cpu:.1f} s CPU "
        f"(load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f})"
    )
    ends = [s for _, s in log[1:]] + [t + wall]
    print("stages:", "; ".join(f"{m} {b - a:.1f} s" for (m, a), b in zip(log, ends, strict=True)))
    if stored is None:
        print("no stored comparison to check against")
    else:
        print("largest difference from the stored entry, per table:", _differences(stored, r))
    columns = ["checkpoint", "n_edges", "edge_jaccard", "node_jaccard", "faithfulness"]
    print(r.tables["overlap"][columns].to_string())


if __name__ == "__main__":
    main()
