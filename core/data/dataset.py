"""The in-memory dataset every trainer, page and metric reads."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ImageData:
    """Train/val/test images as uint8 arrays (N, C, H, W) with int64 labels (N,).

    Any source (Fashion-MNIST, digits, an image folder) ends up here, so models see only
    ``channels``, ``size`` and ``num_classes``; 64x64 or RGB inputs need no other change.
    """

    name: str  # shown to people: "Fashion-MNIST", "digits (8x8 upscaled)"
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    identity: str  # content hash of the source: part of every stored run's key
    source: str  # where it came from, for the one line that says so

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def size(self) -> int:
        return self.x_train.shape[2]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """("train" | "val" | "test") -> (images, labels)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images in [0, 1] (for normalisation)."""
        return self._mean_std

    @functools.cached_property
    def _mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        # Once per dataset, with exact integer sums (uint64 sums of uint8 and uint16 values
        # are much quicker than a float mean/std over 39 million pixels; figures: README,
        # Benchmarks).
        means, stds = [], []
        for c in range(self.channels):
            x = self.x_train[:, c]
            n = x.size
            total = float(x.sum(dtype=np.uint64))
            squares = float((x.astype(np.uint16) ** 2).sum(dtype=np.uint64))
            mean = total / n
            std = np.sqrt(max(squares / n - mean**2, 0.0))
            means.append(mean / 255.0)
            stds.append(max(float(std) / 255.0, 1e-3))
        return tuple(means), tuple(stds)

    def class_counts(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.split(split)[1], minlength=self.num_classes)


def split_train_val(
    x: np.ndarray, y: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A deterministic, stratified train/val split: the same seed gives the same split."""
    if not 0 < val_size < len(y):
        raise ValueError(f"validation size {val_size} must be between 1 and {len(y) - 1}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    # Each class gives the same fraction to validation (rounded), at least one image.
    quota = np.maximum(1, np.round(counts * val_size / len(y)).astype(int))
    val_idx = []
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(y == c)
        val_idx.append(rng.permutation(members)[: min(q, len(members) - 1)])
    val_mask = np.zeros(len(y), dtype=bool)
    val_mask[np.concatenate(val_idx)] = True
    return x[~val_mask], y[~val_mask], x[val_mask], y[val_mask]


def resize_all(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8, bilinear (e.g. 28 -> 64 upscaling)."""
    import torch
    import torch.nn.functional as F

    out = []
    for i in range(0, len(x), 4096):  # bounded float memory for 70k images
        chunk = torch.from_numpy(x[i : i + 4096]).float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True)
        out.append(chunk.round_().clamp_(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out) if out else np.zeros((0, x.shape[1], size, size), np.uint8)
