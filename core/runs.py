"""Train a config or reuse the stored run: the one path every caller goes through.

``train_or_load`` yields the trainer's events and ends with ``Stored`` (a cache hit or a new
entry) or ``Diverged`` (nothing stored). When another process is already training the same
key it yields ``Waiting``, waits for that run, and reuses it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from filelock import Timeout

from core import data as datasets
from core.config import RunConfig, to_dict, validate
from core.store import Store, code_version, run_key


@dataclass
class Waiting:
    run_id: str  # another process holds this run's lock and is training it


@dataclass
class Stored:
    run_id: str
    meta: dict  # config, history, test metrics, ... (see describe_run)
    cache_hit: bool
    model: object = field(default=None, repr=False)  # set when this call trained it


def resolve(cfg: RunConfig) -> tuple[RunConfig, str]:
    """(the config as it will run, its run id). Needs no torch and decodes no image."""
    cfg = validate(replace(cfg, data=datasets.effective(cfg.data)))
    return cfg, run_key(cfg, datasets.identity(cfg.data))


def describe_run(cfg: RunConfig, data, finished) -> dict:
    """The metadata stored beside a trained model."""
    import torch

    from core import metrics
    from core.models.base import InputSpec
    from core.train import predict_proba

    probs = predict_proba(finished.model, data.x_test)
    spec = InputSpec.of(data)
    return {
        "config": to_dict(cfg),
        "model": cfg.model.name,
        "dataset": {
            "name": data.name,
            "identity": data.identity,
            "source": data.source,
            "sizes": {s: len(data.split(s)[1]) for s in ("train", "val", "test")},
        },
        "classes": list(data.classes),
        "input": {k: getattr(spec, k) for k in ("channels", "size", "num_classes", "mean", "std")},
        "history": finished.history,
        "best_epoch": finished.best_epoch,
        "stopped_early": finished.stopped_early,
        "overfitting_epoch": metrics.overfitting_epoch(finished.history["val_loss"]),
        "wall_seconds": finished.wall_seconds,
        "images_per_second": finished.images_per_second,
        "test": metrics.report(data.y_test, probs, data.classes),
        "code_version": code_version(),
        "torch": torch.__version__,
    }


def train_or_load(
    cfg: RunConfig, store: Store | None = None, stop: threading.Event | None = None
) -> Iterator:
    """Events of a training run for ``cfg``, or just ``Stored`` when the store has it."""
    store = store or Store()
    cfg, run_id = resolve(cfg)
    if (meta := store.meta(run_id)) is not None:
        yield Stored(run_id, meta, cache_hit=True)
        return
    from core import models
    from core.train import Diverged, Finished, train  # imports torch: only when training

    models.get(cfg.model.name)  # an unknown name fails here, listing the valid ones

    store.clean()
    lock = store.lock(run_id)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield Waiting(run_id)
        lock.acquire()
    try:
        if (meta := store.meta(run_id)) is not None:  # the other process finished it
            yield Stored(run_id, meta, cache_hit=True)
            return
        data = datasets.load(cfg.data)
        for event in train(cfg, data, stop):
            if isinstance(event, Finished):
                if event.stopped:  # a partial run is not what this key promises
                    yield event
                    return
                meta = store.save(run_id, event.model, describe_run(cfg, data, event))
                yield event
                yield Stored(run_id, meta, cache_hit=False, model=event.model)
                return
            yield event
            if isinstance(event, Diverged):
                return
    finally:
        lock.release()
