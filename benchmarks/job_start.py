"""Submit → first training step of a job: no daemon, a cold daemon, a warm one (ioi.runs.daemon).

    PYTHONPATH=. python benchmarks/job_start.py              # 5 of each, ~3 minutes on 2 idle cores
    PYTHONPATH=. python benchmarks/job_start.py --repeats 3

Each sample is wall-clock from the start of an `ioi jobs submit` process (a fresh Python, as a
user's shell runs it) to the moment the job's row shows its first training step; the job is then
cancelled. "no daemon" is `$IOI_JOB_DAEMON=0` (a fresh supervisor process imports torch for each
job); "cold daemon" submits to a fresh cache root, so the submit starts a daemon that still has to
import torch; "warm daemon" submits to a root whose daemon has imported everything. The load
average is printed with the numbers: on a shared machine they mean little without it. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cli_speed import TRAINING, ioi  # noqa: E402  (this folder is not a package on sys.path)

from ioi.runs.jobs import TERMINAL, cancel, get_job, wait  # noqa: E402


def first_step(root: Path, seed: int) -> float:
    """Seconds from the start of `ioi jobs submit` to the job's first training step."""
    start = time.perf_counter()
    job_id = ioi("jobs", "submit", "--cache", str(root), *TRAINING, "--seed", str(seed), "--analyses",
                 "").stdout.strip()  # fmt: skip
    while (job := get_job(job_id, root)).step < 1 and job.epoch <= 1:
        if job.status in TERMINAL:
            raise RuntimeError(f"job {job_id} {job.status}: {job.error}")
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    cancel(job_id, root)
    wait(job_id, root, timeout=120)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ["IOI_JOB_DAEMON_IDLE"] = "30"  # the daemons started here exit soon after
    results: dict[str, object] = {"load_average_before": os.getloadavg(), "cores": os.cpu_count()}
    seeds = iter(range(1000, 2000))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IOI_JOB_DAEMON"] = "0"
        off = [first_step(Path(tmp) / f"off{i}", next(seeds)) for i in range(args.repeats)]
        samples = {"no_daemon": off}
        os.environ["IOI_JOB_DAEMON"] = "1"
        cold = [first_step(Path(tmp) / f"cold{i}", next(seeds)) for i in range(args.repeats)]
        samples["cold_daemon"] = cold
        warm = Path(tmp) / "warm"
        first_step(warm, next(seeds))  # starts the daemon; once its job trained, it has imported all
        samples["warm_daemon"] = [first_step(warm, next(seeds)) for _ in range(args.repeats)]
    for name, runs in samples.items():
        results[f"{name}_median_s"] = statistics.median(runs)
        results[f"{name}_runs_s"] = [round(r, 2) for r in runs]
        each = ", ".join(f"{r:.2f}" for r in runs)
        print(f"{name.replace('_', ' ')}: submit → first training step, median "
              f"{statistics.median(runs):.2f} s of {len(runs)} ({each})")  # fmt: skip
    results["load_average_after"] = os.getloadavg()
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
