"""Ablations and sweeps: many runs from one base config, on the local cores or a Ray cluster.

A *variant* is a named config. ``ablations`` builds seed 003's set from a stage-built base;
``grid`` crosses values of any config field (seeds 001 and 002's sweeps). ``run_all`` trains
the variants through the one path every run takes (``runs.train_or_load``: the store, its
lock, divergence), either in a local process pool that splits the cores between workers or,
with ``ray_address``, as Ray Tune trials; both call ``run_one`` with the same arguments.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

from core import UserError, schema
from core.config import RunConfig, env_int, from_dict, to_dict
from core.device import THREADS_ENV
from core.models import catalog
from core.schema import validate

ABLATED = ("stages", "no_relu", "no_pool", "skip")  # the options an ablation set changes


@dataclass(frozen=True)
class Variant:
    name: str  # "no ReLU 2", "hidden=50,50 lr=0.001": unique within a sweep
    cfg: RunConfig
    params: dict = field(default_factory=dict)  # field -> value, as given (for tables)


# -- which field a name means, and how its values are written (core.schema) ---------------
def parse_value(name: str, text: str):
    """The value ``text`` stands for in config field ``name`` ("lr", "train.seed", "model"
    for the family), read as the command line reads it (UserError when it cannot)."""
    f = schema.field(name)
    try:
        return f.parse(text)
    except UserError as e:  # say which field, once: "hidden: layer sizes look like ..."
        said = str(e)
        raise UserError(said if said.startswith(f.words) else f"{name}: {said}") from None


def set_field(cfg: RunConfig, name: str, value) -> RunConfig:
    return schema.with_value(cfg, schema.field(name), value)


# -- building the variants -----------------------------------------------------------------
def parse_grid(specs: Iterable[str]) -> dict[str, list]:
    """["hidden=100|50,50|3x75", "lr=0.01|0.001"] -> {"hidden": [...], "lr": [...]}."""
    grid: dict[str, list] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise UserError(f"a grid looks like param=v1|v2|v3 (got {spec!r})")
        if name in grid:
            raise UserError(f"{name} is given twice in the grid")
        parsed = [parse_value(name, v) for v in values.split("|")]
        grid[name] = list(dict.fromkeys(parsed))  # duplicates would train the same run twice
    if not grid:
        raise UserError('give at least one --grid "param=v1|v2"')
    return grid


def grid(base: RunConfig, spec: dict[str, list], sample: int | None = None,
         seed: int = 0) -> list[Variant]:  # fmt: skip
    """Every combination of the grid's values on top of ``base`` (or ``sample`` of them,
    drawn without replacement with ``seed``). Each variant is validated here, before any
    training starts."""
    count = math.prod(len(values) for values in spec.values())
    if sample is not None and sample < 1:
        raise UserError(f"--random must be at least 1 (got {sample})")
    limit = max_variants()
    if min(count, sample or count) > limit:  # counted before anything is expanded
        raise UserError(f"the grid has {count:,} combinations; the limit is {limit} runs "
                        "(fewer values, or --random N)")  # fmt: skip
    if sample is not None and sample < count:
        picks = sorted(random.Random(seed).sample(range(count), sample))
        combos = [_nth_combination(spec, i) for i in picks]
    else:
        combos = list(itertools.product(*spec.values()))
    variants = []
    for values in combos:
        cfg, params = base, dict(zip(spec, values, strict=True))
        for name, value in params.items():
            cfg = set_field(cfg, name, value)
        reads = catalog.family(cfg.model.name).options
        for name in params:
            f = schema.field(name)
            if f.section == "model" and f.name != "name" and f.name not in reads:
                raise UserError(f"{name}: {cfg.model.name} has no such option (it reads "
                                f"{', '.join(reads) or 'none'})")  # fmt: skip
        name = " ".join(f"{k}={schema.show(v)}" for k, v in params.items())
        variants.append(Variant(name, validate(cfg), params))
    return variants


def max_variants() -> int:
    """Runs one sweep or ablation set may have (the teacher sets CNN_CLASSROOM_MAX_VARIANTS)."""
    from core.jobs import MAX_VARIANTS, MAX_VARIANTS_ENV

    return env_int(MAX_VARIANTS_ENV, MAX_VARIANTS)


def _nth_combination(spec: dict[str, list], index: int) -> tuple:
    """The ``index``-th element of ``itertools.product(*spec.values())``, without listing
    the others (a grid of a billion combinations sampled with --random 4 stays cheap)."""
    values = []
    for options in reversed(list(spec.values())):
        index, i = divmod(index, len(options))
        values.append(options[i])
    return tuple(reversed(values))


def ablations(base: RunConfig, which: Iterable[str] | None = None) -> list[Variant]:
    """Seed 003's ablation set on a stage-built network: the full network; no ReLU at stage
    k, for each k; no pooling at stage k, for each k; no ReLU in stages 2 to n with no
    pooling at stage n; no stage n (its conv and pool). ``which`` keeps only those names.
    """
    if not set(ABLATED) <= catalog.family(base.model.name).options.keys():
        built = " or ".join(f.name for f in catalog.families() if set(ABLATED) <= f.options.keys())
        raise UserError(f"ablations remove stages of a stage-built network: use --model "
                        f"{built} (got {base.model.name})")  # fmt: skip
    n = len(base.model.stages or catalog.family(base.model.name).options["stages"])
    m = base.model
    changes: list[tuple[str, dict]] = [("full network", {})]
    changes += [(f"no ReLU {k}", {"no_relu": (k,)}) for k in range(1, n + 1)]
    changes += [(f"no pool {k}", {"no_pool": (k,)}) for k in range(1, n + 1)]
    if n >= 2:
        changes.append((f"no ReLU 2-{n}, no pool {n}",
                         {"no_relu": tuple(range(2, n + 1)), "no_pool": (n,)}))  # fmt: skip
        changes.append((f"no stage {n}", {"skip": (n,)}))
    names = [name for name, _ in changes]
    if which is not None:
        which = list(which)
        if unknown := [w for w in which if w not in names]:
            raise UserError(f"unknown ablation {unknown[0]!r}; choose from {', '.join(names)}")
        changes = [c for c in changes if c[0] in which]
    return [Variant(name, validate(replace(base, model=replace(m, **change))), change)
            for name, change in changes]  # fmt: skip


# -- running them ----------------------------------------------------------------------------
def run_one(name: str, cfg: dict, store: str | None, params: dict | None = None) -> dict:
    """Train (or find in the store) one variant and summarise it as plain JSON: status "ok"
    with test metrics and history, or "diverged" with the epoch it happened. Every executor
    calls exactly this."""
    from core.runs import Stored, train_or_load
    from core.store import Store
    from core.train import Diverged

    started = time.perf_counter()
    row = {"name": name, "params": {k: schema.show(v) for k, v in (params or {}).items()}}
    for event in train_or_load(from_dict(cfg), Store(store)):
        if isinstance(event, Diverged):
            return row | {"status": "diverged", "epoch": event.epoch, "step": event.step,
                          "reason": event.reason, "history": event.history,
                          "seconds": time.perf_counter() - started}  # fmt: skip
        if isinstance(event, Stored):
            test = dict(event.meta["test"])
            if "accuracy" in test:  # classifiers; autoencoders report their MSE
                test["top1_error"] = 1.0 - test["accuracy"]
                test["top5_error"] = 1.0 - test["top5_accuracy"]
            return row | {"status": "ok", "run_id": event.run_id, "cache_hit": event.cache_hit,
                          "test": test, "history": event.meta["history"],
                          "seconds": time.perf_counter() - started}  # fmt: skip
    return row | {"status": "stopped", "seconds": time.perf_counter() - started}


def _init_worker(threads: int) -> None:
    os.environ[THREADS_ENV] = str(threads)


def plan(count: int, workers: int | None = None) -> tuple[int, int]:
    """(worker processes, threads each): the cores split between workers. One run alone
    gets every core; more runs share them one core per worker, which for these small
    networks trains faster in total than one run at a time on all cores."""
    from core.device import cores

    total = cores()
    workers = max(1, min(workers or total, count, total))
    return workers, max(1, total // workers)


def run_local(variants: list[Variant], store: str | None, workers: int | None = None,
              done: Callable[[dict], None] | None = None) -> list[dict]:  # fmt: skip
    """Run the variants in a pool of processes on this machine; results in variant order."""
    workers, threads = plan(len(variants), workers)
    results: dict[int, dict] = {}
    if workers == 1:
        _init_worker(threads)
        for i, v in enumerate(variants):
            results[i] = run_one(v.name, to_dict(v.cfg), store, v.params)
            if done:
                done(results[i])
        return [results[i] for i in range(len(variants))]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork after torch's threads start is unsafe
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:  # fmt: skip
        futures = {pool.submit(run_one, v.name, to_dict(v.cfg), store, v.params): i
                   for i, v in enumerate(variants)}  # fmt: skip
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if done:
                done(results[i])
    return [results[i] for i in range(len(variants))]


def _trial(config: dict) -> None:
    """A Ray Tune trial: the same ``run_one`` as a local worker, its row reported as JSON."""
    from ray import tune

    v = config["variant"]  # the threads come from the job's runtime_env (run_ray)
    row = run_one(v["name"], v["cfg"], v["store"], v["params"])
    tune.report({"row": json.dumps(row), "status": row["status"]})


def run_ray(variants: list[Variant], store: str | None, address: str,
            threads: int = 1) -> list[dict]:  # fmt: skip
    """The same variants as Ray Tune trials on the cluster at ``address`` (HOST:PORT of a
    ``ray start --head``). Each trial asks for ``threads`` CPUs; ``core`` travels to the
    workers as a module; the store path must be one every node can reach (a shared disk) for
    the weights to land in one place, while the results come back here either way."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserError("Ray is not installed: pip install 'ray[tune]'") from None
    store = str(Path(store).resolve()) if store else None
    connect_ray(address, threads)
    try:
        space = [{"name": v.name, "cfg": to_dict(v.cfg), "store": store, "params": v.params}
                 for v in variants]  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="cnn-classroom-tune-") as scratch:
            tuner = tune.Tuner(
                tune.with_resources(_trial, {"cpu": threads}),
                param_space={"variant": tune.grid_search(space)},
                run_config=tune.RunConfig(name="sweep", storage_path=scratch, verbose=0),
            )
            rows = {}
            for result in tuner.fit():
                name = result.config["variant"]["name"]
                if result.error is not None or "row" not in result.metrics:
                    rows[name] = {"name": name, "status": "failed", "reason": str(result.error)}
                else:
                    rows[name] = json.loads(result.metrics["row"])
    finally:
        ray.shutdown()
    return [rows[v.name] for v in variants]


def connect_ray(address: str, threads: int = 1) -> None:
    """``ray.init`` on the cluster at ``address``, with ``core`` shipped to its workers and
    each task's training threads set; one clear line when nothing answers there."""
    try:
        import ray
    except ImportError:
        raise UserError("Ray is not installed: pip install 'ray[tune]'") from None
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"py_modules": [str(Path(__file__).parent)],
                              "env_vars": {THREADS_ENV: str(threads)}})  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot reach a Ray cluster at {address}: {e}") from None


def _check_reachable(address: str) -> None:
    """Fail in seconds when nothing listens at HOST:PORT (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if address.startswith(("ray://", "auto")) or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); "
                        "start one with: ray start --head") from None  # fmt: skip


def run_all(variants: list[Variant], store: str | None, workers: int | None = None,
            ray_address: str | None = None,
            done: Callable[[dict], None] | None = None) -> list[dict]:  # fmt: skip
    if len({v.name for v in variants}) != len(variants):
        raise UserError("two variants have the same name")
    if ray_address:
        return run_ray(variants, store, ray_address)
    return run_local(variants, store, workers, done)


def table(rows: list[dict]) -> str:
    """The results as a text table: one line per variant, best first."""

    def key(r):
        t = r.get("test", {})
        return (r["status"] != "ok", -t.get("accuracy", -t.get("mse", 0.0)))

    lines = [f"{'variant':<28} {'status':<9} {'top-1 err':>9} {'top-5 err':>9} "
             f"{'accuracy':>9} {'seconds':>8}"]  # fmt: skip
    for r in sorted(rows, key=key):
        t = r.get("test", {})
        if r["status"] == "ok" and "accuracy" in t:
            nums = f"{t['top1_error']:9.4f} {t['top5_error']:9.4f} {t['accuracy']:9.4f}"
        elif r["status"] == "ok":
            nums = f"{'':9} {'':9} {'MSE ' + format(t['mse'], '.4f'):>9}"
        else:
            where = f"epoch {r['epoch']}" if "epoch" in r else ""
            nums = f"{where:>29}"
        lines.append(f"{r['name'][:28]:<28} {r['status']:<9} {nums} "
                     f"{r.get('seconds', 0.0):8.1f}")  # fmt: skip
    return "\n".join(lines)
