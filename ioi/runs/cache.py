"""The result cache: experiments' metrics, per-head tables and checkpoints as plain files.

Layout under a cache root (``$IOI_CACHE_DIR``, default ``./cache``; the shipped demo set is
``cache/demo``)::

    index.sqlite3                      derived index (WAL mode): experiments, entries, jobs
    experiments/<id>/experiment.json   the configuration the id hashes (see ioi.runs.experiment)
    experiments/<id>/checkpoints/      fine-tuning checkpoints (safetensors), epoch-NNN/
    experiments/<id>/epoch-NNN/<name>.json          an entry: summary + sha256 of its tables
    experiments/<id>/epoch-NNN/<name>.<table>.parquet   its per-head / tidy tables

Every path is built from an experiment id (a hex hash), an epoch number and a registered analysis
name, never from user-typed text. Files are written to a unique temporary name and moved into place
with ``os.replace``, so a crash never leaves half a file and two jobs finishing at once never write
the same temporary. An entry's JSON carries the sha256 of its own payload and of each table file, so
the files alone are self-verifying (the shipped demo set needs no database): a truncated or edited
entry is detected on read, reported as `CorruptEntry`, moved aside and recomputed by the next run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # ioi.methods.analyses pulls in torch; the job supervisor only needs the index
    from ioi.methods.analyses import AnalysisResult

DEMO_ROOT = Path(__file__).resolve().parents[2] / "cache" / "demo"
INDEX_NAME = "index.sqlite3"
_ID = re.compile(r"^[0-9a-f]{8,64}$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class CorruptEntry(ValueError):
    """A cache file is truncated, edited or missing a table; it will be recomputed."""


def cache_root(root: str | Path | None = None) -> Path:
    """The cache directory: `root` if given, else $IOI_CACHE_DIR, else ./cache."""
    return Path(root if root is not None else os.environ.get("IOI_CACHE_DIR", "cache")).resolve()


def connect(root: str | Path | None = None) -> sqlite3.Connection:
    """A connection to the root's SQLite index in WAL mode (readers never block the writer),
    creating the schema on first use. Cheap: open one per operation."""
    base = cache_root(root)
    base.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(base / INDEX_NAME, timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=30000")
    db.executescript(_SCHEMA)
    return db


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


def _index(root: str | Path | None, sql: str, params: tuple) -> None:
    """Record a write in the index. Best effort: the files are the truth (they verify themselves),
    and SQLite's WAL mode does not work on network file systems, where Dask workers on other
    machines may be writing; there a failed index write is only a warning."""
    try:
        with connect(root) as db:
            db.execute(sql, params)
    except sqlite3.Error as err:
        import warnings

        warnings.warn(f"cache index not updated ({err}); the files are written", stacklevel=3)


def check_id(exp_id: str) -> str:
    """`exp_id` if it is a hex experiment id; ValueError otherwise (paths come only from hashes)."""
    if not _ID.match(exp_id):
        raise ValueError(f"{exp_id!r} is not an experiment id (hex digits, as `ioi jobs list` shows)")
    return exp_id


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a valid analysis name (lower-case letters, digits, - and _)")
    return name


def experiment_dir(root: str | Path | None, exp_id: str) -> Path:
    return cache_root(root) / "experiments" / check_id(exp_id)


def epoch_dir(root: str | Path | None, exp_id: str, epoch: int) -> Path:
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (0 is the starting model), got {epoch}")
    return experiment_dir(root, exp_id) / f"epoch-{epoch:03d}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def _table_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_entry(
    root: str | Path | None,
    exp_id: str,
    epoch: int,
    name: str,
    summary: dict[str, Any],
    tables: dict[str, pd.DataFrame] | None = None,
) -> Path:
    """Store one result (scalars `summary` + named tables) for (experiment, epoch, name).

    Tables are written first, then the JSON naming them with their checksums, so the JSON's
    presence means the whole entry is there. Returns the JSON path.
    """
    folder = epoch_dir(root, exp_id, epoch)
    files = {}
    for table, df in (tables or {}).items():
        data = _table_bytes(df)
        write_atomic(folder / f"{check_name(name)}.{check_name(table)}.parquet", data)
        files[table] = sha256(data)
    payload = {"name": name, "epoch": epoch, "experiment": exp_id, "summary": summary, "tables": files}
    body = {"sha256": sha256(canonical_json(payload)), "payload": payload}
    path = folder / f"{check_name(name)}.json"
    write_atomic(path, json.dumps(body, indent=1, default=str).encode())
    _index(root, "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",
           (exp_id, epoch, name, body["sha256"], time.time()))  # fmt: skip
    return path


@dataclass
class Entry:
    """A verified cache entry: `summary` scalars and its tables by name."""

    name: str
    epoch: int
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def read_entry(root: str | Path | None, exp_id: str, epoch: int, name: str) -> Entry | None:
    """The entry, verified against its checksums; None if absent; CorruptEntry if damaged."""
    folder = epoch_dir(root, exp_id, epoch)
    path = folder / f"{check_name(name)}.json"
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_bytes())
        payload = body["payload"]
        ok = sha256(canonical_json(payload)) == body["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptEntry(f"{path} is unreadable ({err})") from None
    if not ok:
        raise CorruptEntry(f"{path} does not match its checksum (truncated or edited)")
    tables = {}
    for table, digest in payload["tables"].items():
        tpath = folder / f"{name}.{check_name(table)}.parquet"
        data = tpath.read_bytes() if tpath.exists() else b""
        if sha256(data) != digest:
            raise CorruptEntry(f"{tpath} is missing or does not match its checksum")
        tables[table] = pd.read_parquet(io.BytesIO(data))
    return Entry(name, epoch, payload["summary"], tables)


def quarantine(root: str | Path | None, exp_id: str, epoch: int, name: str) -> None:
    """Move a damaged entry's JSON aside (kept as *.corrupt for inspection) so it is recomputed."""
    path = epoch_dir(root, exp_id, epoch) / f"{check_name(name)}.json"
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.{int(time.time())}.corrupt"))
    _index(root, "DELETE FROM entries WHERE experiment=? AND epoch=? AND name=?", (exp_id, epoch, name))


def load_entry(root: str | Path | None, exp_id: str, epoch: int, name: str, *, report=None) -> Entry | None:
    """Like `read_entry`, but a damaged entry is reported (`report(message)`, default a warning),
    quarantined and returned as None, so callers recompute it instead of crashing."""
    try:
        return read_entry(root, exp_id, epoch, name)
    except CorruptEntry as err:
        if report is None:
            import warnings

            warnings.warn(f"{err}; it will be recomputed", stacklevel=2)
        else:
            report(f"{err}; it will be recomputed")
        if os.access(epoch_dir(root, exp_id, epoch), os.W_OK):
            quarantine(root, exp_id, epoch, name)
        return None


def write_analysis(
    root: str | Path | None, exp_id: str, epoch: int, name: str, result: AnalysisResult
) -> Path:
    """Store an AnalysisResult: heads table, further tables and summary scalars."""
    summary = {"method": result.method, "summary": result.summary}
    return write_entry(root, exp_id, epoch, name, summary, {"heads": result.heads, **result.tables})


def load_analysis(
    root: str | Path | None, exp_id: str, epoch: int, name: str, *, report=None
) -> AnalysisResult | None:
    """The AnalysisResult of analysis `name` at `epoch` (0 = the starting model), or None if it is
    not (or no longer validly) cached; a damaged entry is reported as in `load_entry`."""
    from ioi.methods.analyses import AnalysisResult

    entry = load_entry(root, exp_id, epoch, name, report=report)
    if entry is None:
        return None
    tables = dict(entry.tables)
    heads = tables.pop("heads")
    return AnalysisResult(entry.summary["method"], heads, entry.summary["summary"], tables)


def register_experiment(root: str | Path | None, exp_id: str, record: dict[str, Any]) -> None:
    """Write experiment.json (the hashed configuration) and index it; idempotent."""
    path = experiment_dir(root, exp_id) / "experiment.json"
    if not path.exists():
        write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode())
    _index(root, "INSERT OR IGNORE INTO experiments (id, config, parent, created) VALUES (?, ?, ?, ?)",
           (exp_id, json.dumps(record), record["config"].get("parent"), time.time()))  # fmt: skip


def read_experiment(root: str | Path | None, exp_id: str) -> dict[str, Any] | None:
    """The experiment.json record of `exp_id`, or None if the cache does not know it."""
    path = experiment_dir(root, exp_id) / "experiment.json"
    return json.loads(path.read_text()) if path.exists() else None


def cached_epochs(root: str | Path | None, exp_id: str) -> dict[int, list[str]]:
    """Epoch -> names of the entries present on disk (unverified; reading verifies)."""
    folder = experiment_dir(root, exp_id)
    out: dict[int, list[str]] = {}
    for d in sorted(folder.glob("epoch-[0-9][0-9][0-9]")):
        names = sorted(p.stem for p in d.glob("*.json") if not p.name.startswith("."))
        if names:
            out[int(d.name.split("-")[1])] = names
    return out


def load_metrics_series(root: str | Path | None, exp_id: str) -> pd.DataFrame:
    """One row per cached epoch (0 = the starting model): eval metrics (logit_diff, accuracy, ...)
    plus every analysis' scalar summary as column '<analysis>.<key>' (e.g. faithfulness curves)."""
    rows = []
    for epoch, names in cached_epochs(root, exp_id).items():
        row: dict[str, Any] = {"epoch": epoch}
        for name in names:
            entry = load_entry(root, exp_id, epoch, name)
            if entry is None:
                continue
            scalars = entry.summary if name == "metrics" else entry.summary.get("summary", {})
            prefix = "" if name == "metrics" else f"{name}."
            row |= {f"{prefix}{k}": v for k, v in scalars.items() if isinstance(v, (int, float, bool))}
        rows.append(row)
    return (
        pd.DataFrame(rows).sort_values("epoch").reset_index(drop=True)
        if rows
        else pd.DataFrame(columns=["epoch"])
    )


def entry_stamp(root: str | Path | None, exp_id: str, epoch: int, name: str) -> float:
    """Modification time of an entry's JSON (0.0 if absent): changes whenever the entry is
    rewritten, so readers that memoise results key them by it."""
    path = epoch_dir(root, exp_id, epoch) / f"{check_name(name)}.json"
    return path.stat().st_mtime if path.exists() else 0.0


def experiment_stamp(root: str | Path | None, exp_id: str) -> float:
    """The latest `entry_stamp` over every entry of an experiment (0.0 if none)."""
    return max(
        (entry_stamp(root, exp_id, e, n) for e, names in cached_epochs(root, exp_id).items() for n in names),
        default=0.0,
    )


def demo_root() -> Path:
    """The demo results the dashboard opens on: $IOI_DEMO_DIR if set, else the shipped cache/demo."""
    extra = os.environ.get("IOI_DEMO_DIR")
    return Path(extra).resolve() if extra else DEMO_ROOT
