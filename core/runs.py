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

from core import UserError
from core import data as datasets
from core.config import RunConfig, env_int, to_dict, validate
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


MAX_PARAMS_ENV, MAX_MEMORY_ENV = "CNN_CLASSROOM_MAX_PARAMS", "CNN_CLASSROOM_MAX_RUN_MB"
# vgg16 (138 million parameters) is the largest network a class picks from the list.
MAX_PARAMS = 150_000_000
MAX_MEMORY_MB = 6144  # a run's estimated training memory (core.models.footprint)


def resolve(cfg: RunConfig, store: Store | None = None) -> tuple[RunConfig, str]:
    """(the config as it will run, its run id). Decodes no image.

    Every field is bounded (config.validate); the model's size and training memory are
    checked before anything trains or is queued (``check_size``: it needs torch, which a
    cache hit on the command line never imports). An ``ae_classifier`` takes its encoder's
    architecture (latent size, dropout, pooling) and data from the stored autoencoder run
    it names; its mode defaults to "finetune".
    """
    cfg = validate(replace(cfg, data=datasets.effective(cfg.data)))
    if cfg.model.name == "ae_classifier":
        cfg = _with_encoder(cfg, store or Store())
    return cfg, run_key(cfg, datasets.identity(cfg.data))


def input_shape(data_cfg) -> tuple[int, int, int]:
    """(channels, side, classes) a run on ``data_cfg`` will see, without decoding an image
    (a photo folder counts as colour: the larger case)."""
    source = datasets.describe(data_cfg)
    side = data_cfg.image_size or source.native_size
    if source.kind != "folder":
        return 1, side, 10
    from core.data import folder

    return 3, side, len(folder.scan(source.folder).classes)


def check_size(cfg: RunConfig) -> None:
    """Refuse, with one line, a model above the parameter cap or a run whose estimated
    training memory is above the memory cap (the teacher sets both: CNN_CLASSROOM_MAX_PARAMS,
    CNN_CLASSROOM_MAX_RUN_MB)."""
    from core import models
    from core.models.base import InputSpec

    channels, side, classes = input_shape(cfg.data)
    spec = InputSpec(channels, side, classes, (0.5,) * channels, (0.5,) * channels)
    try:
        params, memory = models.footprint(cfg.model, spec, cfg.train.batch_size)
    except (RuntimeError, ValueError) as e:  # shapes that do not fit (a map shrunk to nothing)
        raise UserError(f"{cfg.model.name} cannot take {side}x{side} images with these "
                        f"settings: {str(e).splitlines()[0]}") from None  # fmt: skip
    max_params = env_int(MAX_PARAMS_ENV, MAX_PARAMS)
    if params > max_params:
        raise UserError(f"this model has {params:,} parameters; the limit is {max_params:,} "
                        "(fewer or smaller layers)")  # fmt: skip
    max_mb = env_int(MAX_MEMORY_ENV, MAX_MEMORY_MB)
    if memory > max_mb * 2**20:
        raise UserError(f"this run needs about {memory / 2**30:.1f} GiB of memory to train; "
                        f"the limit is {max_mb / 1024:.1f} GiB (a smaller batch, image or "
                        "model)")  # fmt: skip


def _with_encoder(cfg: RunConfig, store: Store) -> RunConfig:
    m = cfg.model
    try:
        meta = store.meta(m.encoder)
    except ValueError:  # not even shaped like a run id
        meta = None
    if meta is None or meta.get("task") != "reconstruct":
        raise UserError(
            f"--encoder {m.encoder}: no conv_autoencoder run with that id in the store "
            "(train one: python -m core train --model conv_autoencoder)"
        )
    ae = meta["config"]["model"]
    for name in ("latent", "dropout", "pooling"):
        given = getattr(m, name)
        if given is not None and given != ae[name]:
            raise UserError(f"the encoder run has {name} {ae[name]}, not {given}: the "
                            "classifier takes its encoder's architecture")  # fmt: skip
    if meta["config"]["data"]["dataset"] != cfg.data.dataset:
        raise UserError(f"the encoder was trained on {meta['config']['data']['dataset']}, "
                        f"not {cfg.data.dataset}")  # fmt: skip
    model = replace(m, latent=ae["latent"], dropout=ae["dropout"], pooling=ae["pooling"],
                    encoder_mode=m.encoder_mode or "finetune")  # fmt: skip
    return replace(cfg, model=model)


def encoder_weights(cfg: RunConfig, store: Store) -> dict | None:
    """The starting weights of an ``ae_classifier``'s body: its autoencoder's encoder (None
    for the "random" mode and for every other model)."""
    if cfg.model.name != "ae_classifier" or cfg.model.encoder_mode == "random":
        return None
    try:
        autoencoder, _ = store.load_model(cfg.model.encoder)
    except KeyError:
        raise UserError(f"encoder run {cfg.model.encoder} is no longer in the store") from None
    return autoencoder.body.state_dict()


def test_probs_path(store: Store, run_id: str):
    """Where a run's test-set probabilities are kept (beside its maps: derived data, removed
    with the run)."""
    from core.embed import cache_dir

    return cache_dir(store.root) / f"{run_id}-test-probs.npy"


def stored_test_probs(store: Store, run_id: str, n: int, classes: int):
    """The (n, classes) probabilities saved when the run was trained, or None."""
    from core.embed import read_array

    return read_array(test_probs_path(store, run_id), (n, classes))


def describe_run(cfg: RunConfig, data, finished, probs) -> dict:
    """The metadata stored beside a trained model; ``probs``: its test-set probabilities
    (None for an autoencoder)."""
    import torch

    from core import metrics
    from core.models.base import InputSpec
    from core.train import reconstruction_mse, task_of

    task = task_of(finished.model)
    if task == "reconstruct":
        test = {"mse": reconstruction_mse(finished.model, data.x_test),
                "support": len(data.y_test)}  # fmt: skip
    else:
        test = metrics.report(data.y_test, probs, data.classes)
    spec = InputSpec.of(data)
    return {
        "config": to_dict(cfg),
        "model": cfg.model.name,
        "task": task,
        "dataset": {
            "name": data.name,
            "identity": data.identity,
            "source": data.source,
            "sizes": {s: len(data.split(s)[1]) for s in ("train", "val", "test")},
            "class_counts": {s: data.class_counts(s).tolist() for s in ("train", "val", "test")},
        },
        "classes": list(data.classes),
        "input": {k: getattr(spec, k) for k in ("channels", "size", "num_classes", "mean", "std")},
        "history": finished.history,
        "best_epoch": finished.best_epoch,
        "stopped_early": finished.stopped_early,
        "overfitting_epoch": metrics.overfitting_epoch(finished.history["val_loss"]),
        "wall_seconds": finished.wall_seconds,
        "images_per_second": finished.images_per_second,
        "test": test,
        "code_version": code_version(cfg.model.name),  # the declared versions (store.versions)
        "torch": torch.__version__,
    }


def train_or_load(
    cfg: RunConfig, store: Store | None = None, stop: threading.Event | None = None
) -> Iterator:
    """Events of a training run for ``cfg``, or just ``Stored`` when the store has it."""
    store = store or Store()
    cfg, run_id = resolve(cfg, store)
    if (meta := store.meta(run_id)) is not None:
        yield Stored(run_id, meta, cache_hit=True)
        return
    from core import models
    from core.train import Diverged, Finished, predict_proba, task_of, train  # torch: here only

    models.get(cfg.model.name)  # an unknown name fails here, listing the valid ones
    check_size(cfg)

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
        for event in train(cfg, data, stop, init=encoder_weights(cfg, store)):
            if isinstance(event, Finished):
                if event.stopped:  # a partial run is not what this key promises
                    yield event
                    return
                probs = None
                if task_of(event.model) == "classify":  # once: for the metrics and the pages
                    probs = predict_proba(event.model, data.x_test)
                meta = store.save(run_id, event.model, describe_run(cfg, data, event, probs))
                if probs is not None:
                    from core.embed import write_array

                    write_array(test_probs_path(store, run_id), probs)
                yield event
                yield Stored(run_id, meta, cache_hit=False, model=event.model)
                return
            yield event
            if isinstance(event, Diverged):
                return
    finally:
        lock.release()
