"""Datasets: where they come from, their identity, and loading them once into memory.

``describe(cfg)`` finds the source and its content hash without decoding any image (the
command line answers a cache hit from it); ``load(cfg)`` returns the ImageData, cached per
process so pages and jobs share one copy. The cache is bounded in entries and in bytes
(``CNN_CLASSROOM_DATA_CACHE_MB``): a server where every student looks at another dataset
keeps only the most recently used ones decoded.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core import UserError
from core.config import DataConfig
from core.data import fashion_mnist
from core.data.dataset import ImageData, resize_all, split_train_val

OFFLINE_ENV = "CNN_CLASSROOM_OFFLINE"  # set to 1 to never try a download
BUILTIN = ("fashion-mnist", "digits")
HOLDOUT = 0.2  # share kept for test (and then for validation) when a folder has no split
CACHE_ENV = "CNN_CLASSROOM_DATA_CACHE_MB"  # decoded datasets kept in memory, in MB in all
CACHE_MB = 2048  # Fashion-MNIST takes 55 MB; a photo set at a backbone's size can take GBs
CACHE_ENTRIES = 4  # decoded datasets kept at most
# Bumped when the pipeline gives other arrays for the same source (decoding, resizing, the
# split): part of every run key (core.store.run_key), like the model and trainer versions.
DATA_VERSION = 1


@dataclass(frozen=True)
class Source:
    kind: str  # "fashion-mnist" | "digits" | "folder"
    folder: Path | None  # Fashion-MNIST's folder, or the image folder
    identity: str  # content hash of the raw files
    note: str  # one line for people: where it came from, or why we fell back
    native_size: int  # side of the source's images as we load them by default


def warn(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)


def megabytes(env: str, default: int) -> int:
    """A size in MB from the environment variable ``env`` (``default`` when unset), in
    bytes; UserError for anything but a positive whole number."""
    text = os.environ.get(env, "").strip()
    if not text:
        return default << 20
    if not text.isdigit() or int(text) == 0:
        raise UserError(f"{env} must be a positive whole number of MB, not {text!r}")
    return int(text) << 20


@functools.lru_cache(maxsize=8)
def _fashion_source(data_dir: str | None) -> Source | None:
    folder = fashion_mnist.find(data_dir)
    if folder is None and os.environ.get(OFFLINE_ENV) != "1":
        try:
            folder = fashion_mnist.download()
        except (OSError, RuntimeError, ImportError):  # no internet or no torchvision: "not here"
            folder = None
    if folder is None:
        return None
    identity = fashion_mnist.fingerprint(folder)
    return Source("fashion-mnist", folder, identity, f"from {folder}", 28)


@functools.lru_cache(maxsize=1)
def _digits_source() -> Source:
    from core.data import digits

    return Source("digits", None, digits.load()[2], "scikit-learn's bundled digits", 28)


@functools.lru_cache(maxsize=8)
def _folder_source(path: str) -> Source:
    from core.data import folder

    listing = folder.scan(Path(path))
    note = (
        f"from {path}"
        + (f" ({listing.skipped} non-image files skipped)" if listing.skipped else "")
        + (f" ({len(listing.renamed)} class folders renamed)" if listing.renamed else "")
    )
    return Source("folder", Path(path), folder.fingerprint(listing), note, 64)


def _zip_source(path: Path) -> Source:
    """A zip's class folders, extracted safely into the user cache once per zip content
    (again if its extraction was evicted). A zip whose photos cannot make a dataset (one
    class, no images) leaves no extraction behind."""
    from core.data import archive

    folder = archive.extract(path)
    try:
        return _folder_source(str(folder))
    except UserError:
        archive.discard(archive.extraction(path))
        raise


def describe(cfg: DataConfig) -> Source:
    """Find the dataset and hash it; Fashion-MNIST falls back to digits with one clear line."""
    if cfg.dataset == "digits":
        return _digits_source()
    if cfg.dataset != "fashion-mnist":
        path = Path(cfg.dataset).expanduser()
        if not path.exists():
            raise UserError(f"dataset {cfg.dataset!r} does not exist; use a folder of class "
                            f"folders, a zip of them, {' or '.join(BUILTIN)}")  # fmt: skip
        if path.is_file():
            return _zip_source(path.resolve())
        return _folder_source(str(path.resolve()))
    source = _fashion_source(cfg.data_dir)
    if source is not None:
        return source
    if explicit := cfg.data_dir or os.environ.get(fashion_mnist.ENV_DIR):
        raise UserError(f"no Fashion-MNIST files (*-ubyte.gz) in {explicit}")
    warn(
        "Fashion-MNIST not found (looked in "
        + ", ".join(str(d) for d in fashion_mnist.candidate_dirs(None))
        + " and could not download it); using scikit-learn's digits instead"
    )
    return _digits_source()


def effective(cfg: DataConfig) -> DataConfig:
    """The config as it will really be used (after a fallback to digits)."""
    source = describe(cfg)
    if source.kind == "digits" and cfg.dataset != "digits":
        return replace(cfg, dataset="digits", data_dir=None)
    return cfg


def identity(cfg: DataConfig) -> str:
    """Hash of everything that decides the images a run sees (source, split, size, limit)."""
    cfg = effective(cfg)
    source = describe(cfg)
    size = cfg.image_size or source.native_size
    text = f"{source.identity}|{cfg.val_size}|{cfg.split_seed}|{cfg.train_limit}|{size}"
    return hashlib.sha256(text.encode()).hexdigest()


def _holdout_split(x, y, val_size: int, seed: int):
    """Train/val split of a small source: at most ``val_size``, at most 20% of it. The
    default size is a cap here (photo datasets are mostly smaller); a size asked for must
    fit the data."""
    if val_size != DataConfig.val_size:
        _check_val_size(val_size, len(y))
    n = min(val_size, max(1, int(len(y) * HOLDOUT)))
    return split_train_val(x, y, n, seed)


def _check_val_size(val_size: int, images: int) -> None:
    """A validation set must leave images to train on."""
    if val_size >= images:
        raise UserError(f"a validation set of {val_size:,} images is more than this dataset "
                        f"has for training and validation ({images:,}); ask for fewer")  # fmt: skip


class DecodedCache:
    """Decoded datasets, least recently used first, within ``entries`` and the byte budget of
    CACHE_ENV (read at each call, so a teacher's setting takes effect at once). A
    dataset larger than the whole budget is returned, not kept. Thread-safe; two callers
    asking for the same dataset at once decode it once (the second waits)."""

    def __init__(self, entries: int = CACHE_ENTRIES):
        self.entries = entries
        self._items: OrderedDict[DataConfig, ImageData] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[DataConfig, threading.Lock] = {}

    @staticmethod
    def nbytes(data: ImageData) -> int:
        """What keeping ``data`` costs: the bytes of its arrays."""
        arrays = (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)
        return sum(a.nbytes for a in arrays)

    def get(self, cfg: DataConfig, make: Callable[[DataConfig], ImageData]) -> ImageData:
        budget = megabytes(CACHE_ENV, CACHE_MB)  # a bad setting is refused before decoding
        with self._lock:
            if cfg in self._items:
                self._items.move_to_end(cfg)
                return self._items[cfg]
            gate = self._loading.setdefault(cfg, threading.Lock())
        with gate:
            with self._lock:
                if cfg in self._items:  # decoded by the caller we waited for
                    self._items.move_to_end(cfg)
                    return self._items[cfg]
            try:
                data = make(cfg)
                with self._lock:
                    if self.nbytes(data) <= budget:
                        self._items[cfg] = data
                    while len(self._items) > self.entries or self._total() > budget:
                        self._items.popitem(last=False)
            finally:
                with self._lock:
                    self._loading.pop(cfg, None)
        return data

    def _total(self) -> int:
        return sum(self.nbytes(d) for d in self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_decoded = DecodedCache()


def load(cfg: DataConfig) -> ImageData:
    """The dataset for ``cfg``, split and held in memory (cached per process, within
    CACHE_ENTRIES datasets and CNN_CLASSROOM_DATA_CACHE_MB)."""
    return _decoded.get(cfg, _decode)


def _decode(cfg: DataConfig) -> ImageData:
    cfg = effective(cfg)
    source = describe(cfg)
    size = cfg.image_size or source.native_size
    unreadable = 0  # images of a folder that could not be read (skipped)
    if source.kind == "fashion-mnist":
        x, y, x_test, y_test = fashion_mnist.load(source.folder)
        name, classes = "Fashion-MNIST", fashion_mnist.CLASSES
        _check_val_size(cfg.val_size, len(y))
        x_train, y_train, x_val, y_val = split_train_val(x, y, cfg.val_size, cfg.split_seed)
    elif source.kind == "digits":
        from core.data import digits

        x, y, _ = digits.load()
        name, classes = "digits (8x8, upscaled to 28x28)", digits.CLASSES
        x, y, x_test, y_test = split_train_val(x, y, int(len(y) * HOLDOUT), cfg.split_seed + 1)
        x_train, y_train, x_val, y_val = _holdout_split(x, y, cfg.val_size, cfg.split_seed)
    else:
        *arrays, classes, unreadable = _load_folder(cfg, source, size)
        x_train, y_train, x_val, y_val, x_test, y_test = arrays
        name = source.folder.name
    if size != x_train.shape[-1]:
        x_train, x_val, x_test = (resize_all(a, size) for a in (x_train, x_val, x_test))
    if cfg.train_limit is not None:
        x_train, y_train = x_train[: cfg.train_limit], y_train[: cfg.train_limit]
    return ImageData(
        name=name,
        classes=tuple(classes),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        identity=identity(cfg),
        source=source.note + (f" ({unreadable} unreadable images skipped)" if unreadable else ""),
    )


def _load_folder(cfg: DataConfig, source: Source, size: int):
    """A folder's splits: its own train/val/test when it has them, else stratified ones.

    With train/ and val/ only, val/ is the held-out test set (its metrics are the ones
    reported) and validation comes out of train/.
    """
    from core.data import folder

    listing = folder.scan(source.folder)
    unreadable: list[Path] = []  # truncated or disallowed files: skipped, and said
    splits, _ = folder.load(listing, size, unreadable)
    if "all" in splits:
        x, y = splits["all"]
        x, y, x_test, y_test = split_train_val(
            x, y, max(1, int(len(y) * HOLDOUT)), cfg.split_seed + 1
        )
        x_train, y_train, x_val, y_val = _holdout_split(x, y, cfg.val_size, cfg.split_seed)
    else:
        x_train, y_train = splits["train"]
        held = splits.get("test", splits.get("val"))
        if held is None or len(held[1]) == 0:
            raise UserError(f"dataset {source.folder} has train/ but no val/ or test/ images")
        x_test, y_test = held
        if "test" in splits and "val" in splits and len(splits["val"][1]):
            x_val, y_val = splits["val"]
        else:
            x_train, y_train, x_val, y_val = _holdout_split(
                x_train, y_train, cfg.val_size, cfg.split_seed
            )
    if len(np.unique(y_train)) < 2:
        raise UserError(f"dataset {source.folder} needs training images of at least two classes")
    return x_train, y_train, x_val, y_val, x_test, y_test, listing.classes, len(unreadable)
