"""Fork-safety of MKL in job processes: does a child forked from a torch process hang in its first matmul?

    python benchmarks/fork_stress.py                  # 200 forks with MKL's fast memory manager on, 200 off
    python benchmarks/fork_stress.py --forks 5 --rounds 100   # 100 fresh parents: the first forks after start

Job workers are forked from a daemon that has imported torch (ioi.runs.daemon). One worker was once
found spinning forever inside MKL's own allocator (mkl_serv_allocate → mm_account_ptr_by_tid) at its
first sgemm, so `ioi.runs.jobs` sets MKL_DISABLE_FAST_MM=1 before torch is imported. This script
checks that mitigation the way the jobs use torch: a parent that ran matmuls on several threads
(one in flight on another thread while it forks, the case most likely to leave MKL's table in a
locked state) forks children that each run the matmuls a training step runs; a child that does not
exit within --timeout seconds counts as hung and is killed. Each setting runs in a fresh interpreter,
since MKL reads the variable once. The last line printed is one JSON object.
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
forks, timeout = int(sys.argv[1]), float(sys.argv[2])
a = torch.randn(256, 256)
stop = threading.Event()
def busy():  # MKL allocating on another thread while the main thread forks
    while not stop.is_set():
        (a @ a).sum()
worker = threading.Thread(target=busy, daemon=True)
worker.start()
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
worker.join()  # torch torn down under a running matmul aborts the interpreter
print(*hung)
"""


def run(setting: str, forks: int, timeout: float, rounds: int) -> dict:
    """`rounds` fresh parents with MKL's fast memory manager `setting`, each forking `forks` children."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_DISABLE_FAST_MM"}
    if setting == "off":
        env["MKL_DISABLE_FAST_MM"] = "1"
    start = time.perf_counter()
    hung = []  # (round, fork) of each hung child
    for r in range(rounds):
        out = subprocess.run([sys.executable, "-c", CHILD, str(forks), str(timeout)], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        hung += [(r, int(i)) for i in out.stdout.split()]
    return {"fast_mm": setting, "forks": forks * rounds, "hung": len(hung), "hung_at": hung,
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1, help="fresh parent processes, each forking --forks")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a child counts as hung")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = [run(setting, args.forks, args.timeout, args.rounds) for setting in ("on", "off")]
    for r in results:
        print(f"MKL fast memory manager {r['fast_mm']:>3}: {r['hung']} of {r['forks']} forked children hung "
              f"(> {args.timeout:g} s), {r['seconds']} s in all")  # fmt: skip
    print(json.dumps({"load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                      "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
