"""Background training jobs: the queue the pages submit to and read from.

A page never trains in its own script run. It submits a config and gets a job id; worker
threads run ``train_or_load`` and record its events; the page renders what it reads back, so
navigation, a refresh or a lost websocket do not stop or duplicate a run. Jobs beyond the
worker slots wait in a FIFO queue and can tell their place in it. Each job has an owner (a
browser's private token): listings show only the owner's jobs.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field

from core.config import RunConfig
from core.store import Store

PREVIEW = 8  # test images an autoencoder job reconstructs after each epoch
STATES = ("queued", "waiting", "running", "done", "diverged", "stopped", "failed")
FINAL = ("done", "diverged", "stopped", "failed")


@dataclass
class Job:
    id: str
    owner: str
    cfg: RunConfig
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    history: dict = field(default_factory=dict)  # the trainer's history, growing live
    progress: dict = field(default_factory=dict)  # last BatchEnd: epoch, batch, eta, speed...
    # Autoencoders: {"epoch": e, "originals", "reconstructions": uint8 (K, C, H, W)} after
    # each epoch, for a page to show the reconstructions improving.
    preview: dict = field(default_factory=dict)
    run_id: str | None = None  # set when the run is in the store
    cache_hit: bool = False
    message: str = ""  # divergence reason or error, for people
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    version: int = 0  # bumped on every update: readers redraw only when it changed
    map_after: bool = True  # compute the test set's t-SNE map once the run is stored

    @property
    def is_final(self) -> bool:
        return self.state in FINAL

    def snapshot(self) -> dict:
        """A consistent, plain copy for a page to render."""
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
        }


class JobQueue:
    """Runs jobs on ``slots`` worker threads (default: one; a run already uses every core)."""

    def __init__(
        self, store: Store | None = None, slots: int = 1, keep: int = 200,
        precompute_maps: bool = True,
    ):  # fmt: skip
        self.store = store or Store()
        self.precompute_maps = precompute_maps  # t-SNE of each new run's test features
        self.slots = max(1, slots)
        self.keep = keep  # finished jobs remembered (oldest forgotten first)
        self._jobs: dict[str, Job] = {}
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._order: list[str] = []  # queued job ids, in submission order
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._work, name=f"train-worker-{i}", daemon=True)
            for i in range(self.slots)
        ]
        for w in self._workers:
            w.start()
        # A worker still inside torch when the interpreter exits aborts the process
        # ("terminate called without an active exception"): stop and join them first.
        atexit.register(self.shutdown)

    # -- the pages' side -------------------------------------------------------------------
    def submit(self, cfg: RunConfig, owner: str, map_after: bool = True) -> Job:
        """Queue a run (validated first: a bad config raises UserError here, not later).

        ``map_after=False``: no t-SNE map right after training (an experiment's many runs
        would each wait for one; the Embeddings page computes it if someone asks)."""
        from core.runs import resolve

        resolve(cfg, self.store)
        job = Job(uuid.uuid4().hex[:12], owner, cfg, map_after=map_after)
        with self._lock:
            self._jobs[job.id] = job
            self._order.append(job.id)
            self._forget_old()
        self._pending.put(job)
        return job

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, if it exists and (when ``owner`` is given) belongs to that owner."""
        job = self._jobs.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return job

    def jobs(self, owner: str) -> list[Job]:
        return sorted((j for j in self._jobs.values() if j.owner == owner),
                      key=lambda j: j.created, reverse=True)  # fmt: skip

    def position(self, job_id: str) -> int:
        """1 for the next job to start, 2 for the one after...; 0 when not queued."""
        with self._lock:
            return self._order.index(job_id) + 1 if job_id in self._order else 0

    def stop(self, job_id: str, owner: str) -> bool:
        job = self.get(job_id, owner)
        if job is None or job.is_final:
            return False
        job.stop.set()
        return True

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every job (running ones at their next batch) and wait for the workers."""
        for job in list(self._jobs.values()):
            job.stop.set()
        for _ in self._workers:
            self._pending.put(None)
        for w in self._workers:
            w.join(timeout)

    # -- the workers' side -----------------------------------------------------------------
    @staticmethod
    def _warm_up() -> None:
        """Pay one-off start-up costs before the first student presses Start: importing
        torch and the trainer, torch's first optimizer (it imports torch._dynamo, about a
        second), and loading the default dataset with its normalisation. Without this the
        first run of a server shows its first curve seconds late."""
        import torch

        import core.train  # noqa: F401
        from core import data as datasets
        from core.config import DataConfig

        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], fused=True)
        datasets.load(DataConfig()).mean_std()

    def _work(self) -> None:
        self._warm_up()
        while True:
            job = self._pending.get()
            if job is None:  # shutdown
                return
            with self._lock:
                if job.id in self._order:
                    self._order.remove(job.id)
            if job.stop.is_set():
                self._finish(job, "stopped", "stopped before it started")
                continue
            try:
                self._run(job)
            except Exception as e:  # noqa: BLE001 - a failed job must not kill the worker
                traceback.print_exc()
                self._finish(job, "failed", f"{type(e).__name__}: {e}")

    def _run(self, job: Job) -> None:
        from core.runs import Stored, Waiting, train_or_load
        from core.train import BatchEnd, Diverged, EpochEnd, Finished, reconstruct, to_uint8

        job.state, job.started = "running", time.time()
        job.version += 1
        originals = self._preview_images(job.cfg)
        for event in train_or_load(job.cfg, self.store, job.stop):
            if isinstance(event, Waiting):
                job.state = "waiting"
            elif isinstance(event, BatchEnd):
                job.state = "running"
                job.progress = {
                    "epoch": event.epoch, "batch": event.batch, "batches": event.batches,
                    "epochs": job.cfg.train.epochs, "loss": event.loss, "lr": event.lr,
                    "images_per_second": event.images_per_second, "eta": event.eta_seconds,
                }  # fmt: skip
                self._append(job, "batch_step", event.step)
                self._append(job, "batch_loss", event.loss)
            elif isinstance(event, EpochEnd):
                for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                            "val_top5_accuracy", "lr"):  # fmt: skip
                    if getattr(event, key) == getattr(event, key):  # NaN: no accuracy (AE)
                        self._append(job, key, getattr(event, key))
                self._append(job, "epoch", event.epoch)
                if originals is not None:
                    out = to_uint8(reconstruct(event.model, originals))
                    job.preview = {"epoch": event.epoch, "originals": originals,
                                   "reconstructions": out}  # fmt: skip
            elif isinstance(event, Diverged):
                job.progress |= {"diverged_epoch": event.epoch, "diverged_step": event.step}
                self._finish(job, "diverged", event.reason)
                return
            elif isinstance(event, Finished) and event.stopped:
                self._finish(job, "stopped", "stopped: a partial run is not stored")
                return
            elif isinstance(event, Stored):
                job.run_id, job.cache_hit = event.run_id, event.cache_hit
                job.history = {k: list(v) for k, v in event.meta["history"].items()}
                self._finish(job, "done", "")
                if not event.cache_hit and self.precompute_maps and job.map_after:
                    self._precompute_maps(job, event)
                return
            job.version += 1

    @staticmethod
    def _preview_images(cfg: RunConfig):
        """The first PREVIEW test images (uint8) an autoencoder job shows each epoch."""
        from core import data as datasets

        if cfg.model.name != "conv_autoencoder":
            return None
        return datasets.load(cfg.data).x_test[:PREVIEW].copy()

    def _precompute_maps(self, job: Job, stored) -> None:
        """The new run's t-SNE map, now, on this worker: the Embeddings page then opens it
        from the cache, and the work never shares the cores with another training run."""
        from core import data as datasets
        from core import embed

        try:
            embed.precompute(stored.model, datasets.load(job.cfg.data), stored.run_id,
                             self.store.root)  # fmt: skip
        except embed.CollapsedFeatures:  # nothing to map; the Embeddings page says so
            pass
        except Exception:  # noqa: BLE001 - a map that fails now is computed on demand later
            traceback.print_exc()

    @staticmethod
    def _append(job: Job, key: str, value) -> None:
        job.history.setdefault(key, []).append(value)

    def _finish(self, job: Job, state: str, message: str) -> None:
        job.state, job.message, job.finished = state, message, time.time()
        job.version += 1

    def _forget_old(self) -> None:
        done = sorted((j for j in self._jobs.values() if j.is_final), key=lambda j: j.created)
        for job in done[: max(0, len(done) - self.keep)]:
            del self._jobs[job.id]
