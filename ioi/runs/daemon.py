"""The warm job daemon: jobs start from a process that has already imported torch and transformers.

A fresh process spends seconds importing torch, transformers and TransformerLens (~5 s on an idle
2-core machine, 15–25 s on a busy one) before a job can take its first training step. So the first
`submit` on a cache root starts a daemon (``python -m ioi.runs.jobs --daemon ROOT KEY``, its own
session: it outlives the dashboard or the shell that started it) which imports them once, then
forks, for every job handed to it, a child that becomes that job's supervisor
(:func:`ioi.runs.jobs.supervise`, which forks the job's worker in turn). Forking happens after the
imports and before torch has run anything, so no thread pool or CUDA context is ever inherited:
each worker sets its own thread count on its first use of torch, exactly as a fresh process would,
and trains to the same bits. After ``$IOI_JOB_DAEMON_IDLE`` seconds (default 600) with no request
and no child alive, the daemon exits; the next submit starts another.

One daemon serves one cache root *and* one environment: its address (a Linux abstract Unix
socket, so nothing is left on disk when it dies) is a hash of the root, the Python executable, the
environment variables and the stamps of the `ioi` package's source files. A submit from another
environment or after an edit of the code gets a daemon of its own, so a job never runs with
settings or code other than its submitter's. Only processes of the same user are served.

The handover: the submitter connects, records the daemon's pid in the job's row (read from the
socket's peer credentials), sends the job id and waits for a one-line acknowledgement, which a
warming daemon sends at once too (its imports run in a thread while the main thread answers, and
jobs received meanwhile are forked once the imports are done). A daemon that is exiting has closed
its socket first, so the submitter's connection is refused or reset, never silently dropped, and
it starts a new daemon. If the daemon dies before forking, the row's pid is dead and every reader
shows the job as interrupted (resumable), as for any dead supervisor. `$IOI_JOB_DAEMON=0` turns the
daemon off: each job then gets a fresh supervisor process, as before.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

VOLATILE = frozenset({"PYTEST_CURRENT_TEST", "PWD", "OLDPWD", "_", "SHLVL", "COLUMNS", "LINES"})
"""Environment variables that differ between calls of one shell or test run and change no job."""
START_WAIT = 20.0
"""Seconds a submit waits for a daemon it started to listen (it binds before importing anything)."""
ACK_WAIT = 10.0
"""Seconds a submit waits for the acknowledgement; past that the daemon (alive, overloaded) still
holds the request, and the job's row already names its pid."""


def enabled() -> bool:
    """Whether jobs go through the warm daemon ($IOI_JOB_DAEMON, default 1)."""
    return os.environ.get("IOI_JOB_DAEMON", "1") != "0"


def idle_after() -> float:
    """Seconds without requests or children after which a daemon exits ($IOI_JOB_DAEMON_IDLE)."""
    return float(os.environ.get("IOI_JOB_DAEMON_IDLE", "600"))


def code_stamp() -> list[tuple[str, int, int]]:
    """(path, mtime, size) of every source file of the `ioi` package: an edit makes a new daemon."""
    package = Path(__file__).resolve().parents[1]
    return [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(package.rglob("*.py"))]


def daemon_key(root: Path) -> str:
    """The hash naming the daemon that may run jobs of `root` for this process."""
    env = sorted((k, v) for k, v in os.environ.items() if k not in VOLATILE)
    text = repr((str(root), sys.executable, env, code_stamp()))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def address(key: str) -> str:
    return f"\0ioi-jobs-{key}"


def _peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket."""
    pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def _connect(key: str, wait: float = 0.0) -> socket.socket | None:
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address(key))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)


def hand_over(root: Path, job_id: str, record_pid: Callable[[int], None], command: list[str]) -> bool:
    """Give job `job_id` of `root` to this environment's daemon, starting one (`command` + [key],
    detached, output in root/jobs/daemon-KEY.log) if none listens. `record_pid(pid)` writes the
    daemon's pid to the job's row before the job is sent. False if no daemon could be reached."""
    key = daemon_key(root)
    for _ in range(3):
        sock = _connect(key)
        if sock is None:
            _start(root, key, command)
            sock = _connect(key, wait=START_WAIT)
        if sock is None:
            return False
        with sock:
            pid, _ = _peer(sock)
            record_pid(pid)
            try:
                sock.sendall(f"{job_id}\n".encode())
                sock.settimeout(ACK_WAIT)
                if sock.recv(16).startswith(b"ok"):
                    return True
            except TimeoutError:
                return True  # alive and holding the request: it forks the job when it gets to it
            except OSError:
                pass
        time.sleep(0.05)  # refused or reset: that daemon was exiting; start another
    return False


def spawn_detached(command: list[str], log: Path) -> int:
    """Start `command` in a session of its own, its output appended to `log`, and return its pid.
    It outlives this process, so its Popen is dropped unwaited: without the ResourceWarning ("subprocess
    N is still running") Python gives such a drop, which the CLI would print as a warning line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        pid = proc.pid
        del proc
    return pid


def _start(root: Path, key: str, command: list[str]) -> None:
    spawn_detached([*command, key], root / "jobs" / f"daemon-{key[:12]}.log")


def _import(names: Iterable[str]) -> None:
    """Import `names`, best effort: a module that fails here fails in the job, with its message."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:
            print(f"warning: daemon could not import {name}: {err}", file=sys.stderr, flush=True)


def warm_training() -> None:
    """What a job imports before its first training step. Imports only: nothing here may start a
    torch thread pool or touch a GPU."""
    _import(("torch", "ioi.models.load", "ioi.models.train", "ioi.runs.experiment"))
    try:  # transformers builds its table of weight renamings on the first load: pure Python, 0.7 s
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        get_checkpoint_conversion_mapping("gpt2")
    except Exception:
        pass


def warm_analyses() -> None:
    """What the analyses import: TransformerLens, pandas and the built-in analyses' modules."""
    from ioi.methods.analyses import BUILTIN

    _import(("transformer_lens", "pandas", *sorted({a.module for a in BUILTIN.values()})))


WARM_STAGES = (warm_training, warm_analyses)
"""Run one after the other, each in a thread; jobs that arrived are forked between two stages."""


def serve(
    root: Path,
    key: str,
    run: Callable[[str], None],
    log_of: Callable[[str], Path],
    stages: Sequence[Callable[[], None]] = WARM_STAGES,
) -> None:
    """The daemon's loop: run the warm-up `stages` in a thread while answering requests at once;
    fork `run(job_id)` for each request (its output to `log_of(job_id)`) when no stage is running;
    reap children; exit when idle. Returns at once if another daemon has `key`."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address(key))
    except OSError:
        return  # another daemon serves this key
    listener.listen(128)
    todo = list(stages)
    warming = threading.Thread(target=todo.pop(0) if todo else (lambda: None), daemon=True)
    warming.start()
    print(f"{time.strftime('%H:%M:%S')} daemon {os.getpid()} serving {root}", flush=True)
    pending: list[str] = []
    children: set[int] = set()
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([listener], [], [], 0.2 if warming.is_alive() else 1.0)
        if ready:
            job_id = _receive(listener)
            if job_id:
                pending.append(job_id)
            last = time.monotonic()
        if not warming.is_alive():
            warming.join()  # no thread but this one at a fork
            for job_id in pending:
                children.add(_fork(listener, root, job_id, run, log_of(job_id)))
            pending.clear()
            if todo:
                warming = threading.Thread(target=todo.pop(0), daemon=True)
                warming.start()
        children = {c for c in children if not _reaped(c)}
        if children:
            last = time.monotonic()
        elif not pending and time.monotonic() - last > idle_after():
            listener.close()  # connections still queued are reset: their submitters start a new daemon
            print(f"{time.strftime('%H:%M:%S')} daemon {os.getpid()} idle, exiting", flush=True)
            return


def _receive(listener: socket.socket) -> str | None:
    """Accept one request and acknowledge it: its job id, or None (another user's, garbled)."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(5.0)
        try:
            if _peer(conn)[1] != os.getuid():
                return None
            job_id = conn.makefile("rb").readline(64).decode(errors="replace").strip()
        except OSError:
            return None
        if not job_id.isalnum():
            return None
        try:
            conn.sendall(b"ok\n")
        except OSError:
            pass  # the submitter is gone; the job is in its row and still runs
        return job_id


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def _fork(listener: socket.socket, root: Path, job_id: str, run: Callable[[str], None], log: Path) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        listener.close()  # else the address stays taken by this child once the daemon is gone
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(fd, 1), os.dup2(fd, 2)
        os.close(fd)
        run(job_id)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
