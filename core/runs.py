"""A run's life: planned once, answered from the store or trained, then its derived data.

``plan(cfg)`` resolves a config once (bounds checked, the data's fallback and a pretrained
start's architecture applied) into a ``Plan``: the config as it will run and its run id. The
job queue keeps the plan; ``train_or_load`` takes a plan (or a config, planned there) and
yields the trainer's events, ending with ``Stored`` (a cache hit or a new entry) or
``Diverged`` (nothing stored). When another process is already training the same key it
yields ``Waiting``, waits for that run, and reuses it. After a new run is stored, its
derived data is made in one place (``derive``): the test-set probabilities the pages read
and, when asked, the test set's t-SNE map. Where these files lie is the store's business.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from filelock import Timeout

from core import UserError
from core import data as datasets
from core.config import ModelConfig, RunConfig, env_int, to_dict
from core.models import catalog
from core.schema import validate
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


@dataclass(frozen=True)
class Plan:
    cfg: RunConfig  # as it will run: validated, the data's fallback and a start applied
    run_id: str


MAX_PARAMS_ENV, MAX_MEMORY_ENV = "CNN_CLASSROOM_MAX_PARAMS", "CNN_CLASSROOM_MAX_RUN_MB"
# vgg16 (138 million parameters) is the largest network a class picks from the list.
MAX_PARAMS = 150_000_000
MAX_MEMORY_MB = 6144  # a run's estimated training memory (core.models.footprint)


def plan(cfg: RunConfig, store: Store | None = None) -> Plan:
    """The run ``cfg`` describes: validated and keyed, without decoding an image.

    Every field is bounded (schema.validate); options the model's family does not read are
    dropped (``own_options``). A model that starts from another stored run
    (``models.StartsFrom``: seed 001's classifier on its autoencoder) takes that run's
    architecture and must share its data. The model's size and training memory are checked
    apart (``check_size``: it needs torch, which a cache hit on the command line never
    imports).
    """
    cfg = replace(cfg, model=own_options(cfg.model), data=datasets.effective(cfg.data))
    cfg = _with_start(validate(cfg), store or Store())
    return Plan(cfg, run_key(cfg, datasets.identity(cfg.data)))


def own_options(model: ModelConfig) -> ModelConfig:
    """``model`` without the options its family does not read (a page's leftovers from the
    model picked before): they would change the run's key, not the model."""
    reads = catalog.family(model.name).options
    unread = {f.name: None for f in dataclasses.fields(model)
              if f.name != "name" and f.name not in reads}  # fmt: skip
    return replace(model, **unread)


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


def _with_start(cfg: RunConfig, store: Store) -> RunConfig:
    """``cfg`` with the architecture of the stored run its model starts from (if any)."""
    starts = catalog.family(cfg.model.name).starts_from
    if starts is None:
        return cfg
    m = cfg.model
    source, kinds = getattr(m, starts.option), _models_of(starts.task)
    if not source:
        raise UserError(f"{m.name} needs --{starts.option} RUN_ID: a stored {kinds} run")
    try:
        meta = store.meta(source)
    except ValueError:  # not even shaped like a run id
        meta = None
    if meta is None or meta.get("task") != starts.task:
        raise UserError(f"--{starts.option} {source}: no {kinds} run with that id in the store "
                        f"(train one: python -m core train --model {kinds})")  # fmt: skip
    given = meta["config"]["model"]
    for name in starts.inherits:
        if getattr(m, name) is not None and getattr(m, name) != given[name]:
            raise UserError(f"the {starts.option} run has {name} {given[name]}, not "
                            f"{getattr(m, name)}: {m.name} takes its architecture")  # fmt: skip
    if meta["config"]["data"]["dataset"] != cfg.data.dataset:
        raise UserError(f"the {starts.option} run was trained on "
                        f"{meta['config']['data']['dataset']}, not {cfg.data.dataset}")  # fmt: skip
    inherited = {name: given[name] for name in starts.inherits}
    model = replace(m, **inherited, **{starts.mode: getattr(m, starts.mode) or "finetune"})
    return replace(cfg, model=model)


def _models_of(task: str) -> str:
    return " or ".join(f.name for f in catalog.families() if f.task == task)


def starting_runs(cfg: RunConfig) -> list[str]:
    """The stored runs a planned config starts from (their files travel with it to a Ray
    node)."""
    starts = catalog.family(cfg.model.name).starts_from
    return [getattr(cfg.model, starts.option)] if starts is not None else []


def start_weights(cfg: RunConfig, store: Store) -> dict | None:
    """The starting weights of the model's body: the stored run's body it starts from
    (None when it starts from random weights: every other model, and the "random" mode)."""
    starts = catalog.family(cfg.model.name).starts_from
    if starts is None or getattr(cfg.model, starts.mode) == "random":
        return None
    source = getattr(cfg.model, starts.option)
    try:
        trained, _ = store.load_model(source)
    except KeyError:
        raise UserError(f"{starts.option} run {source} is no longer in the store") from None
    return trained.body.state_dict()


def describe_run(cfg: RunConfig, data, finished, probs) -> dict:
    """The metadata stored beside a trained model; ``probs``: its test-set probabilities
    (None for an autoencoder)."""
    import torch

    from core import metrics, tasks
    from core.models.base import InputSpec

    task = tasks.of(cfg.model.name)
    spec = InputSpec.of(data)
    return {
        "config": to_dict(cfg),
        "model": cfg.model.name,
        "task": task.name,
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
        "test": task.report(finished.model, data, probs),
        "code_version": code_version(cfg.model.name),  # the declared versions (store.versions)
        "torch": torch.__version__,
    }


def run_data(meta: dict):
    """The dataset a stored run was trained on, as its config names it (core.data's cache)."""
    from core.config import from_dict

    return datasets.load(from_dict(meta["config"]).data)


def test_probs(store: Store, run_id: str, model=None, data=None):
    """Class probabilities (test images, classes) of a stored classifier on its test set:
    as saved when it was trained, or computed now (and saved) for a run from before. The
    caller may pass the model and data it already holds."""
    from core.train import predict_proba

    if (probs := store.test_probs(run_id)) is not None:
        return probs
    if model is None:
        model, meta = store.load_model(run_id)
    else:
        meta = store.meta(run_id)
    if meta is None:
        raise KeyError(run_id)
    if data is None:
        data = run_data(meta)
    probs = predict_proba(model, data.x_test)
    store.save_test_probs(run_id, probs)
    return probs


def _precompute_map(stored: Stored, data, store: Store) -> None:
    """A new run's test-set t-SNE map, now: the Embeddings page then opens it from the
    cache (the job queue asks for it only when no other job waits for the worker)."""
    import traceback

    from core import embed

    try:
        embed.precompute(stored.model, data, stored.run_id, store.root)
    except embed.CollapsedFeatures as e:  # nothing to map; the Embeddings page says so
        print(f"note: no t-SNE map: {e}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - a map that fails now is computed on demand later
        traceback.print_exc()


def train_or_load(
    cfg: RunConfig | Plan,
    store: Store | None = None,
    stop: threading.Event | None = None,
    make_map: bool | Callable[[], bool] = False,
) -> Iterator:
    """Events of a training run for ``cfg`` (a config, or the plan of one), or just
    ``Stored`` when the store has it. A new run's map is made after ``Stored`` is yielded,
    when ``make_map`` (or ``make_map()``, asked then) says so."""
    store = store or Store()
    planned = cfg if isinstance(cfg, Plan) else plan(cfg, store)
    cfg, run_id = planned.cfg, planned.run_id
    if (meta := store.meta(run_id)) is not None:
        yield Stored(run_id, meta, cache_hit=True)
        return
    from core.train import Diverged, Finished, train  # torch: here only

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
        if run_key(cfg, data.identity) != run_id:  # its files changed since it was planned
            raise UserError("the dataset changed after this run was queued: start it again")
        stored = None
        for event in train(cfg, data, stop, init=start_weights(cfg, store)):
            if isinstance(event, Finished) and not event.stopped:
                from core import tasks

                probs = tasks.of(cfg.model.name).test_probs(event.model, data)
                meta = store.save(run_id, event.model, describe_run(cfg, data, event, probs))
                if probs is not None:  # a classifier: what Evaluate's pages read, kept now
                    from core.calibration import val_logits

                    store.save_test_probs(run_id, probs)
                    val_logits(store, run_id, event.model, data)
                stored = Stored(run_id, meta, cache_hit=False, model=event.model)
            yield event
            if isinstance(event, Diverged | Finished):
                break
    finally:
        lock.release()
    if stored is not None:
        yield stored
        if make_map() if callable(make_map) else make_map:
            _precompute_map(stored, data, store)
