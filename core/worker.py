"""Where a queued run trains: a worker process of this machine, or a Ray task on a cluster.

``execute`` is the one body both run: it trains (or finds) a planned run through
``runs.train_or_load`` and yields what a page shows, at most a few times a second: the
state, the last batch's progress, the history so far, the task's preview (an autoencoder's
reconstructions).

``python -m core.worker --store DIR`` is the local worker the job queue starts (core.jobs).
It pays the start-up costs once (torch, the kernels, the default dataset), says ``ready``,
then takes job ids on stdin, one at a time, and writes each job's updates into the queue's
database. It exits when its parent does, or after a run that left it large (freed memory
stays in the process), so the next run starts in a fresh one. A run the kernel kills (out of
memory) kills only this process: the queue reports the job failed and starts another worker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

FLUSH_SECONDS = 0.25  # at most four updates a second reach a page
MAX_BATCH_POINTS = 2000  # per-batch loss points kept: every other one is dropped beyond
RECYCLE_MB = 3072  # a worker this large after a run exits and is replaced


class _History:
    """The trainer's history as it grows: per-epoch series, and per-batch loss points
    thinned to at most MAX_BATCH_POINTS (a 500-epoch run would otherwise send 100,000)."""

    def __init__(self):
        self.series: dict[str, list] = {}
        self._stride, self._seen = 1, 0

    def append(self, key: str, value) -> None:
        self.series.setdefault(key, []).append(value)

    def batch(self, step: int, loss: float) -> None:
        self._seen += 1
        if self._seen % self._stride:
            return
        self.append("batch_step", step)
        self.append("batch_loss", loss)
        if len(self.series["batch_step"]) > MAX_BATCH_POINTS:
            for key in ("batch_step", "batch_loss"):
                self.series[key] = self.series[key][1::2]
            self._stride *= 2


def execute(planned, store, stop: threading.Event, map_after: bool = True,
            precompute_maps: bool = True, idle: Callable[[], bool] = lambda: True,
            live_map: bool = False) -> Iterator[dict]:  # fmt: skip
    """Train ``planned`` (a core.runs.Plan) into ``store``, yielding updates for the job's
    record: ``{"state", "progress", "history", "preview"}`` while it runs, then a final one
    with ``state`` done (``run_id``, ``cache_hit``), diverged, or stopped (and a ``message``).

    A new run's t-SNE map is computed right after it, in this process, when ``idle()`` says
    no other job waits for the worker (seconds that would otherwise hold up every student
    behind it; the Embeddings page computes a missing map when someone asks).

    ``live_map`` (a classifier): after every epoch the preview carries the test images'
    features mapped in one frame (core.embed.LiveMap), and the finished run keeps them
    beside it for a replay."""
    from core import tasks
    from core.embed import LiveMap
    from core.jobs import PARTIAL
    from core.runs import Stored, Waiting, train_or_load
    from core.train import BatchEnd, Diverged, EpochEnd, Finished

    cfg = planned.cfg
    task = tasks.of(cfg.model.name)
    history, progress, preview = _History(), {}, {}
    originals = task.preview_images(cfg.data)
    mapper = LiveMap.of(cfg.data) if live_map and task.has_accuracy else None
    last, done = 0.0, False

    def update(state: str, **final) -> dict:
        return {"state": state, "progress": dict(progress), "history": history.series,
                "preview": preview, **final}  # fmt: skip

    make_map = lambda: precompute_maps and map_after and idle()  # noqa: E731 - asked at the end
    for event in train_or_load(planned, store, stop, make_map=make_map):
        if isinstance(event, Waiting):
            yield update("waiting")
            continue
        if isinstance(event, BatchEnd):
            progress = {
                "epoch": event.epoch, "batch": event.batch, "batches": event.batches,
                "epochs": cfg.train.epochs, "loss": event.loss, "lr": event.lr,
                "images_per_second": event.images_per_second, "eta": event.eta_seconds,
            }  # fmt: skip
            history.batch(event.step, event.loss)
            if time.monotonic() - last >= FLUSH_SECONDS:
                last = time.monotonic()
                yield update("running")
        elif isinstance(event, EpochEnd):
            for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                        "val_top5_accuracy", "lr"):  # fmt: skip
                if getattr(event, key) == getattr(event, key):  # NaN: no accuracy (AE)
                    history.append(key, getattr(event, key))
            history.append("epoch", event.epoch)
            if originals is not None:
                preview = task.preview(event.model, originals, event.epoch)
            if mapper is not None:
                preview = mapper.add(event.model, event.epoch)
            last = time.monotonic()
            yield update("running")
        elif isinstance(event, Diverged):
            progress |= {"diverged_epoch": event.epoch, "diverged_step": event.step}
            yield update("diverged", message=event.reason)
            return
        elif isinstance(event, Finished) and event.stopped:
            yield update("stopped", message=PARTIAL)
            return
        elif isinstance(event, Stored):
            history.series = {k: list(v) for k, v in event.meta["history"].items()}
            done = True
            if mapper is not None and mapper.frames and not event.cache_hit:
                mapper.keep(store, event.run_id)
            yield update("done", run_id=event.run_id, cache_hit=event.cache_hit)
            # The generator goes on after Stored: the run's map, when make_map() says so.
    if not done:
        yield update("stopped", message=PARTIAL)


def warm_up() -> None:
    """Pay one-off start-up costs before the first job: torch and the trainer, torch's first
    optimizer (it imports torch._dynamo, about a second), the fused kernels, and the default
    dataset with its normalisation. Without this a run's first curve shows seconds late."""
    import torch

    import core.train
    from core import data as datasets
    from core.config import DataConfig

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)], fused=True)
    with contextlib.suppress(ImportError):  # Numba's compiled kernels, from its cache
        import core.accel

        core.accel.warm()
    datasets.load(DataConfig()).mean_std()


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _exit_with_parent(parent: int) -> None:
    """The worker must not outlive the server that started it (a ``kill -9`` of the app):
    its job is then re-queued by the next server, and two copies would train it at once."""
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def _yield_to_the_server() -> None:
    """Ask the kernel's OOM killer to pick this process before the web server, and its
    scheduler to run the server's page answers first: training takes every core, and on
    two cores thirty students' pages would otherwise wait behind it (nice 10 costs a run
    only the CPU time pages really use)."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("500")
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no os.nice (Windows)
        os.nice(10)


def serve(store_root: str, parent: int, maps: bool = True) -> int:
    """The local worker's loop (see the module docstring)."""
    from core.jobs import JobDB
    from core.store import Store

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _yield_to_the_server()
    store = Store(store_root)
    db = JobDB(store.root)
    try:
        warm_up()
    except Exception as e:  # noqa: BLE001 - said once, then the queue reports each job failed
        print(f"error: warming up the worker failed: {type(e).__name__}: {e}", flush=True)
        return 1
    print("ready", flush=True)
    for line in sys.stdin:
        job_id, _, attempt = line.strip().partition(" ")
        if not job_id:
            continue
        run_job(db, store, job_id, int(attempt or 0), maps)
        print(f"done {job_id}", flush=True)
        if rss_mb() > RECYCLE_MB:
            return 0
    return 0


def run_job(db, store, job_id: str, attempt: int, maps: bool = True) -> None:
    """One job from the database to its final state, its updates written as it runs; a
    request to stop is read from the database with every update."""
    import traceback

    from core.runs import Plan

    job = db.get(job_id)
    if job is None:
        return
    stop = threading.Event()
    try:
        idle = lambda: not db.rows(("queued",), "id")  # noqa: E731 - nobody waits for a worker
        planned = Plan(job.cfg, job.key)
        for update in execute(planned, store, stop, job.map_after, precompute_maps=maps,
                              idle=idle, live_map=job.live_map):  # fmt: skip
            if not db.update(job_id, attempt, update):
                stop.set()  # re-queued or removed meanwhile: this attempt is no longer wanted
            if db.stop_requested(job_id):
                stop.set()
    except Exception as e:  # noqa: BLE001 - a failed job must not kill the worker
        traceback.print_exc()
        db.update(job_id, attempt, {"state": "failed", "message": one_line(e)})


def one_line(e: BaseException) -> str:
    from core import UserError

    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, UserError) else f"{type(e).__name__}: {text}".rstrip(": ")


# -- on a Ray cluster ------------------------------------------------------------------------
def ray_task(cfg_dict: dict, key: str, inputs: dict, map_after: bool, threads: int,
             live_map: bool = False):  # fmt: skip
    """A Ray task (a streaming generator): train in a store of this node's own and yield the
    same updates as a local worker; the last one carries the run's files, which the
    server's queue writes into its store (the nodes need not share a disk). ``cfg_dict`` and
    ``key``: the job's plan; ``inputs``: the files of the runs it starts from."""
    import shutil
    import tempfile

    from core.config import from_dict
    from core.device import THREADS_ENV
    from core.runs import Plan
    from core.store import Store

    os.environ[THREADS_ENV] = str(threads)
    root = Path(tempfile.mkdtemp(prefix="cnn-classroom-ray-"))
    try:
        store = Store(root)
        for run_id, files in inputs.items():
            store.import_files(run_id, files)
        planned = Plan(from_dict(cfg_dict), key)
        for update in execute(planned, store, threading.Event(), map_after,
                              precompute_maps=False, live_map=live_map):  # fmt: skip
            if update["state"] == "done":
                run_id = update["run_id"]
                update = update | {"files": store.export_files(run_id),
                                   "derived": store.derived_files(run_id)}  # fmt: skip
            yield update
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.worker", description=__doc__)
    parser.add_argument("--store", required=True, help="the model store the queue lives in")
    parser.add_argument("--parent", type=int, default=os.getppid(), help=argparse.SUPPRESS)
    parser.add_argument("--no-maps", action="store_true",
                        help="skip the t-SNE map computed after each new run")  # fmt: skip
    args = parser.parse_args(argv)
    return serve(args.store, args.parent, maps=not args.no_maps)


if __name__ == "__main__":
    sys.exit(main())
