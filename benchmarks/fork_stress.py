"""Fork-safety of torch in job processes: when does a child forked from a torch process hang?

    python benchmarks/fork_stress.py                          # 60 fresh parents × 5 forks, each pattern
    python benchmarks/fork_stress.py --rounds 20 --patterns daemon

Job workers are forked from a daemon that has imported torch (ioi.runs.daemon), which forks only
when no other thread is alive ("no thread but this one at a fork"), and the supervisor forks its
worker before starting any thread. One worker was once found spinning inside MKL's allocator
(mkl_serv_allocate → mm_account_ptr_by_tid) at its first sgemm, and `ioi.runs.jobs` sets
MKL_DISABLE_FAST_MM=1 for it. This script measures both measures. Each parent is a fresh
interpreter (MKL reads the variable once) that sets two torch threads, then forks children that each
run the matmuls of a training step, in one of three patterns:

- ``busy``: a second thread runs matmuls while the parent forks (the first fork lands while that
  thread is initialising MKL and OpenMP);
- ``daemon``: the daemon's pattern: the second thread ran matmuls and was joined before the forks;
- ``idle``: torch imported, nothing run, no thread (the daemon before its warm-up).

A child that does not exit within --timeout seconds counts as hung and is killed. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import os, sys, threading, time
import torch
torch.set_num_threads(2)
pattern, forks, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
a = torch.randn(256, 256)
stop = threading.Event()
def busy():
    while not stop.is_set():
        (a @ a).sum()
        if pattern == "daemon":
            break
worker = threading.Thread(target=busy, daemon=True)
if pattern != "idle":
    worker.start()
if pattern == "daemon":
    worker.join()
hung = []
for i in range(forks):
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)
        x = torch.randn(64, 128, requires_grad=True)
        (x @ torch.randn(128, 512)).relu().sum().backward()
        os._exit(0)
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.005)
    else:
        hung.append(i)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
stop.set()
if worker.is_alive():
    worker.join()  # torch torn down under a running matmul aborts the interpreter
print(*hung)
"""
PATTERNS = ("busy", "daemon", "idle")


def run(pattern: str, fast_mm: bool, forks: int, timeout: float, rounds: int) -> dict:
    """`rounds` fresh parents of `pattern`, MKL's fast memory manager on or off, `forks` children each."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_DISABLE_FAST_MM"}
    if not fast_mm:
        env["MKL_DISABLE_FAST_MM"] = "1"
    start = time.perf_counter()
    hung = []  # (round, fork) of each hung child
    for r in range(rounds):
        out = subprocess.run([sys.executable, "-c", CHILD, pattern, str(forks), str(timeout)], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        hung += [(r, int(i)) for i in out.stdout.split()]
    return {"pattern": pattern, "fast_mm": "on" if fast_mm else "off", "forks": forks * rounds,
            "hung": len(hung), "first_forks_hung": sum(i == 0 for _, i in hung), "parents": rounds,
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=5, help="children per parent")
    parser.add_argument("--rounds", type=int, default=60, help="fresh parent processes per setting")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a child counts as hung")
    parser.add_argument("--patterns", default=",".join(PATTERNS), help="comma-separated (busy, daemon, idle)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = []
    for pattern in args.patterns.split(","):
        for fast_mm in (True, False):
            r = run(pattern, fast_mm, args.forks, args.timeout, args.rounds)
            results.append(r)
            print(f"{pattern:>6}, MKL fast memory manager {r['fast_mm']:>3}: {r['hung']} of {r['forks']} "
                  f"children hung (> {args.timeout:g} s), {r['first_forks_hung']} of them a parent's first "
                  f"fork ({r['parents']} parents); {r['seconds']} s", flush=True)  # fmt: skip
    print(json.dumps({"load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                      "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
