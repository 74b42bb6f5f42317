"""The result cache: experiments' metrics, per-head tables and checkpoints as plain files.

Layout under a cache root (``$IOI_CACHE_DIR``, default ``./cache``; the shipped demo set is
``cache/demo``)::

    index.sqlite3                      derived index (WAL mode; see ioi.runs.index)
    experiments/<id>/experiment.json   the configuration the id hashes (see ioi.runs.experiment)
    experiments/<id>/jobs/<job>.json   each job's state (ioi.runs.jobs)
    experiments/<id>/checkpoints/      fine-tuning checkpoints (safetensors), epoch-NNN/
    experiments/<id>/epoch-NNN/<name>.json          an entry: summary + sha256 of its tables
    experiments/<id>/epoch-NNN/<name>.<table>.parquet   its per-head / tidy tables

Every path is built from an experiment id (a hex hash), an epoch number and a registered analysis
name, never from user-typed text. Files are written to a unique temporary name and moved into place
with ``os.replace``, so a crash never leaves half a file and two jobs finishing at once never write
the same temporary. An entry's JSON carries the sha256 of its own payload and of each table file, so
the files alone are self-verifying (the shipped demo set needs no database): a truncated or edited
entry is detected on read, reported as `CorruptEntry`, moved aside and recomputed by the next run;
so is an entry whose payload names another experiment, epoch or analysis than its path (a copied
file). The shipped demo set (and ``$IOI_DEMO_DIR``) is read-only to the store: writing there raises
`ReadOnlyCache` unless ``$IOI_DEMO_WRITE=1`` (set by ``python -m ioi precompute``, which builds it).

Longer than 400 lines because the entry format (layout, atomic writes, checksums, verified reads,
stamps, locks) is one definition: either half of a split would need the other's private layout.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import sqlite3
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ioi.runs import index

if TYPE_CHECKING:  # torch and pandas load lazily: `jobs submit` and the job supervisor need only the index
    import pandas as pd

    from ioi.methods.analyses import AnalysisResult

DEMO_ROOT = Path(__file__).resolve().parents[2] / "cache" / "demo"
INDEX_NAME = index.INDEX_NAME
_ID = re.compile(r"[0-9a-f]{8,64}")  # always .fullmatch: "$" would accept a trailing newline
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


class CorruptEntry(ValueError):
    """A cache file is truncated, edited, misplaced or missing a table; it will be recomputed."""


class ReadOnlyCache(PermissionError):
    """A write into the shipped demo cache, which only `python -m ioi precompute` builds."""


def demo_root() -> Path:
    """The demo results the dashboard opens on: $IOI_DEMO_DIR if set, else the shipped cache/demo."""
    extra = os.environ.get("IOI_DEMO_DIR")
    return Path(extra).resolve() if extra else DEMO_ROOT


def demo_roots() -> list[Path]:
    """The read-only demo caches: the shipped cache/demo and $IOI_DEMO_DIR when set."""
    return list(dict.fromkeys([DEMO_ROOT, demo_root()]))


def is_demo(root: str | Path | None) -> bool:
    base = cache_root(root)
    return any(base == d or d in base.parents for d in demo_roots())


def check_writable(root: str | Path | None) -> Path:
    """The cache root, if the store may write there; `ReadOnlyCache` for a demo cache."""
    base = cache_root(root)
    if is_demo(base) and os.environ.get("IOI_DEMO_WRITE") != "1":
        raise ReadOnlyCache(
            f"{base} is the shipped demo cache, which is read-only; results go to $IOI_CACHE_DIR "
            "or ./cache (only `python -m ioi precompute` rebuilds the demo set)"
        )
    return base


def cache_root(root: str | Path | None = None) -> Path:
    """The cache directory: `root` if given, else $IOI_CACHE_DIR, else ./cache; NotADirectoryError
    when that path is a file (said once, not as a failure deep inside a write)."""
    path = Path(root if root is not None else os.environ.get("IOI_CACHE_DIR", "cache")).resolve()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"the cache {path} is a file; give a directory (--cache or $IOI_CACHE_DIR)")
    return path


def connect(root: str | Path | None = None) -> sqlite3.Connection:
    """A connection to the root's index (:func:`ioi.runs.index.connect`: rebuilt from the files
    when missing or damaged). Not for a demo cache, whose files are read directly."""
    return index.connect(check_writable(root))


def _index(root: str | Path | None, sql: str, params: tuple) -> None:
    """Record a write in the index. Best effort: the files are the truth (they verify themselves),
    and SQLite's WAL mode does not work on network file systems, where Dask workers on other
    machines may be writing; there a failed index write is only a warning."""
    try:
        with connect(root) as db:
            db.execute(sql, params)
    except (sqlite3.Error, index.IndexUnavailable) as err:
        warnings.warn(f"cache index not updated ({err}); the files are written", stacklevel=3)


def check_id(exp_id: str) -> str:
    """`exp_id` if it is a hex experiment id; ValueError otherwise (paths come only from hashes)."""
    if not isinstance(exp_id, str) or not _ID.fullmatch(exp_id):
        if isinstance(exp_id, str) and re.fullmatch(r"[0-9a-f]{1,7}", exp_id):
            raise ValueError(f"{exp_id!r} is too short for an id: give at least its first 8 characters")
        raise ValueError(f"{exp_id!r} is not an experiment id (hex digits, as `ioi experiments` lists them)")
    return exp_id


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
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
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk (or a kill's exception) must not leave the temporary behind
        tmp.unlink(missing_ok=True)
        raise


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
    presence means the whole entry is there. Paths under the cache root in `summary` (a model
    named by its checkpoint directory) are stored relative to it, so a copied or shipped cache
    carries no machine's paths. Returns the JSON path.
    """
    base = check_writable(root)
    summary = relative_paths(summary, base)
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


def relative_paths(obj: Any, base: Path) -> Any:
    """`obj` (JSON-like) with every occurrence of the absolute path `base/` removed from its strings."""
    prefix = f"{base}{os.sep}"
    if isinstance(obj, str):
        return obj.replace(prefix, "")
    if isinstance(obj, dict):
        return {k: relative_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [relative_paths(v, base) for v in obj]
    return obj


@dataclass
class Entry:
    """A verified cache entry: `summary` scalars and its tables by name."""

    name: str
    epoch: int
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def read_entry(
    root: str | Path | None, exp_id: str, epoch: int, name: str, *, tables: bool = True
) -> Entry | None:
    """The entry, verified against its checksums; None if absent; CorruptEntry if damaged. With
    `tables` False only its summary is read (its table files are neither read nor checked)."""
    folder = epoch_dir(root, exp_id, epoch)
    path = folder / f"{check_name(name)}.json"
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_bytes())
        payload = body["payload"]
        if not isinstance(payload, dict):
            raise TypeError("the payload is not an object")
        ok = sha256(canonical_json(payload)) == body["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptEntry(f"{path} is unreadable ({err})") from None
    if not ok:
        raise CorruptEntry(f"{path} does not match its checksum (truncated or edited)")
    where = (payload.get("experiment"), payload.get("epoch"), payload.get("name"))
    if where != (exp_id, epoch, name):
        raise CorruptEntry(
            f"{path} holds {payload.get('name')!r} of epoch {payload.get('epoch')} of experiment "
            f"{payload.get('experiment')} (a misplaced copy)"
        )
    found = {}
    for table, digest in payload["tables"].items() if tables else ():
        import pandas as pd  # here only: reading a job's metrics (no tables) stays light
        tpath = folder / f"{name}.{check_name(table)}.parquet"
        data = tpath.read_bytes() if tpath.exists() else b""
        if sha256(data) != digest:
            raise CorruptEntry(f"{tpath} is missing or does not match its checksum")
        found[table] = pd.read_parquet(io.BytesIO(data))
    return Entry(name, epoch, payload["summary"], found)


def quarantine(root: str | Path | None, exp_id: str, epoch: int, name: str) -> None:
    """Move a damaged entry's JSON aside (kept as *.corrupt for inspection) so it is recomputed."""
    path = epoch_dir(root, exp_id, epoch) / f"{check_name(name)}.json"
    check_writable(root)
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.{int(time.time())}.corrupt"))
    _index(root, "DELETE FROM entries WHERE experiment=? AND epoch=? AND name=?", (exp_id, epoch, name))


def load_entry(
    root: str | Path | None, exp_id: str, epoch: int, name: str, *, report=None, tables: bool = True
) -> Entry | None:
    """Like `read_entry`, but a damaged entry is reported (`report(message)`, default a warning),
    quarantined and returned as None, so callers recompute it instead of crashing."""
    try:
        return read_entry(root, exp_id, epoch, name, tables=tables)
    except CorruptEntry as err:
        if report is None:
            warnings.warn(f"{err}; it will be recomputed", stacklevel=2)
        else:
            report(f"{err}; it will be recomputed")
        if os.access(epoch_dir(root, exp_id, epoch), os.W_OK) and not is_demo(root):
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
    """Write experiment.json (the hashed configuration) and index it; idempotent, and rewrites a
    damaged one."""
    check_writable(root)
    path = experiment_dir(root, exp_id) / "experiment.json"
    try:
        intact = read_experiment(root, exp_id) is not None
    except CorruptEntry:
        intact = False
    if not intact:
        write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode())
    _index(root, "INSERT OR IGNORE INTO experiments (id, config, parent, created) VALUES (?, ?, ?, ?)",
           (exp_id, json.dumps(record), record["config"].get("parent"), time.time()))  # fmt: skip


def read_experiment(root: str | Path | None, exp_id: str) -> dict[str, Any] | None:
    """The experiment.json record of `exp_id`, or None if the cache does not know it;
    CorruptEntry if the file is truncated or not a record."""
    path = experiment_dir(root, exp_id) / "experiment.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_bytes())
        if not isinstance(record.get("config"), dict):
            raise TypeError("no config")
    except (ValueError, TypeError, AttributeError) as err:
        raise CorruptEntry(f"{path} is unreadable ({err}); submitting the experiment rewrites it") from None
    return record


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
    plus every analysis' scalar summary as column '<analysis>.<key>' (e.g. faithfulness curves);
    only the entries' summaries are read, not their tables."""
    import pandas as pd
    rows = []
    for epoch, names in cached_epochs(root, exp_id).items():
        row: dict[str, Any] = {"epoch": epoch}
        for name in names:
            entry = load_entry(root, exp_id, epoch, name, tables=False)
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


@contextmanager
def experiment_lock(root: str | Path | None, exp_id: str) -> Iterator[None]:
    """An exclusive lock on one experiment's directory, so two runs of it never train at once."""
    folder = experiment_dir(root, exp_id)
    folder.mkdir(parents=True, exist_ok=True)
    with index.file_lock(folder / ".lock"):
        yield


def lock_held(root: str | Path | None, exp_id: str) -> bool:
    """Whether some process holds `experiment_lock` on `exp_id` now (a live run of it)."""
    path = experiment_dir(root, exp_id) / ".lock"
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False
