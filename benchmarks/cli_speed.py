"""Speed of the command line: `ioi --help`, every subcommand's `--help`, submit → first training
step of a job, and fine-tuning steps/s run directly against the same training inside a job.

    PYTHONPATH=. python benchmarks/cli_speed.py            # ~2 minutes on 2 CPU cores
    PYTHONPATH=. python benchmarks/cli_speed.py --quick    # help times and one latency only

Every time is wall-clock from outside, in fresh processes, as a user sees it. The load average is
printed with the numbers: on a shared machine they mean little without it. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this process reads the jobs' rows through ioi.runs.jobs
SUBCOMMANDS = ("dataset", "eval", "finetune", "pretrain-tiny", "analyze", "jobs", "jobs submit", "sweep",
               "precompute", "reproduce")  # fmt: skip
TRAINING = ["--model", "ioi-tiny", "--epochs", "1", "--train-size", "3200", "--eval-size", "50"]
"""100 steps of batch 32 on the bundled model: long enough for a stable rate, short enough to repeat."""


def env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "IOI_JOB_DAEMON_IDLE": "30"}  # its daemons exit soon after


def ioi(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ioi", *args], capture_output=True, text=True,
                          env=env(), cwd=cwd, timeout=600, check=True)  # fmt: skip


def wall(*args: str) -> float:
    start = time.perf_counter()
    ioi(*args)
    return time.perf_counter() - start


def help_times(repeats: int) -> dict[str, float]:
    top = [wall("--help") for _ in range(repeats)]
    each = {cmd: max(wall(*cmd.split(), "--help") for _ in range(2)) for cmd in SUBCOMMANDS}
    slowest = max(each, key=each.get)
    return {"help_median_s": statistics.median(top), "help_runs_s": top,
            "subcommand_help_max_s": each[slowest], "slowest_subcommand": slowest}  # fmt: skip


def job_timeline(root: Path) -> dict[str, float]:
    """Submit a job with `ioi jobs submit` and follow its row: seconds from the submit command's
    start to its return, to the first training step, and the training rate (first to last step)."""
    from ioi.runs.jobs import get_job

    start = time.perf_counter()
    job_id = ioi("jobs", "submit", "--cache", str(root), *TRAINING, "--analyses", "").stdout.strip()
    returned = time.perf_counter() - start
    first = last = None
    while True:
        job = get_job(job_id, root)
        now = time.perf_counter()
        if job.step >= 1 and first is None:
            first = (now, job.step)
        if job.steps and job.step == job.steps and last is None:
            last = (now, job.step)
        if job.status in ("done", "failed", "cancelled", "interrupted"):
            break
        time.sleep(0.02)
    if job.status != "done":
        raise RuntimeError(f"job {job_id} {job.status}: {job.error}")
    rate = (last[1] - first[1]) / (last[0] - first[0])
    return {"submit_returns_s": returned, "submit_to_first_step_s": first[0] - start, "job_steps_per_s": rate}


def import_floor() -> float:
    """Seconds a fresh process takes to import what a training worker cannot do without."""
    start = time.perf_counter()
    code = "import torch; from transformers import GPT2LMHeadModel"  # what loading ioi-tiny needs
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def direct_rate(out: Path, threads: str | None) -> float:
    """Steps/s of `ioi finetune` (it prints its rate, first step to last), with $IOI_JOB_THREADS."""
    extra = {"IOI_JOB_THREADS": threads} if threads else {}
    argv = [sys.executable, "-m", "ioi", "finetune", *TRAINING, "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env() | extra, timeout=900, check=True)
    return float(re.search(r"([\d.]+) steps/s", done.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, object] = {"load_average_before": os.getloadavg()[0], "cores": os.cpu_count()}
    results |= help_times(args.repeats)
    print(f"ioi --help: median {results['help_median_s']:.2f} s of {args.repeats}; slowest subcommand "
          f"--help: {results['slowest_subcommand']} {results['subcommand_help_max_s']:.2f} s")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        runs = [job_timeline(Path(tmp) / f"cache{i}") for i in range(1 if args.quick else 3)]
        results["submit_to_first_step_s"] = statistics.median(r["submit_to_first_step_s"] for r in runs)
        results["submit_returns_s"] = statistics.median(r["submit_returns_s"] for r in runs)
        results["job_steps_per_s"] = statistics.median(r["job_steps_per_s"] for r in runs)
        results["torch_transformers_import_s"] = floor = import_floor()
        print(f"jobs submit (median of {len(runs)}): returns in {results['submit_returns_s']:.1f} s, "
              f"first training step {results['submit_to_first_step_s']:.1f} s after its start; "
              f"importing torch + transformers takes {floor:.1f} s")  # fmt: skip
        if not args.quick:
            results["direct_steps_per_s"] = direct_rate(Path(tmp) / "direct", None)
            results["direct_steps_per_s_one_thread_per_core"] = direct_rate(
                Path(tmp) / "direct-cores", str(os.cpu_count())
            )
            print(f"finetune steps/s: direct {results['direct_steps_per_s']:.1f}, in a job "
                  f"{results['job_steps_per_s']:.1f}, direct with torch's default of one thread per core "
                  f"{results['direct_steps_per_s_one_thread_per_core']:.1f}")  # fmt: skip
    results["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
