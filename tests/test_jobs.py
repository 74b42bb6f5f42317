"""Background jobs: kill-and-resume equals an uninterrupted run, cancel, cached submits, failures,
two jobs at once, and dead workers shown as interrupted (live but silent ones as running)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from jobs_support import TOY, final_weights, tiny_config, worker_env

from ioi.models.train import latest_checkpoint
from ioi.runs import cache, catalog, jobs
from ioi.runs.experiment import experiment_id, run_experiment

# Long enough (2 epochs × 32 steps) that a kill lands in the middle of the second epoch.
CFG = tiny_config(train_size=256)
WAIT = 240


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """CFG run uninterrupted in this process (one torch thread, like the workers)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reference")
    return root, run_experiment(CFG, root)


def _wait_for(predicate, job_id, root, timeout=WAIT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get_job(job_id, root)
        if predicate(job):
            return job
        if job.status in jobs.TERMINAL:
            raise AssertionError(f"job ended as {job.status} ({job.error}) before the condition held")
        time.sleep(0.2)
    raise AssertionError(f"timed out; job is {jobs.get_job(job_id, root)}")


def _assert_same_results(root, reference_root, exp_id):
    for epoch in (0, 1, 2):
        got, want = (cache.read_entry(r, exp_id, epoch, "metrics").summary for r in (root, reference_root))
        assert got == want
        got, want = (cache.load_analysis(r, exp_id, epoch, TOY) for r in (root, reference_root))
        assert got.heads.equals(want.heads) and got.summary == want.summary
    for epoch in (1, 2):
        a, b = final_weights(root, exp_id, epoch), final_weights(reference_root, exp_id, epoch)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkilled_job_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, reference):
    worker_env(monkeypatch)
    job_id = jobs.submit(CFG, tmp_path)
    job = _wait_for(
        lambda j: j.epoch >= 2 and j.phase.startswith("training") and j.worker_pid, job_id, tmp_path
    )
    os.kill(job.worker_pid, signal.SIGKILL)
    job = jobs.wait(job_id, tmp_path, timeout=WAIT)
    assert job.status == "interrupted" and "died" in job.error
    done, _ = latest_checkpoint(tmp_path / "experiments" / job.experiment / "checkpoints")
    assert done == 1  # killed after the first checkpoint, before the last
    jobs.resume(job_id, tmp_path)
    job = jobs.wait(job_id, tmp_path, timeout=WAIT)
    assert job.status == "done", job.error
    assert job.attempts == 2
    _assert_same_results(tmp_path, reference[0], experiment_id(CFG))


@pytest.mark.slow
def test_cancel_keeps_a_consistent_state_and_resume_completes(tmp_path, monkeypatch, reference):
    worker_env(monkeypatch)
    job_id = jobs.submit(CFG, tmp_path)
    _wait_for(lambda j: j.epoch >= 2 and j.phase.startswith("training"), job_id, tmp_path)
    jobs.cancel(job_id, tmp_path)
    job = jobs.wait(job_id, tmp_path, timeout=WAIT)
    assert job.status == "cancelled" and "cancelled at epoch" in job.error
    folder = tmp_path / "experiments" / job.experiment / "checkpoints"
    assert latest_checkpoint(folder)[0] == 1
    assert not list(folder.glob("*.tmp"))  # no half-written checkpoint
    assert cache.read_entry(tmp_path, job.experiment, 2, "metrics") is None
    jobs.resume(job_id, tmp_path)
    assert jobs.wait(job_id, tmp_path, timeout=WAIT).status == "done"
    _assert_same_results(tmp_path, reference[0], job.experiment)


def test_cached_experiment_returns_at_once(reference):
    root, summary = reference
    before = {p: p.stat().st_mtime_ns for p in (root / "experiments").rglob("*") if p.is_file()}
    start = time.perf_counter()
    job_id = jobs.submit(CFG, root)
    elapsed = time.perf_counter() - start
    job = jobs.get_job(job_id, root)
    assert job.status == "done" and job.cached and job.pid is None  # no process was started
    assert job.experiment == summary.id
    assert elapsed < 5, elapsed
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # nothing was trained or rewritten


@pytest.mark.slow
def test_two_concurrent_jobs_and_a_failure(tmp_path, monkeypatch):
    worker_env(monkeypatch)
    monkeypatch.setenv("IOI_MAX_JOBS", "2")
    configs = [tiny_config(seed=1), tiny_config(seed=2)]
    ids = [jobs.submit(c, tmp_path) for c in configs]
    assert jobs.submit(configs[0], tmp_path) == ids[0]  # the same experiment is not queued twice
    # A model that passes submit's cheap check (a config.json) but fails to load in the worker.
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    bad = jobs.submit(tiny_config(model=str(broken)), tmp_path)
    done = [jobs.wait(i, tmp_path, timeout=WAIT) for i in ids]
    assert [j.status for j in done] == ["done", "done"], [j.error for j in done]
    failed = jobs.wait(bad, tmp_path, timeout=WAIT)
    assert failed.status == "failed" and "no-weights has no weights" in failed.error
    for cfg, job in zip(configs, done, strict=True):
        assert job.experiment == experiment_id(cfg)
        for epoch in (0, 1, 2):
            assert cache.read_entry(tmp_path, job.experiment, epoch, TOY) is not None
    series = [cache.load_metrics_series(tmp_path, j.experiment)["logit_diff"].tolist() for j in done]
    assert series[0] != series[1]  # different seeds, different runs
    listed = {e.id: e.status for e in catalog.list_experiments(tmp_path)}
    assert listed[done[0].experiment] == listed[done[1].experiment] == "done"


def test_running_job_with_a_dead_process_is_interrupted(tmp_path):
    job_id = jobs.submit(tiny_config(seed=7), tmp_path, launch=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = time.time()
    jobs._update(tmp_path, job_id, state="running", pid=gone.pid, host=socket.gethostname(), heartbeat=now)
    assert jobs.get_job(job_id, tmp_path).status == "interrupted"
    jobs._update(tmp_path, job_id, pid=os.getpid(), heartbeat=now - 2 * jobs.STALE_AFTER)
    assert jobs.get_job(job_id, tmp_path).status == "running"  # alive pid, stale heartbeat: busy, not gone
    jobs._update(tmp_path, job_id, host="another-machine")
    assert jobs.get_job(job_id, tmp_path).status == "interrupted"  # elsewhere only the heartbeat tells
    jobs._update(tmp_path, job_id, heartbeat=now)
    assert jobs.get_job(job_id, tmp_path).status == "running"
    with pytest.raises(jobs.JobError, match="only a stopped job"):
        jobs.resume(job_id, tmp_path)
    with pytest.raises(jobs.JobError, match="no job"):
        jobs.get_job("nope", tmp_path)


def test_cli_submit_show_list_on_a_cached_experiment(reference, capsys):
    import json

    from ioi.cli import main

    root, summary = reference
    args = ["--model", "random:tiny", "--epochs", "2", "--checkpoint-epochs", "1", "--lr", "1e-3",
            "--batch-size", "8", "--train-size", "256", "--eval-size", "16", "--analysis-size", "8",
            "--analyses", TOY, "--cache", str(root)]  # fmt: skip
    assert main(["jobs", "submit", *args, "--wait"]) == 0
    job_id = capsys.readouterr().out.split()[0]
    assert main(["jobs", "show", job_id, "--json", "--cache", str(root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "done" and shown["cached"] and shown["experiment"] == summary.id
    assert main(["jobs", "list", "--json", "--cache", str(root)]) == 0
    assert job_id in [j["id"] for j in json.loads(capsys.readouterr().out)]
    assert main(["jobs", "show", "0000", "--cache", str(root)]) == 2
    assert "no job" in capsys.readouterr().err
