"""The warm job daemon (ioi.runs.daemon): one per cache root and environment, reused while it
lives, in its own session, forking each job's supervisor; it exits when idle and the next submit
starts another. The fast test runs the real protocol with a daemon that warms nothing."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from jobs_support import tiny_config, worker_env

from ioi.runs import daemon, jobs

LIGHT = """
import os, sys
from pathlib import Path
from ioi.runs import daemon
root = Path(sys.argv[1])
def run(job_id):
    (root / f"{job_id}.tmp").write_text(f"{os.getpid()} {os.getppid()}")
    os.rename(root / f"{job_id}.tmp", root / job_id)
daemon.serve(root, sys.argv[2], run, lambda job_id: root / f"{job_id}.log", stages=())
"""


def _gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while jobs.pid_alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    return not jobs.pid_alive(pid)


def _wait_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.02)
    return path.read_text()


def test_one_daemon_per_root_and_environment_reused_until_idle(tmp_path, monkeypatch):
    monkeypatch.setenv("IOI_JOB_DAEMON_IDLE", "1")
    command = [sys.executable, "-c", LIGHT, str(tmp_path)]
    pids: list[int] = []
    assert daemon.hand_over(tmp_path, "job1", pids.append, command)
    assert daemon.hand_over(tmp_path, "job2", pids.append, command)
    first = pids[0]
    assert pids == [first, first]  # the second request found the first daemon
    assert os.getsid(first) == first  # its own session: it outlives whoever started it
    for job in ("job1", "job2"):
        child, parent = map(int, _wait_file(tmp_path / job).split())
        assert parent == first and child != first  # each job runs in a fork of the daemon
    assert _gone(first)  # idle for a second: it exits
    assert daemon.hand_over(tmp_path, "job3", pids.append, command)
    assert pids[-1] != first and int(_wait_file(tmp_path / "job3").split()[1]) == pids[-1]
    assert _gone(pids[-1])


def test_the_daemon_key_follows_root_environment_and_code(tmp_path, monkeypatch):
    key = daemon.daemon_key(tmp_path)
    assert daemon.daemon_key(tmp_path) == key
    assert daemon.daemon_key(tmp_path / "other") != key
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another test")  # volatile: the same daemon
    assert daemon.daemon_key(tmp_path) == key
    monkeypatch.setenv("IOI_MAX_JOBS", "7")
    assert daemon.daemon_key(tmp_path) != key
    monkeypatch.delenv("IOI_MAX_JOBS")
    monkeypatch.setattr(daemon, "code_stamp", lambda: [("ioi/x.py", 1, 2)])  # an edited source file
    assert daemon.daemon_key(tmp_path) != key


def test_submitting_imports_neither_torch_nor_transformers(tmp_path):
    import subprocess

    code = (
        "import sys; from ioi.runs import jobs; from ioi.runs.experiment import ExperimentConfig\n"
        f"jobs.submit(ExperimentConfig(model='ioi-tiny', epochs=1, train_size=64, eval_size=16, "
        f"analyses=()), {str(tmp_path)!r}, launch=False)\n"
        "print(sorted({'torch', 'transformers', 'transformer_lens', 'pandas'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
def test_jobs_of_one_root_share_a_warm_daemon(tmp_path, monkeypatch):
    worker_env(monkeypatch)
    monkeypatch.setenv("IOI_JOB_DAEMON_IDLE", "3")
    supervisors, owners = [], []
    for seed in (61, 62):
        job_id = jobs.submit(tiny_config(seed=seed, train_size=256), tmp_path)
        deadline = time.time() + 240
        while not (job := jobs.get_job(job_id, tmp_path)).worker_pid and time.time() < deadline:
            time.sleep(0.05)
        assert _parent(job.worker_pid) == job.pid  # the worker is a fork of its supervisor
        supervisors.append(job.pid)
        owners.append(_parent(job.pid))
        assert jobs.wait(job_id, tmp_path, timeout=240).status == "done"
    owner = owners[0]
    assert supervisors[0] != supervisors[1] and owners == [owner, owner]  # one daemon forked both
    assert os.getsid(owner) == owner != os.getsid(0)  # the daemon: its own session
    assert _gone(owner, timeout=60)  # idle: it exits by itself
