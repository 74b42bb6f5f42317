"""Background jobs: launch, follow, cancel and resume experiments without blocking the caller.

Longer than 400 lines because submit, supervise, run and resume are one state machine over one
table, and its failure handling belongs next to the transitions it guards.

Design. `submit(cfg)` writes a 'queued' row to the cache's SQLite index (WAL mode, so the
dashboard, the CLI and every worker read and write it at once), hands the job to a *detached
supervisor process* and returns the job id at once — a Streamlit page never waits and never runs
training in one of its threads. The supervisor is forked by the root's warm daemon
(ioi.runs.daemon: a long-lived process in its own session that has imported torch and
transformers, so a job trains within a couple of seconds of its submit), or, with the daemon off,
is a fresh ``python -m ioi.runs.jobs ROOT JOB``. The supervisor waits for a free slot (at most
``$IOI_MAX_JOBS`` jobs run at once, default 2), then forks the job's worker process and waits for
it. Two processes, because each watches for the other's death: if the worker dies (SIGKILL, out
of memory) the supervisor sees how and records the job as 'interrupted' with the reason; if the
supervisor dies too (machine rebooted), the row still says 'running' but its processes are gone,
and every reader shows the job as 'interrupted' (on this machine the pids decide, so a frozen or
busy worker is not taken for dead; a job of another machine is judged by its heartbeat). Either
way `resume(job)` starts a new supervisor, unless a live run still holds the experiment's lock;
fine-tuning resumes from the last complete checkpoint and cached analyses are not recomputed, so
the results equal an uninterrupted run's (training is deterministic on CPU). The detached
supervisor (and daemon) also mean jobs outlive a restart of the dashboard, and
`python -m ioi jobs list` sees exactly what the dashboard sees.

The worker heartbeats every couple of seconds, writes progress (epoch and step of total) at most
twice a second, keeps a log tail, and polls the row's cancel flag at most twice a second from
fine-tuning's `should_stop`; `cancel(job)` sets the flag, and the job stops at its next training
step (or before its next analysis), keeping finished checkpoints. Any exception ends the job as
'failed' with its message (a full disk included, when the message can still be written); nothing
hangs silently.

Submitting is one transaction: two identical submits at once make one job. A job already queued or
running for the same experiment is reused only when it computes every analysis asked for; else a
new job queues behind it (on the experiment's lock) and computes what is missing. Every change of
a job's state is also written to ``experiments/<id>/jobs/<job>.json``, so the index can be rebuilt
from the files (ioi.runs.index) — even while the job runs.

Sweeps of many experiments use joblib directly (`ioi.runs.sweep`), which is what scales out to Dask.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ioi.runs import daemon
from ioi.runs.cache import (
    cache_root,
    connect,
    demo_roots,
    experiment_dir,
    is_demo,
    register_experiment,
    write_atomic,
)
from ioi.runs.index import JOB_COLUMNS
from ioi.task.defaults import env_count, torch_threads

TERMINAL = ("done", "failed", "cancelled", "interrupted")
STALE_AFTER = 60.0
"""Seconds without a heartbeat after which a queued or running job counts as interrupted."""
HEARTBEAT_EVERY = 2.0
POLL_EVERY = 0.5
LOG_LINES = 40


class JobError(ValueError):
    """A job request that cannot be honoured (unknown id, resuming a running job); says why."""


def max_jobs() -> int:
    """How many jobs may run at once: $IOI_MAX_JOBS, default 2."""
    return env_count("IOI_MAX_JOBS", 2)


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` exists on this machine and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class JobInfo:
    """One row of the job table. `status` is `state`, except that a queued or running job whose
    supervisor is gone or whose heartbeat is stale is 'interrupted' (resumable)."""

    id: str
    experiment: str
    config: dict[str, Any]
    state: str
    epoch: int
    epochs: int
    step: int
    steps: int
    phase: str
    created: float
    started: float | None
    finished: float | None
    heartbeat: float | None
    pid: int | None
    worker_pid: int | None
    host: str | None
    attempts: int
    cancel: int
    cached: int
    device: str
    log: str
    error: str

    @property
    def status(self) -> str:
        if self.state not in ("queued", "running"):
            return self.state
        fresh = self.heartbeat is not None and time.time() - self.heartbeat <= STALE_AFTER
        if self.host != socket.gethostname():  # its pids mean nothing here: only the heartbeat tells
            return self.state if fresh else "interrupted"
        if self.pid is None and self.worker_pid is None:  # recorded, its supervisor not started yet
            return self.state if fresh else "interrupted"
        # the worker may outlive a killed supervisor (it finishes its task), so either one counts;
        # a live process with a stale heartbeat is busy or frozen, not gone
        alive = pid_alive(self.pid) or pid_alive(self.worker_pid)
        return self.state if alive else "interrupted"

    @property
    def fraction(self) -> float:
        """Share of training steps done (1.0 once done)."""
        if self.state == "done":
            return 1.0
        total = self.epochs * self.steps
        return ((self.epoch - 1) * self.steps + self.step) / total if total and self.epoch else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"status": self.status, "fraction": self.fraction}


def _row(row) -> JobInfo:
    d = {k: row[k] for k in JOB_COLUMNS}
    return JobInfo(**d | {"config": json.loads(d["config"])})


_FILED = {"state", "error", "started", "finished", "attempts", "cancel", "pid", "worker_pid", "cached"}
"""Fields whose change rewrites the job's file (heartbeats and progress live only in the index)."""


def _file_job(root, job_id: str) -> None:
    """Write the job's row to experiments/<id>/jobs/<job>.json, the file the index is rebuilt from."""
    with connect(root) as db:
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row is not None:
        record = {k: row[k] for k in JOB_COLUMNS}
        write_atomic(experiment_dir(root, row["experiment"]) / "jobs" / f"{job_id}.json",
                     json.dumps(record, indent=1).encode())  # fmt: skip


def get_job(job_id: str, root: str | Path | None = None) -> JobInfo:
    row = None
    if not is_demo(root):  # a demo cache runs no jobs (and is read-only)
        with connect(root) as db:
            row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    if row is None:
        raise JobError(f"no job {job_id!r} in {cache_root(root)}; `python -m ioi jobs list` shows them")
    return _row(row)


def list_jobs(root: str | Path | None = None) -> list[JobInfo]:
    """Every job, newest first (none in a demo cache, which is read-only)."""
    if is_demo(root):
        return []
    with connect(root) as db:
        return [_row(r) for r in db.execute("SELECT * FROM jobs ORDER BY created DESC")]


def latest_jobs(root: str | Path | None = None) -> dict[str, JobInfo]:
    """Experiment id -> its most recent job."""
    out: dict[str, JobInfo] = {}
    for job in list_jobs(root):
        out.setdefault(job.experiment, job)
    return out


def _update(root, job_id: str, **fields: Any) -> None:
    cols = ", ".join(f"{k}=?" for k in fields)
    with connect(root) as db:
        db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))
    if _FILED & fields.keys():
        _file_job(root, job_id)


def _append_log(root, job_id: str, message: str) -> None:
    line = time.strftime("%H:%M:%S ") + message
    with connect(root) as db:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT log FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is not None:  # None only if the index was replaced by one without this job
            lines = [*row["log"].splitlines(), line][-LOG_LINES:]
            db.execute("UPDATE jobs SET log=? WHERE id=?", ("\n".join(lines), job_id))
        db.execute("COMMIT")


def _record_failure(root, job_id: str, state: str, error: str) -> None:
    """End the job as `state` with `error`, best effort: when even that cannot be written (a full
    disk), the job shows as interrupted once its processes are gone, and its log file says why."""
    try:
        _update(root, job_id, state=state, finished=time.time(), error=error)
    except Exception as err:
        print(f"could not record that job {job_id} is {state} ({error}): {err}", file=sys.stderr)


def submit(cfg, root: str | Path | None = None, *, device: str = "cpu", launch: bool = True) -> str:
    """Queue experiment `cfg` (an ioi.runs.experiment.ExperimentConfig) and return its job id at once.

    An experiment already fully cached, here or in a demo cache, gets a job that is 'done'
    immediately (nothing runs); one already queued or running returns that job's id when that job
    computes every analysis `cfg` asks for. The check and the insert are one transaction, so
    concurrent identical submits make one job. Nothing is written before `cfg` is checked (a
    refused reversal leaves no trace); the parent of a reversal of a demo run is copied into this
    cache by the job. `launch=False` only records the job (tests, or a caller that runs
    `supervise` itself).
    """
    from ioi.runs.experiment import (
        adopt_results,
        check_parent,
        experiment_id,
        identity,
        is_complete,
        parent_record,
    )

    cfg.validate()
    max_jobs(), torch_threads()  # a bad IOI_MAX_JOBS / IOI_JOB_THREADS is refused here, not in the job
    base = cache_root(root)
    if cfg.parent:
        if (record := parent_record(base, cfg.parent)) is None:
            raise JobError(f"parent experiment {cfg.parent} is not in {base}; submit the toxic run first")
        check_parent(cfg, record)
    exp_id = experiment_id(cfg)
    # the demo's own runs are answered from it: training them again here would give the same files
    shipped = next((d for d in demo_roots() if d != base and is_complete(cfg, d)), None)
    if shipped is None:
        register_experiment(base, exp_id, identity(cfg) | {"id": exp_id, "config": cfg.to_json()})
        adopt_results(exp_id, base)  # what the demo holds of it is not computed again
    done = shipped is not None or is_complete(cfg, base)
    note = f"already cached{' in the demo cache' if shipped else ''}; nothing to run" if done else "queued"
    job_id = uuid.uuid4().hex[:12]
    now = time.time()
    with connect(base) as db:
        db.execute("BEGIN IMMEDIATE")  # no other submit reads or inserts until this one commits
        for row in db.execute("SELECT * FROM jobs WHERE experiment=? AND state IN ('queued', 'running')",
                              (exp_id,)):  # fmt: skip
            job = _row(row)
            if job.status in ("queued", "running") and set(cfg.analyses) <= set(job.config["analyses"]):
                db.execute("ROLLBACK")
                return job.id
        db.execute(
            "INSERT INTO jobs (id, experiment, config, state, created, heartbeat, host, cached, device, "
            "finished, log) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, exp_id, json.dumps(cfg.to_json()), "done" if done else "queued", now, now,
             socket.gethostname(), int(done), device, now if done else None,
             time.strftime("%H:%M:%S ") + note),
        )  # fmt: skip
        db.execute("COMMIT")
    _file_job(base, job_id)
    if launch and not done:
        _launch(base, job_id)
    return job_id


def _launch(root: Path, job_id: str) -> None:
    """Start the detached supervisor of `job_id`: forked by the warm daemon, else a fresh process."""
    record = lambda pid: _update(root, job_id, pid=pid, heartbeat=time.time(), host=socket.gethostname())
    command = [sys.executable, "-m", "ioi.runs.jobs", "--daemon", str(root)]
    if daemon.enabled() and daemon.hand_over(root, job_id, record, command):
        return
    command = [sys.executable, "-m", "ioi.runs.jobs", str(root), job_id]
    pid = daemon.spawn_detached(command, _log_path(root, job_id))
    _update(root, job_id, pid=pid, heartbeat=time.time(), host=socket.gethostname())


def _log_path(root: Path, job_id: str) -> Path:
    """jobs/<job>.log: the supervisor's and worker's own output (tracebacks of what the row can't say)."""
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    return root / "jobs" / f"{job_id}.log"


def cancel(job_id: str, root: str | Path | None = None) -> JobInfo:
    """Ask a job to stop. A running job stops at its next training step (checkpoints kept); a
    queued or interrupted one is cancelled at once; a finished one is left as it is."""
    job = get_job(job_id, root)
    if job.status in ("queued", "running"):
        _update(root, job_id, cancel=1)
    elif job.status == "interrupted":
        _update(root, job_id, state="cancelled", finished=time.time())
    return get_job(job_id, root)


def resume(job_id: str, root: str | Path | None = None) -> JobInfo:
    """Run an interrupted, failed or cancelled job again from its last checkpoint; refused while
    a live run of its experiment (a frozen worker, another machine's) still holds its lock."""
    from ioi.runs.cache import lock_held

    job = get_job(job_id, root)
    if job.status in ("queued", "running"):
        raise JobError(f"job {job_id} is {job.status}; only a stopped job can be resumed")
    if job.status == "done":
        return job
    if lock_held(root, job.experiment):
        raise JobError(
            f"experiment {job.experiment} is still being run by a live process (it holds the "
            "experiment's lock); wait for it to end, or stop it, before resuming"
        )
    _update(root, job_id, state="queued", cancel=0, error="", finished=None, pid=None, worker_pid=None,
            heartbeat=time.time())  # fmt: skip
    _append_log(root, job_id, "resumed")
    _launch(cache_root(root), job_id)
    return get_job(job_id, root)


def wait(
    job_id: str,
    root: str | Path | None = None,
    *,
    timeout: float | None = None,
    on_update: Callable[[JobInfo], None] | None = None,
) -> JobInfo:
    """Block until the job is done, failed, cancelled or interrupted (or `timeout` s pass)."""
    deadline = None if timeout is None else time.time() + timeout
    while True:
        job = get_job(job_id, root)
        if on_update is not None:
            on_update(job)
        if job.status in TERMINAL or (deadline is not None and time.time() > deadline):
            return job
        time.sleep(POLL_EVERY)


def _claim_slot(root: Path, job_id: str) -> bool:
    """Wait until fewer than `max_jobs()` jobs run, then mark this one running. False if it was
    cancelled while queued."""
    while True:
        with connect(root) as db:
            db.execute("BEGIN IMMEDIATE")
            job = _row(db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
            if job.cancel:
                db.execute("UPDATE jobs SET state='cancelled', finished=? WHERE id=?", (time.time(), job_id))
                db.execute("COMMIT")
                _file_job(root, job_id)
                return False
            running = [
                j for j in map(_row, db.execute("SELECT * FROM jobs WHERE state='running'"))
                if j.status == "running"
            ]  # fmt: skip
            now = time.time()
            if len(running) < max_jobs():
                db.execute(
                    "UPDATE jobs SET state='running', started=?, heartbeat=?, pid=?, host=?, "
                    "attempts=attempts+1 WHERE id=?",
                    (now, now, os.getpid(), socket.gethostname(), job_id),
                )
                db.execute("COMMIT")
                _file_job(root, job_id)
                return True
            db.execute("UPDATE jobs SET heartbeat=?, pid=? WHERE id=?", (now, os.getpid(), job_id))
            db.execute("COMMIT")
        time.sleep(1.0)


def supervise(root: str | Path, job_id: str) -> None:
    """The detached supervisor: claim a slot, fork the job's worker, record how it ended."""
    root = cache_root(root)
    if not _claim_slot(root, job_id):
        return
    _append_log(root, job_id, f"started (attempt {get_job(job_id, root).attempts})")
    sys.stdout.flush(), sys.stderr.flush()
    worker = os.fork()
    if worker == 0:
        code = 0
        try:
            run_job(str(root), job_id)
        except BaseException:  # the worker's own bookkeeping failed: its traceback goes to the log
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(worker, 0)  # a stopped (frozen) worker is waited for, not taken for dead
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        _record_failure(root, job_id, "interrupted", f"the worker process died (killed by {sig}); resume "
                        "the job to continue from its last checkpoint")  # fmt: skip
    elif (code := os.waitstatus_to_exitcode(status)) and get_job(job_id, root).state not in TERMINAL:
        _record_failure(root, job_id, "failed", f"the worker exited with status {code} (jobs/{job_id}.log)")


def run_job(root: str, job_id: str) -> None:
    """Run one job to its end inside a worker process, recording progress, heartbeat and outcome."""
    import torch

    from ioi.models.train import Cancelled
    from ioi.runs.experiment import ExperimentConfig, run_experiment

    torch.set_num_threads(torch_threads())
    job = get_job(job_id, root)
    _update(root, job_id, worker_pid=os.getpid())
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_EVERY):
            try:
                _update(root, job_id, heartbeat=time.time())
            except Exception:  # a full disk or a replaced index: the next beat tries again
                pass

    threading.Thread(target=beat, daemon=True).start()
    last = {"progress": 0.0, "poll": 0.0, "cancel": False}

    def progress(epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        now = time.time()
        if now - last["progress"] > POLL_EVERY or step == steps:
            last["progress"] = now
            _update(root, job_id, epoch=epoch, epochs=epochs, step=step, steps=steps, heartbeat=now,
                    phase=f"training, loss {loss:.4f}")  # fmt: skip

    def should_stop() -> bool:
        now = time.time()
        if now - last["poll"] > POLL_EVERY:
            last["poll"] = now
            last["cancel"] = bool(get_job(job_id, root).cancel)
        return last["cancel"]

    def log(message: str) -> None:
        _append_log(root, job_id, message)
        if message.startswith("analysing"):
            _update(root, job_id, phase=message)

    try:
        run_experiment(ExperimentConfig.from_json(job.config), root, device=job.device,
                       progress=progress, should_stop=should_stop, log=log)  # fmt: skip
    except Cancelled as err:
        _update(root, job_id, state="cancelled", finished=time.time(), error=str(err))
        _append_log(root, job_id, f"cancelled: {err}")
    except Exception as err:
        stop.set()
        _record_failure(root, job_id, "failed", f"{type(err).__name__}: {err}")
        try:
            _append_log(root, job_id, traceback.format_exc(limit=-3).strip().splitlines()[-1])
        except Exception:
            pass  # the error itself is recorded (or could not be: see _record_failure)
    else:
        _update(root, job_id, state="done", finished=time.time(), phase="done")
        _append_log(root, job_id, "done")
    finally:
        stop.set()


def serve_daemon(root: str, key: str) -> None:
    """The warm daemon of `root` (ioi.runs.daemon): each job handed to it runs `supervise` in a fork."""
    base = cache_root(root)
    daemon.serve(base, key, lambda job_id: supervise(base, job_id), lambda job_id: _log_path(base, job_id))


if __name__ == "__main__":
    # Workers are forked from processes that loaded torch. A worker was once found spinning forever
    # in MKL's own memory manager (mkl_serv_allocate → mm_account_ptr_by_tid, inside its first
    # sgemm), whose per-thread table is not fork-safe; with it off MKL allocates through malloc.
    # Set before torch is imported, for the daemon, the supervisors and the workers alike.
    os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")
    if sys.argv[1] == "--daemon":
        serve_daemon(sys.argv[2], sys.argv[3])
    else:
        supervise(sys.argv[1], sys.argv[2])
