"""Datasets: where they come from, their identity, and loading them once into memory.

``describe(cfg)`` finds the source and its content hash without decoding any image (the
command line answers a cache hit from it); ``load(cfg)`` returns the ImageData, cached per
process so pages and jobs share one copy.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from core import UserError
from core.config import DataConfig
from core.data import fashion_mnist
from core.data.dataset import ImageData, split_train_val

OFFLINE_ENV = "CNN_CLASSROOM_OFFLINE"  # set to 1 to never try a download
BUILTIN = ("fashion-mnist", "digits")


@dataclass(frozen=True)
class Source:
    kind: str  # "fashion-mnist" | "digits"
    folder: Path | None  # Fashion-MNIST's folder
    identity: str  # content hash of the raw files
    note: str  # one line for people: where it came from, or why we fell back


def warn(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)


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
    return Source("fashion-mnist", folder, fashion_mnist.fingerprint(folder), f"from {folder}")


@functools.lru_cache(maxsize=1)
def _digits_identity() -> str:
    from core.data import digits

    return digits.load()[2]


def describe(cfg: DataConfig) -> Source:
    """Find the dataset and hash it; Fashion-MNIST falls back to digits with one clear line."""
    if cfg.dataset not in BUILTIN:
        raise UserError(
            f"dataset {cfg.dataset!r} does not exist; use {' or '.join(BUILTIN)}"
            if not Path(cfg.dataset).exists()
            else f"dataset {cfg.dataset!r}: image folders and zips are not supported yet"
        )
    if cfg.dataset == "fashion-mnist":
        source = _fashion_source(cfg.data_dir)
        if source is not None:
            return source
        if cfg.data_dir:
            raise UserError(f"no Fashion-MNIST files (*-ubyte.gz) in {cfg.data_dir}")
        warn(
            "Fashion-MNIST not found (looked in "
            + ", ".join(str(d) for d in fashion_mnist.candidate_dirs(None))
            + " and could not download it); using scikit-learn's digits instead"
        )
    return Source("digits", None, _digits_identity(), "scikit-learn's bundled digits")


def effective(cfg: DataConfig) -> DataConfig:
    """The config as it will really be used (after a fallback to digits)."""
    source = describe(cfg)
    if source.kind == cfg.dataset:
        return cfg
    return replace(cfg, dataset=source.kind, data_dir=None, val_size=_digits_val(cfg.val_size))


def _digits_val(requested: int) -> int:
    # 1797 images: a 10k validation set cannot exist; keep 20% aside instead.
    return min(requested, 360)


def identity(cfg: DataConfig) -> str:
    """Hash of everything that decides the images a run sees (source, split, limit)."""
    cfg = effective(cfg)
    text = f"{describe(cfg).identity}|{cfg.val_size}|{cfg.split_seed}|{cfg.train_limit}"
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=4)
def load(cfg: DataConfig) -> ImageData:
    """The dataset for ``cfg``, split and held in memory (cached per process)."""
    cfg = effective(cfg)
    source = describe(cfg)
    if source.kind == "fashion-mnist":
        x, y, x_test, y_test = fashion_mnist.load(source.folder)
        name, classes = "Fashion-MNIST", fashion_mnist.CLASSES
        x_train, y_train, x_val, y_val = split_train_val(x, y, cfg.val_size, cfg.split_seed)
    else:
        from core.data import digits

        x, y, _ = digits.load()
        name, classes = "digits (8x8, upscaled to 28x28)", digits.CLASSES
        # Test first (20%), then validation from the rest: all stratified and seeded.
        x, y, x_test, y_test = split_train_val(x, y, 360, cfg.split_seed + 1)
        x_train, y_train, x_val, y_val = split_train_val(x, y, cfg.val_size, cfg.split_seed)
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
        source=source.note,
    )
