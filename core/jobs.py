"""Training jobs: the class's queue, kept on disk, run outside the web server.

A page never trains. It submits a config and gets a job id; the queue keeps every job, its
state and its history in SQLite beside the model store (``<store>/queue.sqlite3``), so a
refresh, a lost websocket or a restart of the server loses nothing. One process at a time
dispatches (whichever holds ``<store>/queue.lock``: the Streamlit server, or the Gradio tab
running alone); it hands each job to an executor:

- ``LocalWorkers``: worker processes on this machine (``python -m core.worker``), one run
  each at a time. A run the kernel kills (out of memory, ``kill -9``) ends as ``failed`` with
  one line saying why; the server and the rest of the queue carry on.
- ``RayWorkers``: with ``CNN_CLASSROOM_RAY=ADDRESS``, Ray tasks on that cluster, several at
  once, on GPU nodes when there is a free GPU. Same updates, same pages.

Fair share: the next job is the oldest of the student whose last run started longest ago
(round robin over owners), so one student's many jobs never block another's single one. A
student may have at most ``CNN_CLASSROOM_MAX_QUEUED`` (default 5) submissions waiting or
running (a sweep or an ablation set counts once, with at most ``CNN_CLASSROOM_MAX_VARIANTS``,
default 64, runs). After a restart, jobs that were running are queued again in their old
place and say so. Each job has an owner (a browser's private token): listings show only
the owner's jobs, and only the owner can stop one.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from filelock import FileLock, Timeout

from core import UserError
from core.config import RunConfig, env_int, from_dict, to_dict
from core.sqlite import Database
from core.store import Store

STATES = ("queued", "waiting", "running", "done", "diverged", "stopped", "failed")
FINAL = ("done", "diverged", "stopped", "failed")
LIVE = ("queued", "waiting", "running")
MAX_QUEUED_ENV, MAX_VARIANTS_ENV = "CNN_CLASSROOM_MAX_QUEUED", "CNN_CLASSROOM_MAX_VARIANTS"
RAY_ENV = "CNN_CLASSROOM_RAY"  # HOST:PORT of a Ray head: jobs run as Ray tasks there
RAY_SLOTS_ENV, RAY_CPUS_ENV = "CNN_CLASSROOM_RAY_SLOTS", "CNN_CLASSROOM_RAY_CPUS"
MAX_QUEUED, MAX_VARIANTS = 5, 64
KEEP = 5000  # finished jobs remembered (the oldest are forgotten first)
STOP_GRACE = 20.0  # seconds a running job has to stop at its next batch before it is killed
REQUEUED = "interrupted by a restart of the server: queued again in its place"
PARTIAL = "stopped: a partial run is not stored"


@dataclass
class Job:
    """One job as the database holds it (a copy: re-read it with ``JobQueue.get``)."""

    id: str
    owner: str
    cfg: RunConfig
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    history: dict = field(default_factory=dict)  # the trainer's history, growing live
    progress: dict = field(default_factory=dict)  # last batch: epoch, batch, eta, speed...
    # Autoencoders: {"epoch": e, "originals", "reconstructions": uint8 (K, C, H, W)} after
    # each epoch, for a page to show the reconstructions improving.
    preview: dict = field(default_factory=dict)
    key: str = ""  # the run id it will have (cfg is already planned: core.runs.plan)
    run_id: str | None = None  # set when the run is in the store
    cache_hit: bool = False
    message: str = ""  # divergence reason, error or restart note, for people
    version: int = 0  # bumped on every update: readers redraw only when it changed
    map_after: bool = True  # compute the test set's t-SNE map once the run is stored
    live_map: bool = False  # map the test set's features after every epoch (core.embed.LiveMap)
    group: str | None = None  # the sweep or ablation set it belongs to
    attempts: int = 0  # starts so far (a restart re-queues a running job)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL

    def snapshot(self) -> dict:
        """A plain copy for a page to render."""
        return {
            "id": self.id,
            "state": self.state,
            "model": self.cfg.model.name,
            "history": {k: list(v) for k, v in self.history.items()},
            "progress": dict(self.progress),
            "preview": dict(self.preview),
            "run_id": self.run_id,
            "cache_hit": self.cache_hit,
            "message": self.message,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "version": self.version,
            "attempts": self.attempts,
        }


# -- the database ---------------------------------------------------------------------------
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    grp TEXT,
    cfg TEXT NOT NULL,                      -- to_dict(RunConfig) as JSON, as planned
    key TEXT NOT NULL,                      -- its run id: two jobs of one key never both run
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    run_id TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    map_after INTEGER NOT NULL DEFAULT 1,
    live_map INTEGER NOT NULL DEFAULT 0,    -- map the features after every epoch
    stop INTEGER NOT NULL DEFAULT 0,        -- the owner asked it to stop
    attempts INTEGER NOT NULL DEFAULT 0,    -- updates from an older attempt are ignored
    version INTEGER NOT NULL DEFAULT 0,
    progress TEXT NOT NULL DEFAULT '{}',
    history TEXT NOT NULL DEFAULT '{}',
    preview BLOB
);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, state);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""


def _pack_preview(preview: dict) -> bytes | None:
    """A task's preview (an epoch number and numpy arrays) as one .npz blob."""
    if not preview:
        return None
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **preview)
    return buf.getvalue()


def _unpack_preview(blob: bytes | None) -> dict:
    if not blob:
        return {}
    import numpy as np

    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: int(z[k]) if k == "epoch" else z[k] for k in z.files}


class JobDB(Database):
    """The queue's SQLite file (core.sqlite: one connection per thread, WAL, every write one
    short transaction)."""

    def __init__(self, root: str | Path):
        super().__init__(Path(root) / "queue.sqlite3", SCHEMA)
        with self._tx() as con:  # a queue kept by an older version: its new column
            columns = {r["name"] for r in con.execute("PRAGMA table_info(jobs)")}
            if "live_map" not in columns:
                con.execute("ALTER TABLE jobs ADD COLUMN live_map INTEGER NOT NULL DEFAULT 0")

    @staticmethod
    def _job(row: sqlite3.Row, full: bool = True) -> Job:
        return Job(
            id=row["id"], owner=row["owner"], cfg=from_dict(json.loads(row["cfg"])),
            key=row["key"], state=row["state"], created=row["created"], started=row["started"],
            finished=row["finished"], run_id=row["run_id"], cache_hit=bool(row["cache_hit"]),
            message=row["message"], version=row["version"], map_after=bool(row["map_after"]),
            live_map=bool(row["live_map"]),
            group=row["grp"], attempts=row["attempts"],
            history=json.loads(row["history"]) if full else {},
            progress=json.loads(row["progress"]),
            preview=_unpack_preview(row["preview"]) if full else {},
        )  # fmt: skip

    # -- reading -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self):
        """Several reads from one state of the queue: a read transaction, whose reads in WAL
        mode all see the same commit while workers and other servers write meanwhile."""
        con = self._con()
        con.execute("BEGIN")
        try:
            yield
        finally:
            con.execute("COMMIT")

    def get(self, job_id: str) -> Job | None:
        row = self._con().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def owned(self, owner: str, limit: int = 200) -> list[Job]:
        rows = (
            self._con()
            .execute("SELECT * FROM jobs WHERE owner = ? ORDER BY seq DESC LIMIT ?", (owner, limit))
            .fetchall()
        )
        return [self._job(r) for r in rows]

    def rows(self, states: tuple[str, ...], columns: str = "id, seq, owner, key, state, "
             "attempts, stop, started") -> list[sqlite3.Row]:  # fmt: skip
        marks = ",".join("?" * len(states))
        return (
            self._con()
            .execute(f"SELECT {columns} FROM jobs WHERE state IN ({marks}) ORDER BY seq", states)
            .fetchall()
        )

    def last_starts(self) -> dict[str, float]:
        rows = (
            self._con()
            .execute(
                "SELECT owner, MAX(started) AS t FROM jobs WHERE started IS NOT NULL GROUP BY owner"
            )
            .fetchall()
        )
        return {r["owner"]: r["t"] for r in rows}

    def stop_requested(self, job_id: str) -> bool:
        row = self._con().execute("SELECT stop FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is None or bool(row["stop"])

    # -- writing -----------------------------------------------------------------------------
    def insert(self, jobs: list[Job], max_live: int) -> None:
        """Add ``jobs`` (one submission) unless their owner already has ``max_live``
        submissions waiting or running."""
        owner = jobs[0].owner
        with self._tx() as con:
            (live,) = con.execute(
                "SELECT COUNT(DISTINCT COALESCE(grp, id)) FROM jobs WHERE owner = ? AND "
                "state IN ('queued', 'waiting', 'running')", (owner,)
            ).fetchone()  # fmt: skip
            if live >= max_live:
                raise QueueFull(max_live)
            con.executemany(
                "INSERT INTO jobs (id, owner, grp, cfg, key, state, created, map_after, "
                "live_map) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                [(j.id, j.owner, j.group, json.dumps(to_dict(j.cfg)), j.key, j.created,
                  int(j.map_after), int(j.live_map)) for j in jobs],
            )  # fmt: skip

    def claim(self, job_id: str) -> int | None:
        """Mark a queued job running; its new attempt number (None if it is no longer
        queued: stopped meanwhile)."""
        with self._tx() as con:
            cur = con.execute(
                "UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1, "
                "version = version + 1 WHERE id = ? AND state = 'queued'", (time.time(), job_id)
            )  # fmt: skip
            if cur.rowcount == 0:
                return None
            return con.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

    def update(self, job_id: str, attempt: int, update: dict) -> bool:
        """Write one update of ``attempt``; False when the job moved on (stopped, re-queued
        or finished by someone else): the writer's attempt is then no longer wanted."""
        state = update["state"]
        sets = {"state": state, "version": None}
        for name in ("message", "run_id"):
            if name in update:
                sets[name] = update[name]
        if "cache_hit" in update:
            sets["cache_hit"] = int(update["cache_hit"])
        if "progress" in update:
            sets["progress"] = json.dumps(update["progress"])
        if "history" in update:
            sets["history"] = json.dumps(update["history"])
        if update.get("preview"):
            sets["preview"] = _pack_preview(update["preview"])
        if state in FINAL:
            sets["finished"] = time.time()
        assignments = ", ".join("version = version + 1" if k == "version" else f"{k} = ?"
                                for k in sets)  # fmt: skip
        values = [v for k, v in sets.items() if k != "version"]
        with self._tx() as con:
            cur = con.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? AND attempts = ? AND state IN "
                "('waiting', 'running')", (*values, job_id, attempt)
            )  # fmt: skip
            return cur.rowcount > 0

    def finish_queued(self, job_id: str, state: str, message: str, **extra) -> bool:
        """End a job that never started (stopped while waiting, answered from the store)."""
        sets = {"state": state, "message": message, "finished": time.time(), **extra}
        assignments = ", ".join(f"{k} = ?" for k in sets)
        with self._tx() as con:
            cur = con.execute(
                f"UPDATE jobs SET {assignments}, version = version + 1 WHERE id = ? AND "
                "state = 'queued'", (*sets.values(), job_id)
            )  # fmt: skip
            return cur.rowcount > 0

    def request_stop(self, job_id: str, owner: str) -> bool:
        with self._tx() as con:
            row = con.execute("SELECT state FROM jobs WHERE id = ? AND owner = ?",
                              (job_id, owner)).fetchone()  # fmt: skip
            if row is None or row["state"] in FINAL:
                return False
            if row["state"] == "queued":
                con.execute("UPDATE jobs SET state = 'stopped', message = ?, finished = ?, "
                            "stop = 1, version = version + 1 WHERE id = ?",
                            ("stopped before it started", time.time(), job_id))  # fmt: skip
            else:
                con.execute("UPDATE jobs SET stop = 1, version = version + 1 WHERE id = ?",
                            (job_id,))  # fmt: skip
            return True

    def fail(self, job_id: str, attempt: int, message: str) -> None:
        self.update(job_id, attempt, {"state": "failed", "message": message})

    def requeue_running(self) -> int:
        """Jobs left running by a server that died: queued again, in their old place (their
        start forgotten, so fair share puts their owners first: they already waited)."""
        with self._tx() as con:
            cur = con.execute(
                "UPDATE jobs SET state = 'queued', message = ?, progress = '{}', "
                "history = '{}', preview = NULL, started = NULL, version = version + 1 "
                "WHERE state IN ('running', 'waiting')", (REQUEUED,)
            )  # fmt: skip
            return cur.rowcount

    def forget_old(self, keep: int = KEEP) -> None:
        with self._tx() as con:
            con.execute(
                "DELETE FROM jobs WHERE state IN ('done', 'diverged', 'stopped', 'failed') AND "
                "seq NOT IN (SELECT seq FROM jobs WHERE state IN ('done', 'diverged', "
                "'stopped', 'failed') ORDER BY seq DESC LIMIT ?)", (keep,)
            )  # fmt: skip


@dataclass
class Request:
    """What ``JobQueue.request`` did: the jobs it queued, and how many runs it left alone
    because they were stored already or already waiting or running for their owner."""

    queued: list[Job]
    stored: int
    pending: int
    run_ids: list[str] = field(default_factory=list)  # every run asked for, as planned


@dataclass
class RunState:
    """One run of a set (a sweep, a paper's table) as its owner sees it."""

    cfg: RunConfig  # as planned
    run_id: str
    meta: dict | None  # the stored run's metadata, when it is stored
    job: Job | None  # the owner's latest job for it


class QueueFull(UserError):
    def __init__(self, limit: int):
        super().__init__(f"you already have {limit} runs waiting or running: wait for one to "
                         "finish, or stop one")  # fmt: skip


def fair_order(queued: list, running_owners: list[str], last_start: dict[str, float]) -> list:
    """Queued rows (with ``owner``, in submission order) in the order they will start: round
    robin over owners, the owner whose last run started longest ago first (never: first of
    all), an owner with a run going after those without."""
    mine: dict[str, deque] = defaultdict(deque)
    for row in queued:
        mine[row["owner"]].append(row)
    running = defaultdict(int)
    for owner in running_owners:
        running[owner] += 1
    turn = {o: (running[o], last_start.get(o, float("-inf")), q[0]["seq"]) for o, q in mine.items()}
    clock = max([time.time(), *last_start.values()])
    order = []
    while mine:
        owner = min(mine, key=turn.__getitem__)
        order.append(mine[owner].popleft())
        clock += 1
        if mine[owner]:
            turn[owner] = (running[owner] + 1, clock, mine[owner][0]["seq"])
        else:
            del mine[owner]
    return order


# -- executors ------------------------------------------------------------------------------
def _one_line_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = "out of memory, or killed by hand" if -code == signal.SIGKILL else "a signal"
        return f"the training process was killed ({name}: {why})"
    return f"the training process ended unexpectedly (exit status {code})"


class _Proc:
    """One local worker process and what it is doing."""

    def __init__(self, root: Path, index: int, threads: int | None, maps: bool,
                 wake: threading.Event):  # fmt: skip
        from core.device import THREADS_ENV

        logs = root / "queue-logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = open(logs / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed below, the child's
        env = dict(os.environ)
        if threads:
            env[THREADS_ENV] = str(threads)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.worker", "--store", str(root),
             "--parent", str(os.getpid()), *([] if maps else ["--no-maps"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
            cwd=Path(__file__).resolve().parent.parent, text=True, bufsize=1,
        )  # fmt: skip
        log.close()
        self.ready = False
        self.job: tuple[str, int] | None = None  # (job id, attempt)
        self.error = ""  # the worker's own one-line complaint (warming up failed)
        self.ended = threading.Event()
        self._wake = wake  # the dispatcher's: a worker free or gone is news for it
        threading.Thread(target=self._read, daemon=True, name=f"worker-{index}-out").start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if line == "ready":
                self.ready = True
            elif line.startswith("done "):
                self.job = None
            elif line.startswith("error:"):
                self.error = line.removeprefix("error:").strip()
            self._wake.set()
        self.proc.wait()
        self.ended.set()
        self._wake.set()

    def give(self, job_id: str, attempt: int) -> None:
        self.job = (job_id, attempt)
        self.proc.stdin.write(f"{job_id} {attempt}\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()


class LocalWorkers:
    """``slots`` worker processes on this machine (default one: a run uses every core)."""

    def __init__(self, db: JobDB, root: Path, slots: int = 1, threads: int | None = None,
                 maps: bool = True, warm: bool = True,
                 wake: threading.Event | None = None):  # fmt: skip
        self.db, self.root, self.slots, self.threads = db, root, slots, threads
        self.wake = wake or threading.Event()
        self.maps = maps
        self.warm = warm  # keep a started worker ready before anyone presses Start
        self._procs: list[_Proc | None] = [None] * slots
        self._backoff = [0.0] * slots

    def _idle(self) -> list[_Proc]:
        """Started, warmed up, alive and without a job."""
        alive = [p for p in self._procs if p is not None and not p.ended.is_set()]
        return [p for p in alive if p.ready and p.job is None]

    def free(self, wanted: bool = True) -> int:
        """Workers ready for a job now (missing ones are started when ``wanted`` or warm)."""
        if wanted or self.warm:
            self._respawn()
        return len(self._idle())

    def start(self, job_id: str, attempt: int) -> None:
        self._idle()[0].give(job_id, attempt)

    def busy(self) -> set[str]:
        """The jobs its workers are running."""
        return {p.job[0] for p in self._procs if p is not None and p.job}

    def kill(self, job_id: str) -> None:
        for p in self._procs:
            if p is not None and p.job and p.job[0] == job_id:
                p.kill()

    def reap(self) -> list[tuple[str, int, str]]:
        """(job id, attempt, why) for each job whose worker died under it; dead workers are
        replaced (after a pause when one could not even start)."""
        lost = []
        for i, p in enumerate(self._procs):
            if p is None or not p.ended.is_set():
                continue
            if p.job is not None:
                lost.append((*p.job, _one_line_exit(p.proc.returncode)))
            elif not p.ready:  # it died warming up: say why, once, on the next job
                why = p.error or _one_line_exit(p.proc.returncode)
                lost.append(("", 0, f"the training worker could not start: {why}"))
                self._backoff[i] = time.monotonic() + 5.0
            self._procs[i] = None
        return lost

    def _respawn(self) -> None:
        for i, p in enumerate(self._procs):
            if p is None and time.monotonic() >= self._backoff[i]:
                self._procs[i] = _Proc(self.root, i, self.threads, self.maps, self.wake)

    def close(self) -> None:
        for p in self._procs:
            if p is not None:
                with contextlib.suppress(OSError):
                    p.proc.stdin.close()
                p.kill()
        for p in self._procs:
            if p is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.proc.wait(10)


class RayWorkers:
    """Jobs as Ray tasks on the cluster at ``address`` (a ``ray start --head``): several at
    once, each on ``cpus`` CPUs, or on a GPU when the cluster has one free. Updates stream
    back (a Ray streaming generator) and are written here; so are the trained weights, into
    this server's store, so the nodes need no shared disk."""

    def __init__(self, db: JobDB, store: Store, address: str, slots: int | None = None,
                 cpus: int | None = None):  # fmt: skip
        from core.sweep import connect_ray

        self.cpus = cpus or env_int(RAY_CPUS_ENV, 1)
        connect_ray(address, self.cpus)  # one line when Ray is missing or unreachable
        import ray

        self.ray, self.db, self.store = ray, db, store
        total = int(ray.cluster_resources().get("CPU", 1))
        self.slots = slots or env_int(RAY_SLOTS_ENV, max(1, total // self.cpus))
        self._task = ray.remote(num_returns="streaming")(_ray_task)
        self._active: dict[str, tuple[int, object]] = {}  # job id -> (attempt, generator)
        self._lock = threading.Lock()

    def free(self, wanted: bool = True) -> int:
        with self._lock:
            return self.slots - len(self._active)

    def busy(self) -> set[str]:
        with self._lock:
            return set(self._active)

    def start(self, job_id: str, attempt: int) -> None:
        job = self.db.get(job_id)
        gpus = 1 if self.ray.available_resources().get("GPU", 0) >= 1 else 0
        from core.runs import starting_runs

        inputs = {run: self.store.export_files(run) for run in starting_runs(job.cfg)}
        gen = self._task.options(num_cpus=self.cpus, num_gpus=gpus).remote(
            to_dict(job.cfg), job.key, inputs, job.map_after, self.cpus, job.live_map)  # fmt: skip
        with self._lock:
            self._active[job_id] = (attempt, gen)
        threading.Thread(target=self._follow, args=(job_id, attempt, gen), daemon=True,
                         name=f"ray-{job_id}").start()  # fmt: skip

    def _follow(self, job_id: str, attempt: int, gen) -> None:
        """Write the task's updates as they come; stop it when its owner asks."""
        try:
            for ref in gen:
                update = self.ray.get(ref)
                if files := update.pop("files", None):
                    self.store.import_files(update["run_id"], files)
                    self.store.import_derived(update["run_id"], update.pop("derived", {}))
                if not self.db.update(job_id, attempt, update) or (
                    self.db.stop_requested(job_id) and update["state"] not in FINAL
                ):
                    self.ray.cancel(gen)
                    self.db.update(job_id, attempt, {"state": "stopped", "message": PARTIAL})
                    return
        except Exception as e:  # noqa: BLE001 - a lost node, a cancelled or failed task
            from core.worker import one_line

            self.db.fail(job_id, attempt, f"the Ray task failed: {one_line(e)}")
        finally:
            with self._lock:
                self._active.pop(job_id, None)

    def kill(self, job_id: str) -> None:
        with self._lock:
            gen = self._active.get(job_id, (0, None))[1]
        if gen is not None:
            self.ray.cancel(gen, force=True)

    def reap(self) -> list[tuple[str, int, str]]:
        return []  # _follow writes every ending itself

    def close(self) -> None:
        with self._lock:
            gens = [g for _, g in self._active.values()]
        for gen in gens:
            with contextlib.suppress(Exception):
                self.ray.cancel(gen, force=True)
        self.ray.shutdown()


def _ray_task(cfg_dict, key, inputs, map_after, threads, live_map=False):
    from core.worker import ray_task

    yield from ray_task(cfg_dict, key, inputs, map_after, threads, live_map)


# -- the queue ------------------------------------------------------------------------------
class JobQueue:
    """The pages' side of the queue, and (in one process per store) its dispatcher.

    ``slots``: runs at once on this machine (default one: a run already uses every core);
    ``ray_address``: run the jobs on that Ray cluster instead (default: $CNN_CLASSROOM_RAY).
    """

    instances: ClassVar[weakref.WeakSet] = weakref.WeakSet()  # live queues (tests end them)

    def __init__(
        self, store: Store | None = None, slots: int = 1, precompute_maps: bool = True,
        ray_address: str | None = None, dispatch: bool = True,
        max_queued: int | None = None, max_variants: int | None = None, warm: bool = False,
    ):  # fmt: skip
        self.store = store or Store()
        self.db = JobDB(self.store.root)
        self.slots = max(1, slots)
        self.precompute_maps = precompute_maps
        self.warm = warm  # start a worker before the first job (the app; tests wait)
        self.ray_address = ray_address if ray_address is not None else os.environ.get(RAY_ENV)
        self.max_queued = max_queued or env_int(MAX_QUEUED_ENV, MAX_QUEUED)
        self.max_variants = max_variants or env_int(MAX_VARIANTS_ENV, MAX_VARIANTS)
        self.executor = None  # LocalWorkers or RayWorkers, once this process dispatches
        self._leader = FileLock(self.store.root / "queue.lock")
        self._wake, self._closing = threading.Event(), threading.Event()
        self._stopping: dict[str, float] = {}  # job id -> when its stop was first seen
        self._thread = None
        JobQueue.instances.add(self)
        if dispatch:
            self._thread = threading.Thread(target=self._dispatch, daemon=True,
                                            name="job-dispatcher")  # fmt: skip
            self._thread.start()
            # A worker must not outlive this process (it would train on unsupervised).
            atexit.register(self.shutdown)

    # -- the pages' side -------------------------------------------------------------------
    def submit(self, cfg: RunConfig, owner: str, map_after: bool = True) -> Job:
        """Queue a run (validated first: a bad config raises UserError here, not later)."""
        return self.submit_many([cfg], owner, map_after=map_after)[0]

    def submit_many(self, cfgs: list[RunConfig], owner: str, map_after: bool = True) -> list[Job]:
        """Queue several runs as one submission (a sweep, an ablation set): they count once
        against the owner's cap, and at most ``max_variants`` of them are taken."""
        return self._queue(self._plans(cfgs), owner, map_after)

    def request(self, cfgs: list[RunConfig], owner: str, map_after: bool = True,
                live_map: bool = False) -> Request:  # fmt: skip
        """The runs of ``cfgs`` that are neither stored nor already waiting or running for
        ``owner``, queued as one submission; each config is planned once."""
        from core.runs import plan

        self._cap(len(cfgs))
        live = {j.key for j in self.jobs(owner) if not j.is_final}
        todo, stored, pending, run_ids = {}, 0, 0, []
        for cfg in cfgs:
            planned = plan(cfg, self.store)
            run_ids.append(planned.run_id)
            if self.store.meta(planned.run_id) is not None:
                stored += 1
            elif planned.run_id in live or planned.run_id in todo:
                pending += 1
            else:
                todo[planned.run_id] = planned
        queued = self._queue(self._checked(list(todo.values())), owner, map_after, live_map)
        return Request(queued, stored, pending, run_ids)

    def states(self, cfgs: list[RunConfig], owner: str) -> list[RunState]:
        """Where each run of ``cfgs`` stands for ``owner``: stored (its metadata), or the
        owner's latest job for it, or neither."""
        from core.runs import plan

        latest = {j.key: j for j in sorted(self.jobs(owner), key=lambda j: j.created)}
        out = []
        for cfg in cfgs:
            planned = plan(cfg, self.store)
            meta = self.store.meta(planned.run_id)
            out.append(RunState(planned.cfg, planned.run_id, meta, latest.get(planned.run_id)))
        return out

    def _cap(self, count: int) -> None:
        if count > self.max_variants:
            raise UserError(f"{count} runs in one go; the limit is {self.max_variants}")

    def _plans(self, cfgs: list[RunConfig]) -> list:
        from core.runs import plan

        self._cap(len(cfgs))
        return self._checked([plan(cfg, self.store) for cfg in cfgs])

    @staticmethod
    def _checked(plans: list) -> list:
        """``plans``, each within the class's caps on model size and memory (UserError)."""
        from core.runs import check_size

        for planned in plans:
            check_size(planned.cfg)
        return plans

    def _queue(self, plans: list, owner: str, map_after: bool,
               live_map: bool = False) -> list[Job]:  # fmt: skip
        if not plans:
            return []
        group = uuid.uuid4().hex[:12] if len(plans) > 1 else None
        jobs = [Job(uuid.uuid4().hex[:12], owner, p.cfg, key=p.run_id, map_after=map_after,
                    live_map=live_map, group=group) for p in plans]  # fmt: skip
        self.db.insert(jobs, self.max_queued)
        self._wake.set()
        return jobs

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, if it exists and (when ``owner`` is given) belongs to that owner."""
        if not isinstance(job_id, str) or not job_id:
            return None
        job = self.db.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return job

    def jobs(self, owner: str) -> list[Job]:
        """The owner's jobs, newest first."""
        return self.db.owned(owner)

    def count(self, states: tuple[str, ...] = STATES) -> int:
        """Jobs in these states (all by default), everyone's."""
        return len(self.db.rows(states, "id"))

    def position(self, job_id: str) -> int:
        """1 for the next job to start, 2 for the one after...; 0 when not queued."""
        with self.db.reading():  # a job starting between two reads would count twice
            queued = self.db.rows(("queued",))
            running = [r["owner"] for r in self.db.rows(("running", "waiting"))]
            starts = self.db.last_starts()
        for place, row in enumerate(fair_order(queued, running, starts), 1):
            if row["id"] == job_id:
                return place
        return 0

    def stop(self, job_id: str, owner: str) -> bool:
        """Stop a job: a waiting one at once, a running one at its next batch."""
        stopped = self.db.request_stop(job_id, owner)
        self._wake.set()
        return stopped

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop dispatching and end this process's workers. Jobs they were running stay
        "running" in the database: the next dispatcher queues them again."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.2) -> Job:
        """Block until the job is final (or ``timeout`` seconds passed); the job then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.db.get(job_id)
            if job is None or job.is_final:
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            time.sleep(poll)

    # -- the dispatcher --------------------------------------------------------------------
    def _dispatch(self) -> None:
        while not self._closing.is_set():
            if self.executor is None:
                try:
                    self._leader.acquire(timeout=0)
                except Timeout:  # another process dispatches; take over if it goes
                    self._closing.wait(1.0)
                    continue
                try:
                    self._lead()
                except Exception as e:  # noqa: BLE001 - no executor: say so on the next job
                    self._leader.release()
                    self._report_broken(e)
                    continue
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - one bad tick must not end dispatching
                import traceback

                traceback.print_exc()
            self._wake.wait(0.25)
            self._wake.clear()
        if self.executor is not None:
            self.executor.close()
            self.executor = None
            self._leader.release()

    def _lead(self) -> None:
        """Became the dispatcher: queue again what a dead dispatcher left running, and
        start the executor."""
        self.db.requeue_running()
        self.db.forget_old()
        if self.ray_address:
            self.executor = RayWorkers(self.db, self.store, self.ray_address)
        else:
            self.executor = LocalWorkers(self.db, self.store.root, self.slots,
                                         maps=self.precompute_maps, warm=self.warm,
                                         wake=self._wake)  # fmt: skip

    def _fail_next(self, why: str) -> None:
        """The next queued job ends failed with ``why``: no job can run, and one says so
        instead of every student waiting without a word."""
        for row in self.db.rows(("queued",))[:1]:
            self.db.finish_queued(row["id"], "failed", why)

    def _report_broken(self, e: Exception) -> None:
        from core.worker import one_line

        self._fail_next(f"cannot run jobs: {one_line(e)}")
        self._closing.wait(5.0)

    def _tick(self) -> None:
        ex = self.executor
        for job_id, attempt, why in ex.reap():
            if job_id:
                self.db.fail(job_id, attempt, why)
            else:  # a worker that could not start
                self._fail_next(why)
        running = self.db.rows(("running", "waiting"))
        self._enforce_stops(ex, running)
        busy = ex.busy()
        for row in running:  # claimed here, but its worker has no record of it: lost
            if row["id"] not in busy:
                self.db.fail(row["id"], row["attempts"], "the training process was lost")
        in_flight = {r["key"] for r in running}
        queued = [r for r in self.db.rows(("queued",)) if not self._answer_from_store(r)]
        free = ex.free(bool(queued))
        order = fair_order(queued, [r["owner"] for r in running], self.db.last_starts())
        for row in order:
            if free <= 0:
                break
            if row["key"] in in_flight:  # the same run is training: it will be a cache hit
                continue
            attempt = self.db.claim(row["id"])
            if attempt is None:
                continue
            ex.start(row["id"], attempt)
            in_flight.add(row["key"])
            free -= 1

    def _answer_from_store(self, row) -> bool:
        """A queued run the store already has ends at once as a cache hit, no worker (twenty
        students starting the same preset wait for one training, not twenty)."""
        try:
            meta = self.store.meta(row["key"])
        except ValueError:
            return False
        if meta is None:
            return False
        return self.db.finish_queued(row["id"], "done", "", run_id=row["key"], cache_hit=1,
                                     history=json.dumps(meta["history"]))  # fmt: skip

    def _enforce_stops(self, ex, running: list) -> None:
        """A running job asked to stop gets STOP_GRACE seconds to do it at its next batch
        (a worker waiting on another process's lock cannot), then its process is killed."""
        now = time.monotonic()
        wanted = {r["id"]: r for r in running if r["stop"]}
        for job_id in list(self._stopping):
            if job_id not in wanted:
                del self._stopping[job_id]
        for job_id, row in wanted.items():
            first = self._stopping.setdefault(job_id, now)
            if now - first > STOP_GRACE:
                self.db.update(job_id, row["attempts"], {"state": "stopped", "message": PARTIAL})
                ex.kill(job_id)
