"""Maps of what a network learned: features projected to 2-D with PCA, t-SNE or UMAP.

``features(model, images)`` is the penultimate embedding of a stored model (``pixels(images)``
the raw-pixel baseline); ``project(method, x)`` turns it into (N, 2) coordinates. t-SNE runs
openTSNE (FFT-accelerated gradients) on a 50-dimension PCA of the features and reports
intermediate maps through a callback, so a page can refine the map on screen. UMAP keeps
numba's on-disk cache, so its JIT compilation is paid once per machine, not per process.

Projections are cached under ``<store root>/embeddings`` as plain ``.npy`` files (written
atomically, read without pickle) keyed by the feature source, method, number of points, seed
and the method's parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import UserError

METHODS = ("pca", "tsne", "umap")
PCA_DIMS = 50  # t-SNE and UMAP see this many principal components, not the raw features
# openTSNE's defaults are 250 + 500 iterations on a fine FFT grid (one interval per unit of
# map, at least 50). On Fashion-MNIST's 10,000 test points, 100 + 150 iterations on a grid
# half as fine give the same clusters (10-NN accuracy in the map within 0.002 of the default's)
# in a fraction of the time (figures: README, Benchmarks; bench/embed_bench.py measures it).
TSNE_PARAMS = {
    "perplexity": 30,
    "early_exaggeration_iter": 100,
    "n_iter": 150,
    "ints_in_interval": 2,  # map units per FFT interval: 4x fewer grid points than 1
    "min_num_intervals": 20,  # 50 is wasted while the map is still small (early iterations)
    "initialization": "pca",
    "negative_gradient_method": "fft",
}
TSNE_ITERATIONS = TSNE_PARAMS["early_exaggeration_iter"] + TSNE_PARAMS["n_iter"]
TSNE_CALLBACK_EVERY = 25  # iterations between intermediate maps (a few tenths of a second)
# Up to this many points, exact neighbours (one brute-force distance pass over 10,000 x 50)
# beat the approximate index (Annoy's build is slower, and pynndescent JIT-compiles in each
# process; figures: README, Benchmarks).
EXACT_NEIGHBOURS_UP_TO = 20_000
# 200 epochs (umap's own choice above 10,000 points) and a PCA start instead of the spectral
# one: faster for 10,000 points, the same clusters (figures: README, Benchmarks).
UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": 200, "init": "pca"}
PARAMS = {"pca": {}, "tsne": TSNE_PARAMS, "umap": UMAP_PARAMS}

# callback(iteration in 1..TSNE_ITERATIONS, embedding (N, 2) float32)
Progress = Callable[[int, np.ndarray], None]


def cores() -> int:
    from core.device import cores as device_cores

    return device_cores()


def cache_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-classroom"


# -- features ------------------------------------------------------------------------------
def features(model, images_uint8: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Penultimate embedding (N, D) float32 of uint8 images (N, C, H, W), ``batch`` images
    per pass (default: the model's evaluation batch)."""
    import torch

    from core.device import set_threads
    from core.train import eval_batch, to_float

    set_threads()
    dev = next(model.parameters()).device
    x = torch.as_tensor(images_uint8)
    was_training = model.training
    model.eval()
    out, batch = [], batch or eval_batch(model)
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(model.features(to_float(x[i : i + batch].to(dev))).flatten(1).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.empty((0, 0), np.float32)


def pixels(images_uint8: np.ndarray) -> np.ndarray:
    """The raw-pixel baseline: (N, C*H*W) float32 in [0, 1]."""
    return images_uint8.reshape(len(images_uint8), -1).astype(np.float32) / 255.0


# -- projections ---------------------------------------------------------------------------
def pca(x: np.ndarray, dims: int = 2, seed: int = 0) -> np.ndarray:
    """The first ``dims`` principal components (N, dims) float32 (fewer if x is smaller)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float32)
    dims = min(dims, *x.shape)
    return PCA(dims, random_state=seed).fit_transform(x).astype(np.float32)


def _reduced(x: np.ndarray, seed: int) -> np.ndarray:
    """PCA to PCA_DIMS first: neighbour search on 50 dimensions instead of hundreds."""
    x = np.asarray(x, dtype=np.float32)
    return pca(x, PCA_DIMS, seed) if x.shape[1] > PCA_DIMS else x


class CollapsedFeatures(UserError):
    """Every image has (nearly) the same features: there is no map to draw."""


def mappable(x: np.ndarray) -> np.ndarray:
    """Features a neighbour search can use, float32: infinities (a network on the edge of
    diverging) are clipped to the largest finite value and NaN becomes 0; a set whose points
    all coincide is refused with CollapsedFeatures, because openTSNE's initialisation divides
    by their spread and its FFT step then crashes the whole process."""
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        finite = x[np.isfinite(x)]
        big = float(np.abs(finite).max()) if finite.size else 0.0
        x = np.nan_to_num(x, nan=0.0, posinf=big, neginf=-big)
    if x.size:
        spread = float(np.ptp(x, axis=0).max())
        if not spread > 1e-5 * max(1.0, float(np.abs(x).max())):
            raise CollapsedFeatures(
                "this network gives every image the same features (it has collapsed, as "
                "a run on the edge of diverging can): there is no map to draw"
            )
    return x


def tsne(x: np.ndarray, callback: Progress | None = None, seed: int = 0) -> np.ndarray:
    """openTSNE map (N, 2) float32; ``callback(iteration, embedding)`` every
    TSNE_CALLBACK_EVERY iterations, counted across both phases (exaggeration, then normal)
    up to TSNE_ITERATIONS."""
    from openTSNE import TSNE

    x = _reduced(mappable(x), seed)
    params = dict(TSNE_PARAMS, perplexity=min(TSNE_PARAMS["perplexity"], (len(x) - 1) / 3))
    callbacks = None
    if callback is not None:
        seen = {"offset": 0, "last": 0}

        def relay(iteration: int, _error: float, embedding) -> bool:
            # openTSNE restarts its count for the second phase; keep a global one.
            if iteration <= seen["last"]:
                seen["offset"] = params["early_exaggeration_iter"]
            seen["last"] = iteration
            callback(seen["offset"] + iteration, np.array(embedding, dtype=np.float32))
            return False  # never ask openTSNE to stop: a caller stops by raising

        callbacks = [relay]
    exact = len(x) <= EXACT_NEIGHBOURS_UP_TO
    model = TSNE(
        **params,
        neighbors="exact" if exact else "auto",
        knn_kwargs={"algorithm": "brute"} if exact else None,
        n_jobs=cores(),
        random_state=seed,
        callbacks=callbacks,
        callbacks_every_iters=TSNE_CALLBACK_EVERY,
    )
    return np.asarray(model.fit(x), dtype=np.float32)


def _numba_cache() -> None:
    """Point numba's cache at a user folder before numba is imported (umap-learn's and
    pynndescent's functions are compiled with cache=True: the JIT cost is paid once)."""
    folder = Path(os.environ.get("NUMBA_CACHE_DIR") or cache_home() / "numba")
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if "numba" in sys.modules:  # imported earlier by someone else: tell its config too
        sys.modules["numba"].config.CACHE_DIR = str(folder)


def _import_umap():
    """umap-learn, with numba's on-disk cache on for all of its compiled functions.

    umap's own ``smooth_knn_dist`` and ``compute_membership_strengths`` are compiled without
    ``cache=True``: every new process paid seconds of JIT for them (figures: README,
    Benchmarks). ``enable_caching`` is what ``cache=True`` does; it is harmless for the ones
    that already cache.
    """
    _numba_cache()
    import umap as umap_learn  # imported here, after NUMBA_CACHE_DIR is set
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher
    from umap import layouts, umap_

    for module in (umap_, layouts):
        for fn in vars(module).values():
            if isinstance(fn, CPUDispatcher) and isinstance(getattr(fn, "_cache", None), NullCache):
                with contextlib.suppress(RuntimeError):  # no writable cache folder: JIT as before
                    fn.enable_caching()
    return umap_learn


def umap(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP map (N, 2) float32 of the 50-dimension PCA of x."""
    from sklearn.neighbors import NearestNeighbors

    umap_learn = _import_umap()
    x = _reduced(mappable(x), seed)
    k = max(2, min(UMAP_PARAMS["n_neighbors"], len(x) - 1))
    knn = None
    if len(x) <= EXACT_NEIGHBOURS_UP_TO:  # pynndescent would JIT-compile for seconds
        index = NearestNeighbors(n_neighbors=k, algorithm="brute", n_jobs=cores()).fit(x)
        dist, idx = index.kneighbors(x)  # each point is its own first neighbour, as umap wants
        knn = (idx, dist.astype(np.float32), None)
    reducer = umap_learn.UMAP(
        **dict(UMAP_PARAMS, n_neighbors=k),
        n_components=2,
        precomputed_knn=knn or (None, None, None),
        random_state=seed,  # reproducible maps (umap then optimises on one thread)
    )
    with warnings.catch_warnings():
        # "n_jobs overridden by random_state" and "no transform without an NNDescent index"
        # are both expected here.
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        coords = reducer.fit_transform(x)
    return np.asarray(coords, dtype=np.float32)


def project(
    method: str, x: np.ndarray, callback: Progress | None = None, seed: int = 0
) -> np.ndarray:
    """(N, 2) float32 coordinates of x (N, D) by ``method`` (one of METHODS)."""
    if method == "pca":
        out = pca(mappable(x), 2, seed)
        if out.shape[1] < 2:  # one feature: put the points on a line
            out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
        return out
    if method == "tsne":
        return tsne(x, callback, seed)
    if method == "umap":
        return umap(x, seed)
    raise ValueError(f"unknown projection {method!r}; choose from {', '.join(METHODS)}")


# -- cache ---------------------------------------------------------------------------------
_SOURCE = re.compile(r"^[0-9a-z][0-9a-z-]{0,63}$")  # a run id, or "pixels-<data identity>"


@dataclass(frozen=True)
class CacheKey:
    source: str  # a run id, or "pixels-<first 16 hex of the dataset identity>"
    method: str
    n: int  # number of points projected
    seed: int = 0

    def filename(self) -> str:
        if not _SOURCE.match(self.source):
            raise ValueError(f"not a feature source: {self.source!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown projection {self.method!r}")
        # The method's parameters are part of the key: tuning them must not serve stale maps.
        params = json.dumps(PARAMS[self.method], sort_keys=True).encode()
        tag = hashlib.sha256(params).hexdigest()[:8]
        return f"{self.source}-{self.method}-{int(self.n)}-{int(self.seed)}-{tag}.npy"


def pixels_source(data_identity: str) -> str:
    """The cache source name of raw pixels of one dataset (datasets must not share maps)."""
    return f"pixels-{data_identity[:16]}"


def load_cached(key: CacheKey, root: str | Path | None = None) -> np.ndarray | None:
    """The cached (n, 2) projection, or None when absent or not a clean float array."""
    from core.store import Store

    store = Store(root)
    return store.read_array(store.derived_path(key.filename()), (key.n, 2))


def save_cached(key: CacheKey, coords: np.ndarray, root: str | Path | None = None) -> Path:
    """Write atomically (temporary file, then one rename): readers see all of it or none."""
    from core.store import Store

    store = Store(root)
    return store.write_array(store.derived_path(key.filename()), coords)


def cached_projection(
    key: CacheKey,
    compute: Callable[[], np.ndarray],
    root: str | Path | None = None,
    on_wait: Callable[[], None] | None = None,
) -> np.ndarray:
    """The cached projection for ``key``, or ``compute()`` stored under it.

    One process computes a key at a time (a file lock): a second asker for the same map
    (thirty students opening the same run) waits, after ``on_wait()``, and reads the result.
    """
    from filelock import FileLock, Timeout

    from core.store import Store

    if (hit := load_cached(key, root)) is not None:
        return hit
    store = Store(root)
    store.derived.mkdir(parents=True, exist_ok=True)
    lock = FileLock(store.derived_lock(key.filename()))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait is not None:
            on_wait()
        lock.acquire()
    try:
        if (hit := load_cached(key, root)) is not None:  # the other process finished it
            return hit
        coords = np.asarray(compute(), dtype=np.float32)
        save_cached(key, coords, root)
        return coords
    finally:
        lock.release()


def precompute(model, data, run_id: str, root: str | Path | None = None,
               methods: tuple[str, ...] = ("tsne",), seed: int = 0) -> None:  # fmt: skip
    """Project a freshly stored run's test-set features now, so its first map is a cache hit.

    The job queue calls this right after saving a run, on the same worker thread: the
    embedding work never competes with a training run for the cores.
    """
    x = None
    for method in methods:
        key = CacheKey(run_id, method, len(data.y_test), seed)
        if load_cached(key, root) is None:
            x = features(model, data.x_test) if x is None else x
            cached_projection(key, lambda x=x, method=method: project(method, x, seed=seed), root)


@dataclass(frozen=True)
class Projection:
    coords: np.ndarray  # (N, 2) float32, one point per test image
    name: str  # the cache file's name: it changes with the source, method and parameters
    computed: bool  # False: read from the cache (or from another process that computed it)
    seconds: float


def projection(
    data,
    method: str,
    run_id: str | None = None,
    model: Callable[[], object] | None = None,
    root: str | Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    step: Callable[[str], contextlib.AbstractContextManager] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Projection:
    """The map of ``data``'s test set by ``method``: from the cache, else computed and saved.

    The features are the run ``run_id``'s penultimate ones (``model()`` gives its model,
    default: loaded from the store), or the raw pixels when ``run_id`` is None. While it
    computes, ``step(name)`` wraps each stage ("features", then the method), ``progress``
    gets t-SNE's intermediate maps, and ``on_wait()`` says another process is computing the
    same map (this one then reads it).
    """
    import time

    from core.store import Store

    source = pixels_source(data.identity) if run_id is None else run_id
    key = CacheKey(source, method, len(data.y_test), seed)
    step = step or (lambda _name: contextlib.nullcontext())
    started, computed = time.perf_counter(), []

    def compute() -> np.ndarray:
        computed.append(True)
        with step("features"):
            if run_id is None:
                x = pixels(data.x_test)
            else:
                net = model() if model is not None else Store(root).load_model(run_id)[0]
                x = features(net, data.x_test)
        with step(method):
            return project(method, x, progress, seed)

    coords = cached_projection(key, compute, root, on_wait)
    return Projection(coords, key.filename(), bool(computed), time.perf_counter() - started)


# -- a map that moves while the network learns -------------------------------------------------
LIVE_POINTS = 2000  # test images mapped after every epoch (a fixed, seeded sample)
LIVE_MAP = "live-map.npy"  # a run's frames, kept beside it (Store.run_file)


class LiveMap:
    """The test images' penultimate features after each epoch, in one frame that does not
    jump: each epoch's two principal components, then turned (and flipped, and scaled) onto
    the previous epoch's points as closely as possible (orthogonal Procrustes). So a point
    moves only as far as the network moved it, and the classes are seen pulling apart."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, points: int = LIVE_POINTS,
                 seed: int = 0):  # fmt: skip
        count = min(points, len(labels))
        self.index = sample(len(labels), count, seed)
        self.images, self.labels = np.ascontiguousarray(images[self.index]), labels[self.index]
        self.frames: list[np.ndarray] = []

    @classmethod
    def of(cls, data_cfg) -> LiveMap:
        from core import data as datasets

        data = datasets.load(data_cfg)
        return cls(data.x_test, data.y_test)

    def add(self, model, epoch: int) -> dict:
        """Map the features after ``epoch``; the preview a page draws (the latest frame
        only: the job's record is rewritten several times a second): {"epoch", "frame"
        (points, 2), "labels", "index" (the test images mapped)}."""
        xy = frame(features(model, self.images), self.frames[-1] if self.frames else None)
        self.frames.append(xy)
        return {"epoch": epoch, "frame": xy, "labels": self.labels, "index": self.index}

    def keep(self, store, run_id: str) -> None:
        store.write_array(store.run_file(run_id, LIVE_MAP), np.stack(self.frames))


def sample(total: int, count: int, seed: int = 0) -> np.ndarray:
    """The test images a live map shows: ``count`` of ``total``, seeded, in order."""
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False))


def frame(feats: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Features (N, D) as 2-D points of unit spread, aligned to ``previous`` (N, 2) when
    given. Collapsed or broken features (a diverging network) give all points at 0."""
    from scipy.linalg import orthogonal_procrustes

    try:
        feats = mappable(feats)
        xy = pca(feats / max(float(np.abs(feats).max()), 1e-30), 2)  # huge values overflow
    except (CollapsedFeatures, ValueError, np.linalg.LinAlgError):  # a diverging network
        xy = np.zeros((len(feats), 2), np.float32)
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    xy = xy - xy.mean(axis=0)
    spread = float(np.sqrt((xy**2).sum(axis=1).mean()))
    if spread > 0:
        xy = xy / spread
    if previous is not None and spread > 0 and np.abs(previous).sum() > 0:
        turn, _ = orthogonal_procrustes(xy, previous)
        xy = xy @ turn
    return xy.astype(np.float32)


def kept_frames(store, meta: dict) -> np.ndarray | None:
    """A finished run's live-map frames (epochs, points, 2), when it was trained with one."""
    epochs = len(meta.get("history", {}).get("epoch", []))
    points = min(LIVE_POINTS, meta["dataset"]["sizes"]["test"])
    return store.read_array(store.run_file(meta["run_id"], LIVE_MAP), (epochs, points, 2))
