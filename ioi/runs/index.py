"""The cache's SQLite index: derived from the files, so a damaged or deleted one is rebuilt.

Every row has a file that is its truth: an experiment its ``experiment.json``, an entry its
``epoch-NNN/<name>.json``, a job its ``experiments/<id>/jobs/<job>.json`` (rewritten on every change
of state; heartbeats and progress live only in the index). Opening an index that is not a database
(garbage, truncated) moves it aside as ``index.sqlite3.<time>.corrupt`` and rebuilds it; so does
opening one that was deleted, even while jobs run: their rows come back from the job files.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INDEX_NAME = "index.sqlite3"
JOB_COLUMNS = (
    "id", "experiment", "config", "state", "epoch", "epochs", "step", "steps", "phase", "created",
    "started", "finished", "heartbeat", "pid", "worker_pid", "host", "attempts", "cancel", "cached",
    "device", "log", "error",
)  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY, config TEXT NOT NULL, parent TEXT, created REAL NOT NULL, notes TEXT DEFAULT ''
);
CREATE TABLE IF NOT EXISTS entries (
    experiment TEXT NOT NULL, epoch INTEGER NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (experiment, epoch, name)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, experiment TEXT NOT NULL, config TEXT NOT NULL, state TEXT NOT NULL,
    epoch INTEGER DEFAULT 0, epochs INTEGER DEFAULT 0, step INTEGER DEFAULT 0, steps INTEGER DEFAULT 0,
    phase TEXT DEFAULT '', created REAL NOT NULL, started REAL, finished REAL, heartbeat REAL,
    pid INTEGER, worker_pid INTEGER, host TEXT, attempts INTEGER DEFAULT 0, cancel INTEGER DEFAULT 0,
    cached INTEGER DEFAULT 0, device TEXT DEFAULT 'cpu', log TEXT DEFAULT '', error TEXT DEFAULT ''
);
"""


class IndexUnavailable(OSError):
    """The index cannot be opened or written (read-only cache, full disk); says where and why."""


class _Connection(sqlite3.Connection):
    """A connection that `with` also closes (sqlite3's own only commits), so no file stays open
    until a garbage collection: a long-lived dashboard would otherwise pile up descriptors."""

    def __exit__(self, *exc) -> bool:
        try:
            return super().__exit__(*exc)
        finally:
            self.close()


def _open(path: Path) -> sqlite3.Connection:
    """Open and check the index: reading every table finds a truncated file, which SQLite only
    reports when a damaged page is reached (DatabaseError)."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None, factory=_Connection)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        for table in ("experiments", "entries", "jobs"):
            db.execute(f"SELECT count(*) FROM {table}").fetchone()
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on the file `path`, created if missing, held inside; a
    process that dies lets go of it. The index's rebuilds and each experiment's runs use one."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _set_aside(path: Path) -> None:
    """Move a damaged index aside (kept for inspection) and drop its logs, which must not be
    replayed into the new database (nor a deleted database's logs into a fresh one)."""
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.{time.time():.0f}.corrupt"))


def _damaged(err: sqlite3.Error) -> bool:
    # SQLite's NOTADB and CORRUPT are DatabaseError; busy, read-only, full and I/O errors are
    # OperationalError, which say nothing about the file's contents.
    return isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError)


def connect(base: Path) -> sqlite3.Connection:
    """A connection to `base`'s index in WAL mode (readers never block the writer), rebuilding a
    missing or damaged index from the files first. Cheap: open one per operation.

    Raises `IndexUnavailable` when the cache directory cannot hold an index (read-only, disk full)."""
    path = base / INDEX_NAME
    try:
        if path.exists():
            try:
                return _open(path)
            except sqlite3.DatabaseError as err:
                if not _damaged(err):
                    raise
        base.mkdir(parents=True, exist_ok=True)
        with file_lock(base / ".index.lock"):  # one process creates, sets aside or rebuilds it
            if path.exists():  # damaged, or created by another process since we looked
                try:
                    return _open(path)
                except sqlite3.DatabaseError as err:
                    if not _damaged(err):
                        raise
                    warnings.warn(f"{path} is damaged ({err}); moved aside and rebuilt from the cache's "
                                  "files", stacklevel=3)  # fmt: skip
            _set_aside(path)
            db = _open(path)
            rebuild(db, base)
            return db
    except (OSError, sqlite3.OperationalError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise IndexUnavailable(f"cannot use the cache index {path}: {why} (read-only or full?)") from None


def rebuild(db: sqlite3.Connection, base: Path) -> None:
    """Fill an empty index from the files (unreadable files are skipped: reads report them; a job's
    file has no other reader, so its damage is reported here)."""
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    for record_path in sorted(base.glob("experiments/*/experiment.json")):
        try:
            record = json.loads(record_path.read_text())
            config = record["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        db.execute("INSERT OR IGNORE INTO experiments (id, config, parent, created) VALUES (?, ?, ?, ?)",
                   (record_path.parent.name, json.dumps(record), config.get("parent"), now))  # fmt: skip
        for entry in record_path.parent.glob("epoch-[0-9][0-9][0-9]/*.json"):
            try:
                digest = json.loads(entry.read_bytes())["sha256"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            epoch = int(entry.parent.name[6:])
            db.execute("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?)",
                       (record_path.parent.name, epoch, entry.stem, digest, now))  # fmt: skip
    for job_path in base.glob("experiments/*/jobs/*.json"):
        try:
            row = json.loads(job_path.read_text())
            values = tuple(row[c] for c in JOB_COLUMNS)
        except (OSError, ValueError, KeyError, TypeError):
            warnings.warn(f"{job_path} is unreadable; job {job_path.stem} is left out of the rebuilt index",
                          stacklevel=2)  # fmt: skip
            continue
        db.execute(f"INSERT OR IGNORE INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES "
                   f"({', '.join('?' * len(JOB_COLUMNS))})", values)  # fmt: skip
    db.execute("COMMIT")
