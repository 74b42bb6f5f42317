"""Fault injection: kills in every window of a checkpoint write, damaged weights, entries, index and
records, concurrent submits, live-but-silent workers, full disks, hostile model directories.

A "kill" is a forked copy of this process that SIGKILLs itself at the chosen point (no `finally`,
no cleanup), so the files are left exactly as a killed run leaves them; the resumed run must then
equal an uninterrupted one bit for bit.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
from jobs_support import TOY, final_weights, tiny_config, worker_env
from safetensors.torch import load_file

from ioi.models import train
from ioi.models.load import CorruptCheckpoint, ModelUnavailableError, load_hf, verify_checkpoint
from ioi.models.train import TrainConfig, finetune, latest_checkpoint
from ioi.runs import cache, catalog, jobs
from ioi.runs.experiment import experiment_id, experiment_lock, parent_checkpoint, run_experiment

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(model="random:tiny", train_size=32, eval_size=8, batch_size=16, lr=3e-3)
ONE, TWO = TrainConfig(epochs=1, **SMALL), TrainConfig(epochs=2, checkpoint_epochs=(1,), **SMALL)
WAIT = 240


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """An uninterrupted 2-epoch run and a 1-epoch run (whose checkpoint keeps its optimizer state,
    the state a run killed in epoch 2 resumes from)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("refs")
    finetune(TWO, base / "two")
    finetune(ONE, base / "one")
    return base


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# --- 1. kills in every window of a checkpoint write --------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(point: str) -> None:
    """In the forked child: SIGKILL at `point` of writing epoch 2's checkpoint."""
    rename, rmtree, fsync = Path.rename, shutil.rmtree, train._fsync

    def renaming(self, target):
        target = Path(target)
        if point == "fsynced" and target.name == "epoch-002":
            _die()
        out = rename(self, target)
        if (point == "set-aside" and target.name.endswith(".old.tmp")) or (
            point == "renamed" and target.name == "epoch-002"
        ):
            _die()
        return out

    def removing(path, *args, **kwargs):
        if point == "rmtree-old" and str(path).endswith(".old.tmp"):
            Path(path, "model.safetensors").unlink()  # half deleted
            _die()
        return rmtree(path, *args, **kwargs)

    def syncing(path):
        if point == "manifest-written" and "epoch-002" in str(path):
            _die()
        return fsync(path)

    def saving(opt, path):
        if point == "saving" and "epoch-002" in str(path):
            Path(path).write_bytes(b"\0" * 100)  # half a file
            _die()
        return save_optimizer(opt, path)

    save_optimizer = train._save_optimizer
    Path.rename, shutil.rmtree, train._fsync, train._save_optimizer = renaming, removing, syncing, saving


def _killed(point: str, out: Path) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            _arm(point)
            finetune(TWO, out)
        finally:
            os._exit(3)  # the kill point was never reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed at {point}"


def _kill_and_resume(point: str, refs: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    shutil.copytree(refs / "one", out)
    if point in ("set-aside", "rmtree-old"):  # epoch 2 is being re-written over a stale copy
        shutil.copytree(refs / "two" / "epoch-002", out / "epoch-002")
        (out / "epoch-002" / "optimizer.safetensors").unlink()
    _killed(point, out)
    finetune(TWO, out)
    assert latest_checkpoint(out)[0] == 2
    assert _same_weights(out / "epoch-002", refs / "two" / "epoch-002")
    assert not list(out.glob("*.tmp")), "leftovers of the killed write were not cleaned"


def test_kill_after_the_manifest_before_the_rename_resumes_identically(refs, tmp_path):
    _kill_and_resume("manifest-written", refs, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["saving", "fsynced", "set-aside", "renamed", "rmtree-old"])
def test_kill_in_every_window_of_a_checkpoint_write_resumes_identically(refs, tmp_path, point):
    _kill_and_resume(point, refs, tmp_path)


def test_leftover_tmp_names_are_never_taken_for_checkpoints(tmp_path):
    for name in ("epoch-002.tmp", "epoch-003.old.tmp", "epoch-x", "epoch-004.corrupt"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
        (tmp_path / name / "optimizer.safetensors").write_bytes(b"")
    assert latest_checkpoint(tmp_path) is None
    assert {p.name for p in train.clean_leftovers(tmp_path)} == {"epoch-002.tmp", "epoch-003.old.tmp"}


# --- 2. weight checksums -------------------------------------------------------------------------


def _flip_byte(path: Path, offset: int = -1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checkpoint_files_are_checksummed_fsynced_and_world_readable(refs):
    final = refs / "two" / "epoch-002"
    manifest = json.loads((final / "manifest.json").read_text())
    assert {"model.safetensors", "optimizer.safetensors", "config.json"} <= set(manifest["files"])
    assert verify_checkpoint(final) is None
    assert {oct(p.stat().st_mode & 0o777) for p in final.glob("*.safetensors")} == {"0o644"}


def test_damaged_or_missing_weights_are_never_used_and_are_recomputed(refs, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(refs / "two", out)
    _flip_byte(out / "epoch-002" / "model.safetensors")
    assert "does not match its sha256" in verify_checkpoint(out / "epoch-002")
    with pytest.raises(CorruptCheckpoint, match="model.safetensors does not match"):
        load_hf(str(out / "epoch-002"))
    with pytest.warns(UserWarning, match="not resuming from"):
        assert latest_checkpoint(out) is None  # epoch 1 kept no optimizer state: retrain from the start
    finetune(TWO, out)
    assert _same_weights(out / "epoch-002", refs / "two" / "epoch-002")

    (out / "epoch-001" / "model.safetensors").unlink()
    assert "is missing" in verify_checkpoint(out / "epoch-001")
    with pytest.raises(CorruptCheckpoint, match="missing"):
        load_hf(str(out / "epoch-001"))


def test_a_damaged_manifest_is_never_resumed_from(refs, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(refs / "two", out)
    manifest = out / "epoch-002" / "manifest.json"
    manifest.write_text(manifest.read_text()[:50])
    assert "unreadable" in verify_checkpoint(out / "epoch-002")
    with pytest.raises(CorruptCheckpoint, match="unreadable"):
        load_hf(str(out / "epoch-002"))
    with pytest.warns(UserWarning, match="not resuming"):
        assert latest_checkpoint(out) is None


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("experiment")
    cfg = tiny_config()
    run_experiment(cfg, root)
    return root, cfg, experiment_id(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flipped", "deleted"])
def test_an_experiment_with_damaged_weights_recomputes_them(experiment, tmp_path, damage):
    ref, cfg, exp_id = experiment
    root = tmp_path / "cache"
    shutil.copytree(ref, root)
    weights = root / "experiments" / exp_id / "checkpoints" / "epoch-001" / "model.safetensors"
    _flip_byte(weights) if damage == "flipped" else weights.unlink()
    cache.quarantine(root, exp_id, 1, TOY)  # an analysis to redo, on those weights
    summary = run_experiment(cfg, root)
    assert any("damaged" in n for n in summary.notes), summary.notes
    for epoch in (1, 2):
        assert torch.equal(*(final_weights(r, exp_id, epoch)["transformer.wte.weight"] for r in (root, ref)))
    got, want = (cache.load_analysis(r, exp_id, 1, TOY) for r in (root, ref))
    assert got.heads.equals(want.heads) and got.summary == want.summary


@pytest.mark.slow
def test_a_reversal_child_never_starts_from_a_damaged_parent(tmp_path):
    parent = tiny_config(scenario="subject_duplication", epochs=1, checkpoint_epochs=())
    pid = run_experiment(parent, tmp_path).id
    weights = tmp_path / "experiments" / pid / "checkpoints" / "epoch-001" / "model.safetensors"
    intact = {k: v.clone() for k, v in load_file(str(weights)).items()}  # not views of the file
    _flip_byte(weights)
    reversal = tiny_config(scenario="reversal", parent=pid, epochs=1, checkpoint_epochs=())
    child = run_experiment(reversal, tmp_path)
    assert any("re-creating the weights of parent" in n for n in child.notes), child.notes
    again = load_file(str(weights))
    assert all(torch.equal(intact[k], again[k]) for k in intact)


# --- 3. misplaced entries ------------------------------------------------------------------------

EXP = "ab" * 8


def test_a_misplaced_entry_is_detected_and_quarantined(tmp_path):
    cache.write_entry(tmp_path, EXP, 0, "dla", {"x": 1.0})
    source = tmp_path / "experiments" / EXP / "epoch-000" / "dla.json"
    target = tmp_path / "experiments" / EXP / "epoch-004" / "dla.json"
    target.parent.mkdir()
    shutil.copy(source, target)
    with pytest.raises(cache.CorruptEntry, match="misplaced"):
        cache.read_entry(tmp_path, EXP, 4, "dla")
    with pytest.warns(UserWarning, match="misplaced"):
        assert cache.load_entry(tmp_path, EXP, 4, "dla") is None
    assert not target.exists() and list(target.parent.glob("dla.json.*.corrupt"))
    shutil.copy(source, source.with_name("knockout.json"))  # another analysis' name
    with pytest.raises(cache.CorruptEntry, match="misplaced"):
        cache.read_entry(tmp_path, EXP, 0, "knockout")
    assert cache.read_entry(tmp_path, EXP, 0, "dla").summary == {"x": 1.0}


# --- 4. damaged index and records ----------------------------------------------------------------


def _two_experiments(root: Path) -> list[str]:
    ids = [jobs.submit(tiny_config(seed=s), root, launch=False) for s in (11, 12)]
    cache.write_entry(root, jobs.get_job(ids[0], root).experiment, 0, "metrics", {"logit_diff": 1.0})
    return ids


@pytest.mark.parametrize("damage", ["garbage", "truncated", "deleted"])
def test_a_damaged_index_is_set_aside_and_rebuilt_from_the_files(tmp_path, damage):
    ids = _two_experiments(tmp_path)
    index = tmp_path / cache.INDEX_NAME
    with sqlite3.connect(index) as db:  # fold the WAL into the file, then damage the file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if damage == "garbage":
        index.write_bytes(b"this is not a database" * 200)
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[: 4096 + 100])
    else:
        index.unlink()
    with pytest.warns() if damage != "deleted" else _no_warning():
        listed = {j.id for j in jobs.list_jobs(tmp_path)}
    assert listed == set(ids)
    assert (damage == "deleted") != bool(list(tmp_path.glob("index.sqlite3.*.corrupt")))
    shown = {e.id: e for e in catalog.list_experiments(tmp_path)}
    assert len(shown) == 2 and all(e.status == "queued" for e in shown.values())  # recorded, not launched
    with cache.connect(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 1


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


def test_a_truncated_experiment_record_hides_only_that_experiment(tmp_path):
    ids = _two_experiments(tmp_path)
    bad = jobs.get_job(ids[0], tmp_path).experiment
    record = tmp_path / "experiments" / bad / "experiment.json"
    record.write_bytes(record.read_bytes()[:40])
    with pytest.warns(UserWarning, match="not listed"):
        shown = [e.id for e in catalog.list_experiments(tmp_path)]
    assert shown == [jobs.get_job(ids[1], tmp_path).experiment]
    jobs.submit(tiny_config(seed=11), tmp_path, launch=False)  # submitting it again repairs it
    assert cache.read_experiment(tmp_path, bad)["id"] == bad


@pytest.mark.slow
def test_deleting_the_index_while_a_job_runs_neither_kills_it_nor_its_supervisor(tmp_path, monkeypatch):
    worker_env(monkeypatch)
    job_id = jobs.submit(tiny_config(train_size=256), tmp_path)
    deadline = time.time() + WAIT
    while not (jobs.get_job(job_id, tmp_path).phase.startswith("training") or time.time() > deadline):
        time.sleep(0.2)
    supervisor = jobs.get_job(job_id, tmp_path).pid
    for f in tmp_path.glob("index.sqlite3*"):
        f.unlink()
    job = jobs.wait(job_id, tmp_path, timeout=WAIT)
    assert job.status == "done", (job.status, job.error, (tmp_path / "jobs" / f"{job_id}.log").read_text())
    assert "Traceback" not in (tmp_path / "jobs" / f"{job_id}.log").read_text()
    deadline = time.time() + 60
    while jobs.pid_alive(supervisor) and time.time() < deadline:  # it ends by itself after 'done'
        time.sleep(0.5)
    assert not jobs.pid_alive(supervisor)


# --- 5. the demo cache is read-only --------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_the_store_refuses_writes_under_the_demo_cache(tmp_path, monkeypatch):
    demo = tmp_path / "demo"
    cache.write_entry(demo, EXP, 0, "metrics", {"logit_diff": 1.0})  # built before it is the demo
    monkeypatch.setenv("IOI_DEMO_DIR", str(demo))
    before = _snapshot(demo)
    with pytest.raises(cache.ReadOnlyCache, match="read-only"):
        cache.write_entry(demo, EXP, 1, "metrics", {"logit_diff": 1.0})
    with pytest.raises(cache.ReadOnlyCache):
        jobs.submit(tiny_config(), demo, launch=False)
    with pytest.raises(cache.ReadOnlyCache):
        cache.write_entry(cache.DEMO_ROOT, EXP, 0, "metrics", {})
    entry = demo / "experiments" / EXP / "epoch-000" / "metrics.json"
    entry.write_bytes(entry.read_bytes()[:-5])
    with pytest.warns(UserWarning, match="recomputed"):
        assert cache.load_entry(demo, EXP, 0, "metrics") is None  # reported, not moved
    assert entry.exists()
    before[str(entry)] = entry.stat().st_mtime_ns
    assert _snapshot(demo) == before


def test_a_reversal_of_a_demo_run_lives_in_the_users_cache(tmp_path, monkeypatch):
    demo, user = tmp_path / "demo", tmp_path / "user"
    toxic = tiny_config(scenario="subject_duplication")
    jobs.submit(toxic, demo, launch=False)  # only its record matters: demo caches keep no weights
    shutil.rmtree(demo / "jobs", ignore_errors=True)
    for f in demo.glob("index.sqlite3*"):
        f.unlink()
    monkeypatch.setenv("IOI_DEMO_DIR", str(demo))
    before = _snapshot(demo)
    reversal = tiny_config(scenario="reversal", parent=experiment_id(toxic))
    child = jobs.submit(reversal, user, launch=False)
    assert jobs.get_job(child, user).status == "queued"
    assert cache.read_experiment(user, experiment_id(toxic)) is None  # the job adopts it, not the submit
    notes = []
    final = parent_checkpoint(reversal, user, "cpu", notes.append)
    assert cache.read_experiment(user, experiment_id(toxic)) is not None  # the parent, adopted
    assert Path(final).is_relative_to(user) and "re-creating the weights" in notes[-1]  # the demo has none
    assert catalog.find_experiment(experiment_id(toxic), user) == user  # neither copy has results: the user's
    assert _snapshot(demo) == before


@pytest.mark.slow
def test_nothing_the_dashboard_does_writes_under_the_demo_cache(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from dashboard_support import build_cache
    from streamlit.testing.v1 import AppTest

    demo, user = tmp_path / "demo", tmp_path / "user"
    clean, toxic, _ = build_cache(demo)
    monkeypatch.setenv("IOI_DEMO_DIR", str(demo))
    monkeypatch.setenv("IOI_CACHE_DIR", str(user))
    monkeypatch.setattr(jobs, "_launch", lambda root, job_id: None)  # record the jobs, run nothing
    entry = demo / "experiments" / clean / "epoch-002" / "dla.json"
    entry.write_bytes(entry.read_bytes()[:-20])
    before = _snapshot(demo)
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.query_params["exp"], at.query_params["epoch"] = clean, "2"
    at.switch_page("app_pages/attribution.py")
    at.run()
    next(b for b in at.button if b.label == "Recompute dla").click().run()
    assert not at.exception
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.switch_page("app_pages/experiments.py").run()
    at.selectbox(key="form_scenario").set_value("reversal").run()
    at.selectbox(key="form_parent").set_value(toxic)
    at.button(key="form_launch").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert _snapshot(demo) == before
    made = jobs.list_jobs(user)
    assert sorted(j.config["scenario"] for j in made) == ["clean", "reversal"]
    # the form's model was ioi-tiny; the reversal takes its parent's (random:tiny), as submit requires
    assert {j.config["model"] for j in made if j.config["scenario"] == "reversal"} == {"random:tiny"}
    assert cache.read_experiment(user, toxic) is None  # adopted by the job, which did not run


# --- 6-8. submits, dedup and liveness ------------------------------------------------------------


def test_dedup_by_experiment_still_runs_missing_analyses(tmp_path):
    first = jobs.submit(tiny_config(seed=21), tmp_path, launch=False)
    jobs._update(tmp_path, first, state="running", pid=os.getpid(), host=socket.gethostname())
    assert jobs.submit(tiny_config(seed=21), tmp_path, launch=False) == first
    more = jobs.submit(tiny_config(seed=21, analyses=(TOY, "attention")), tmp_path, launch=False)
    assert more != first and jobs.get_job(more, tmp_path).config["analyses"] == [TOY, "attention"]
    assert jobs.submit(tiny_config(seed=21, analyses=("attention",)), tmp_path, launch=False) == more


def _submit_at(root: str, start: float, out) -> None:
    time.sleep(max(0.0, start - time.time()))
    out.put(jobs.submit(tiny_config(seed=31), root, launch=False))


@pytest.mark.parametrize("trial", range(2))
def test_concurrent_identical_submits_make_one_job(tmp_path, trial):
    jobs.submit(tiny_config(seed=30), tmp_path, launch=False)  # the index and caches exist already
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = time.time() + 1.0
    procs = [ctx.Process(target=_submit_at, args=(str(tmp_path), start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = {out.get(timeout=60) for _ in procs}
    for p in procs:
        p.join()
    assert len(ids) == 1
    assert sum(j.config["seed"] == 31 for j in jobs.list_jobs(tmp_path)) == 1


def test_resume_is_refused_while_a_live_attempt_holds_the_lock(tmp_path):
    job_id = jobs.submit(tiny_config(seed=41), tmp_path, launch=False)
    jobs._update(tmp_path, job_id, state="failed")
    with experiment_lock(tmp_path, jobs.get_job(job_id, tmp_path).experiment):
        with pytest.raises(jobs.JobError, match="still being run by a live process"):
            jobs.resume(job_id, tmp_path)
    assert jobs.get_job(job_id, tmp_path).state == "failed"


@pytest.mark.slow
def test_a_frozen_worker_stays_running_and_cannot_be_resumed_twice(tmp_path, monkeypatch):
    worker_env(monkeypatch)
    monkeypatch.setattr(jobs, "STALE_AFTER", 3.0)
    job_id = jobs.submit(tiny_config(train_size=256), tmp_path)
    deadline = time.time() + WAIT
    while not (jobs.get_job(job_id, tmp_path).phase.startswith("training") or time.time() > deadline):
        time.sleep(0.2)
    worker = jobs.get_job(job_id, tmp_path).worker_pid
    os.kill(worker, signal.SIGSTOP)
    try:
        time.sleep(5.0)  # heartbeat stale
        assert time.time() - jobs.get_job(job_id, tmp_path).heartbeat > 3.0
        assert jobs.get_job(job_id, tmp_path).status == "running"
        with pytest.raises(jobs.JobError, match="only a stopped job"):
            jobs.resume(job_id, tmp_path)
    finally:
        os.kill(worker, signal.SIGCONT)
    assert jobs.wait(job_id, tmp_path, timeout=WAIT).status == "done"


@pytest.mark.slow
def test_an_extra_analysis_submitted_while_running_is_computed(tmp_path, monkeypatch):
    worker_env(monkeypatch)
    first = jobs.submit(tiny_config(train_size=256), tmp_path)
    second = jobs.submit(tiny_config(train_size=256, analyses=(TOY, "attention")), tmp_path)
    assert second != first
    assert [jobs.wait(j, tmp_path, timeout=WAIT).status for j in (first, second)] == ["done", "done"]
    exp_id = jobs.get_job(first, tmp_path).experiment
    assert cache.read_entry(tmp_path, exp_id, 2, "attention") is not None


# --- 9. full disks -------------------------------------------------------------------------------


def test_a_full_disk_leaves_no_temporary_files(tmp_path, monkeypatch):
    real = os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        cache.write_entry(tmp_path, EXP, 0, "dla", {"x": 1.0}, {"heads": _heads()})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def _heads():
    import pandas as pd

    return pd.DataFrame({"layer": [0], "head": [0], "value": [1.0]})


@pytest.fixture()
def small_disk(tmp_path):
    """A 6 MB tmpfs: room for the index and the records, not for a random:tiny checkpoint."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                      capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        _unmount(mount)


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_fails_the_job_with_its_message(small_disk, monkeypatch):
    worker_env(monkeypatch)
    job_id = jobs.submit(tiny_config(seed=51), small_disk)
    job = jobs.wait(job_id, small_disk, timeout=WAIT)
    assert job.status == "failed", (job.status, job.error)
    assert "No space left on device" in job.error
    assert not list(small_disk.rglob("*.tmp"))


@pytest.mark.slow
def test_a_full_disk_during_analyses_fails_the_job_with_its_message(experiment, tmp_path, monkeypatch):
    ref, cfg, exp_id = experiment
    shutil.copytree(ref, tmp_path / "cache")
    root = tmp_path / "cache"
    for entry in (root / "experiments" / exp_id).glob("epoch-002/*.json"):
        entry.unlink()  # the analyses of the last epoch are still to do
    real = os.fsync

    def full(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if "/epoch-002/" in path and path.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", full)
    job_id = jobs.submit(cfg, root, launch=False)
    jobs.run_job(str(root), job_id)  # the worker's code, in this process
    job = jobs.get_job(job_id, root)
    assert job.status == "failed" and "No space left on device" in job.error, (job.status, job.error)
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# --- 10-11. hostile model directories and inputs -------------------------------------------------


def test_a_model_directory_with_custom_code_is_refused(refs, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(refs / "two" / "epoch-002", folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text("raise SystemExit('custom code ran')\n")
    (folder / "manifest.json").unlink()
    with pytest.raises(ModelUnavailableError, match="never runs code"):
        load_hf(str(folder))


def test_every_from_pretrained_call_refuses_remote_code():
    calls = []
    for path in [*(REPO / "ioi").rglob("*.py"), *(REPO / "app_pages").rglob("*.py")]:
        text = path.read_text()
        for start in (i for i in range(len(text)) if text.startswith("from_pretrained(", i)):
            depth, end = 0, start
            while True:  # to the call's closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0 and text[end] == ")":
                    break
                end += 1
            calls.append((path.name, "trust_remote_code=False" in text[start:end]))
    assert calls and all(ok for _, ok in calls), calls


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "does not exist"),
        (lambda d: (d.mkdir(), (d / "config.json").write_text("{}")), "has no weights"),
        (
            lambda d: (
                d.mkdir(),
                (d / "config.json").write_text('{"model_type": "gpt2"}'),
                (d / "model.safetensors").write_bytes(b"not safe"),
            ),
            "cannot be loaded",
        ),  # fmt: skip
        (lambda d: (d.mkdir(), (d / "config.json").write_text("[1")), "unreadable"),
    ],
)
def test_bad_model_directories_say_what_is_wrong(tmp_path, make, message):
    make(tmp_path / "m")
    with pytest.raises(ModelUnavailableError, match=message):
        load_hf(str(tmp_path / "m"))


# --- 14. small things ----------------------------------------------------------------------------


def test_ids_and_names_are_matched_whole():
    for bad in (EXP + "\n", "../" + EXP, EXP.upper()):
        with pytest.raises(ValueError):
            cache.check_id(bad)
    with pytest.raises(ValueError):
        cache.check_name("dla\n")


def test_entries_store_paths_relative_to_the_cache_root(tmp_path):
    ckpt = tmp_path / "experiments" / EXP / "checkpoints" / "epoch-001"
    cache.write_entry(tmp_path, EXP, 1, "dla", {"circuit": {"name": f"IOI circuit of {ckpt}"}})
    text = (tmp_path / "experiments" / EXP / "epoch-001" / "dla.json").read_text()
    assert str(tmp_path) not in text and f"experiments/{EXP}/checkpoints/epoch-001" in text
    assert cache.read_entry(tmp_path, EXP, 1, "dla") is not None


def test_the_shipped_demo_cache_carries_no_machine_paths():
    demo = REPO / "cache" / "demo"
    if not (demo / "experiments").is_dir():
        pytest.skip("no shipped demo cache")
    marks = ('"/', " /work/", " /tmp/", " /home/", " /root/")
    carrying = [p for p in demo.rglob("*.json") if any(m in p.read_text() for m in marks)]
    assert not carrying, carrying[:3]
    for entry in demo.glob("experiments/*/epoch-*/*.json"):
        p = entry.relative_to(demo / "experiments").parts
        assert cache.read_entry(demo, p[0], int(p[1][6:]), entry.stem) is not None


# --- 12-13. the command line: one `error:` line, exit 2, for every user mistake -----------------

LONG = "When Mary and John went to the store, " * 20 + "John gave a drink to"
WHEN = "When Mary and John went to the store, "


def _jsonl(folder: Path, *rows) -> str:
    path = folder / "d.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _no_weights(folder: Path) -> str:
    (folder / "m").mkdir()
    (folder / "m" / "config.json").write_text('{"model_type": "gpt2"}')
    return str(folder / "m")


def _bad_weights(folder: Path) -> str:
    _no_weights(folder)
    (folder / "m" / "model.safetensors").write_bytes(b"\x00" * 64)
    return str(folder / "m")


def _binary(folder: Path) -> str:
    (folder / "b.jsonl").write_bytes(bytes(range(256)) * 8)
    return str(folder / "b.jsonl")


def _file(folder: Path) -> str:
    (folder / "f").write_text("x")
    return str(folder / "f")


EVAL = ["eval", "--model", "random:tiny", "--size", "4"]
CASES = {
    "jsonl line is a list": (lambda d: [*EVAL, "--dataset", _jsonl(d, [1, 2])], "not a JSON object"),
    "binary dataset": (lambda d: [*EVAL, "--dataset", _binary(d)], "b.jsonl"),
    "dataset is a directory": (lambda d: [*EVAL, "--dataset", str(d)], "is not a file"),
    "template of wrong type": (
        lambda d: [
            *EVAL,
            "--dataset",
            _jsonl(
                d,
                {
                    "prompt": "When Mary and John went, John gave it to",
                    "io": "Mary",
                    "s": "John",
                    "template": "x",
                },
            ),
        ],
        "wrong type",
    ),  # fmt: skip
    "label of wrong type": (
        lambda d: [
            *EVAL,
            "--dataset",
            _jsonl(d, {"prompt": "Mary and John. John to", "io": "Mary", "s": "John", "label": 5}),
        ],
        "wrong type",
    ),  # fmt: skip
    "prompt longer than the context": (
        lambda d: [*EVAL[:3], "--dataset", _jsonl(d, {"prompt": LONG, "io": "Mary", "s": "John"})],
        "longer than the model's context",
    ),
    "line longer than the cap": (
        lambda d: [*EVAL, "--dataset", _jsonl(d, "x" * 20_000)],
        "longer than 10,000 characters",
    ),
    "finetune --out an existing file": (
        lambda d: ["finetune", "--model", "random:tiny", "--out", _file(d)],
        "is a file",
    ),
    "analyze --out a directory": (
        lambda d: ["analyze", "dla", "--model", "random:tiny", "--size", "2", "--out", str(d)],
        "is a directory",
    ),
    "--device gpu": (lambda d: [*EVAL, "--device", "gpu"], "unknown device 'gpu'"),
    "--device cuda without CUDA": (lambda d: [*EVAL, "--device", "cuda"], "no usable CUDA"),
    "a --parent that is a glob": (  # never looked up as a pattern over the cache's folders
        lambda d: ["jobs", "submit", "--scenario", "reversal", "--parent", "*", "--cache", str(d)],
        "not an experiment id",
    ),
    "a bad --parent id": (
        lambda d: ["jobs", "submit", "--scenario", "reversal", "--parent", "../x", "--cache", str(d)],
        "not an experiment id",
    ),
    "a directory without weights": (
        lambda d: ["eval", "--model", _no_weights(d), "--size", "2"],
        "no weights",
    ),
    "weights that are not safetensors": (
        lambda d: ["eval", "--model", _bad_weights(d), "--size", "2"],
        "cannot be loaded",
    ),
    "a missing --checkpoint": (
        lambda d: ["eval", "--checkpoint", str(d / "nope"), "--size", "2"],
        "does not exist",
    ),
    "--size 10**9": (lambda d: ["eval", "--model", "random:tiny", "--size", str(10**9)], "at most 200,000"),
    "--train-size 10**9": (
        lambda d: ["jobs", "submit", "--train-size", str(10**9), "--cache", str(d)],
        "at most 200,000",
    ),
    "an unknown name on ioi-tiny": (
        lambda d: [
            "eval",
            "--dataset",
            _jsonl(
                d,
                {
                    "prompt": "When Mary and Zork went to the store, Zork gave a drink to",
                    "io": "Mary",
                    "s": "Zork",
                },
            ),
        ],
        "d.jsonl:1: name(s) not in this model's vocabulary: Zork",  # the line to mend
    ),  # fmt: skip
    "a name that is a number": (
        lambda d: [*EVAL, "--dataset", _jsonl(d, {"prompt": "Mary and John. John to", "io": "Mary", "s": 3})],
        "d.jsonl:1: field(s) s have the wrong type",  # not "missing"
    ),
    "a prompt that ends with the name": (
        lambda d: [*EVAL[:3], "--dataset", _jsonl(d, {"prompt": "Mary and John. John gave it to Mary",
                                                      "io": "Mary", "s": "John"})],
        "ends with the name Mary: end it with the word before the name",
    ),
    "a name written with its space": (
        lambda d: [*EVAL, "--dataset", _jsonl(d, {"prompt": "Mary and John. John to", "io": " Mary",
                                                  "s": "John"})],
        "d.jsonl:1: field(s) io have spaces around the name",  # not "not in the vocabulary"
    ),
    # the ABC prompt of a templated line is re-rendered from its template: an edited prompt with the
    # template left in would be compared with another prompt's counterfactual
    "a template that does not write the prompt": (
        lambda d: [*EVAL, "--dataset", _jsonl(d, {"prompt": WHEN + "John gave a drink to", "io": "Mary",
                                                  "s": "John", "template": 0})],
        "d.jsonl:1: template 0 with this line's names, order, place and object writes",
    ),
    "a template that does not exist": (
        lambda d: [*EVAL, "--dataset", _jsonl(d, {"prompt": "x", "io": "Mary", "s": "John",
                                                  "template": 99})],
        "d.jsonl:1: template 99 does not exist",  # was an IndexError traceback
    ),
    "no S": (
        lambda d: [*EVAL, "--dataset", _jsonl(d, {"prompt": "Mary and John. John to", "io": "Mary"})],
        "d.jsonl:1: missing string field(s) s",
    ),
    "a bad job id": (lambda d: ["jobs", "show", "nope", "--cache", str(d)], "no job 'nope'"),
    "a mistyped argument": (lambda d: ["eval", "--size", "abc"], "invalid int value"),
}


def test_a_dataset_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    from ioi.task.data import read_jsonl

    row = {"prompt": "When Mary and John went to the store, John gave a drink to", "io": "Mary", "s": "John"}
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")  # as Windows editors save UTF-8
    (plain,) = read_jsonl(_jsonl(tmp_path, row))
    assert read_jsonl(path) == [plain] and plain.prompt == row["prompt"]


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from ioi.cli import main

    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        rc = exit_.code
    captured = capsys.readouterr()
    return rc, captured.err


@pytest.mark.parametrize("case", list(CASES))
def test_every_user_mistake_is_one_error_line_and_exit_2(tmp_path, capsys, case):
    if case == "--device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    make, message = CASES[case]
    rc, err = _cli(make(tmp_path), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture()
def read_only_cache(tmp_path):
    """A cache holding one job, on a file system mounted read-only (root ignores file modes)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                      capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        job_id = jobs.submit(tiny_config(seed=71), mount, launch=False)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        yield mount, job_id
    finally:
        _unmount(mount)


def _unmount(mount: Path) -> None:
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("action", ["list", "show", "submit"])
def test_a_read_only_cache_is_one_error_line(read_only_cache, capsys, action):
    mount, job_id = read_only_cache
    argv = {"list": ["jobs", "list"], "show": ["jobs", "show", job_id], "submit": ["jobs", "submit"]}[action]
    rc, err = _cli([*argv, "--cache", str(mount)], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Read-only" in lines[0] or "read-only or full?" in lines[0], lines[0]


def test_a_damaged_index_is_a_warning_line_and_the_jobs_are_listed(tmp_path, capsys):
    ids = _two_experiments(tmp_path)
    for f in tmp_path.glob("index.sqlite3*"):
        f.write_bytes(b"garbage" * 100)
    rc, err = _cli(["jobs", "list", "--cache", str(tmp_path)], capsys)
    assert rc == 0 and err.startswith("warning: ") and len(err.strip().splitlines()) == 1, err
    rc, _ = _cli(["jobs", "show", ids[0], "--cache", str(tmp_path)], capsys)
    assert rc == 0


def test_unknown_words_outside_the_name_slots_are_reported(tmp_path, capsys):
    data = _jsonl(tmp_path, {"prompt": "When Mary and John went to the zorkhouse, John gave a drink to",
                             "io": "Mary", "s": "John"})  # fmt: skip
    rc, err = _cli(["eval", "--dataset", data, "--json"], capsys)
    assert rc == 0 and err.strip() == (
        "warning: words not in the model's vocabulary, read as its unknown token: zorkhouse"
    ), err
