"""Fashion-MNIST from its original IDX .gz files, read straight into uint8 arrays.

Search order: an explicit directory (``--data-dir`` / ``CNN_CLASSROOM_DATA``), the Debian/Ubuntu
package ``dataset-fashion-mnist``, the user cache, then torchvision's download into that cache.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_DIR = "CNN_CLASSROOM_DATA"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-classroom" / "fashion-mnist"


def candidate_dirs(data_dir: str | None) -> list[Path]:
    """Where to look, in order; a folder named explicitly is the only place looked in."""
    explicit = data_dir or os.environ.get(ENV_DIR)
    return [Path(explicit)] if explicit else [DEBIAN_DIR, cache_dir()]


def has_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in FILES.values())


def find(data_dir: str | None = None) -> Path | None:
    """The first folder holding all four .gz files, or None."""
    return next((d for d in candidate_dirs(data_dir) if has_files(d)), None)


def download(target: Path | None = None, timeout: float = 15.0) -> Path:
    """Fetch the files with torchvision into the user cache (needs internet)."""
    import socket

    from torchvision.datasets import FashionMNIST

    target = target or cache_dir()
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # fail fast on machines without internet
    try:
        FashionMNIST(str(target / "tv"), train=True, download=True)
        FashionMNIST(str(target / "tv"), train=False, download=True)
    finally:
        socket.setdefaulttimeout(old)
    raw = target / "tv" / "FashionMNIST" / "raw"
    for name in FILES.values():
        src = raw / name
        if not src.is_file():  # torchvision keeps the .gz next to the unpacked files
            raise FileNotFoundError(src)
        os.replace(src, target / name)
    return target


def fingerprint(folder: Path) -> str:
    """SHA-256 over the four compressed files (about 30 MB: tens of milliseconds)."""
    h = hashlib.sha256()
    for name in sorted(FILES.values()):
        with open(folder / name, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST format): big-endian dims after a 4-byte magic."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(bytearray(raw), dtype=np.uint8, offset=4 + 4 * ndim)  # writable
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


def load(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train (60000, 1, 28, 28) uint8, y_train int64, x_test, y_test)."""
    arrays = {k: read_idx(folder / f) for k, f in FILES.items()}
    return (
        arrays["train_images"][:, None],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"][:, None],
        arrays["test_labels"].astype(np.int64),
    )
