"""Time the full comparison of an experiment family (`ioi compare`), weights on disk.

    PYTHONPATH=. python benchmarks/compare.py --experiment ID --weights DIR [--family] [--threads 2]

`--weights`: a cache holding the family's checkpoints (the demo cache keeps none: re-create them
with `ioi jobs submit`, or point at a user cache). Nothing is written. Prints the wall time, the
machine's load and the overlap table.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", required=True)
    p.add_argument("--weights", required=True, help="cache directory with the checkpoints")
    p.add_argument("--root", help="cache holding the experiment records (default the demo cache)")
    p.add_argument("--family", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from ioi.runs.cache import DEMO_ROOT
    from ioi.runs.compare import compare_experiment

    load = os.getloadavg()
    t = time.perf_counter()
    r = compare_experiment(
        args.root or DEMO_ROOT, args.experiment, family=args.family, weights_root=args.weights, write=False
    )
    wall = time.perf_counter() - t
    print(
        f"{len(r.summary['checkpoints'])} checkpoints, {args.threads} threads: {wall:.1f} s "
        f"(load average before {load[0]:.1f}, after {os.getloadavg()[0]:.1f})"
    )
    print(
        r.tables["overlap"][
            ["checkpoint", "n_edges", "edge_jaccard", "node_jaccard", "faithfulness"]
        ].to_string()
    )


if __name__ == "__main__":
    main()
