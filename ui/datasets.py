"""Datasets a visitor can train on: the built-in ones, zips they upload, folders the teacher
offers.

Uploads are kept per visitor token (``<store>/uploads/<token>/<content hash>/<name>.zip``), so
a refresh finds them and nobody else sees them; the same zip uploaded twice is stored once.
A zip is only ever read through ``core.data.archive``'s safe extraction. Folders on the
server are never typed in: the teacher lists the folders that hold datasets in
``CNN_CLASSROOM_DATASETS`` (paths separated by ``os.pathsep``), and each class-folder
dataset inside them is offered by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import UserError
from core import data as datasets
from core.config import DataConfig
from core.store import atomic_write

ENV_FOLDERS = "CNN_CLASSROOM_DATASETS"
MAX_ZIP_MB = 200  # a zip of photos (the server's limit, .streamlit/config.toml)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Balance:
    """What a dataset holds, for the class-balance view."""

    name: str
    classes: tuple[str, ...]
    counts: dict[str, np.ndarray]  # split ("all" | "train" | "val" | "test") -> per class
    skipped: int  # hidden or non-image files

    @property
    def total(self) -> int:
        return int(sum(c.sum() for c in self.counts.values()))

    @property
    def ratio(self) -> float:
        """Largest class over smallest, all splits together."""
        overall = sum(self.counts.values())
        return float(overall.max() / max(overall.min(), 1))


def upload_dir(store_root: Path, token: str) -> Path:
    return Path(store_root) / "uploads" / token


def save_upload(store_root: Path, token: str, filename: str, content: bytes) -> Path:
    """Keep an uploaded zip (atomically, once per content); returns its path."""
    digest = hashlib.sha256(content).hexdigest()[:16]
    stem = _SAFE.sub("-", Path(filename).stem).strip(".-")[:60] or "photos"
    folder = upload_dir(store_root, token) / digest
    if kept := sorted(folder.glob("*.zip")):  # the same bytes again, under any name
        return kept[0]
    return atomic_write(folder / f"{stem}.zip", content)


def forget_upload(path: Path) -> None:
    """Remove an uploaded zip that turned out unusable (and its now empty folder)."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: another upload shares the folder
        path.parent.rmdir()


def uploads(store_root: Path, token: str) -> dict[str, str]:
    """{shown name: zip path} of this visitor's uploads, newest first."""
    zips = sorted(upload_dir(store_root, token).glob("*/*.zip"),
                  key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
    return {f"{p.name} · {p.parent.name[:6]}": str(p) for p in zips}


def offered_folders() -> dict[str, str]:
    """{name: folder} of the class-folder datasets in the teacher's ``CNN_CLASSROOM_DATASETS``
    folders (a listed folder may itself be a dataset)."""
    found: dict[str, str] = {}
    for root in filter(None, os.environ.get(ENV_FOLDERS, "").split(os.pathsep)):
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            continue
        candidates = [root_path, *sorted(p for p in root_path.iterdir() if p.is_dir())]
        for folder in candidates:
            if not folder.name.startswith(".") and _looks_like_dataset(folder):
                found.setdefault(folder.name, str(folder.resolve()))
    return found


def _looks_like_dataset(folder: Path) -> bool:
    """Class folders, or train/ with class folders, one level down (cheap: no file is read)."""
    try:
        subdirs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return False
    if any(d.name.lower() == "train" for d in subdirs):
        return True
    return len(subdirs) >= 2 and all(any(f.is_file() for f in d.iterdir()) for d in subdirs[:3])


def balance(path: str) -> Balance:
    """Classes and images per split of a folder or zip dataset; UserError when unusable (an
    unsafe zip, one class, no images)."""
    from core.data import folder

    source = datasets.describe(DataConfig(dataset=path))
    listing = folder.scan(source.folder)
    counts = {
        split: np.bincount([c for _, c in items], minlength=len(listing.classes))
        for split, items in listing.files.items()
    }
    name = Path(path).name if Path(path).suffix.lower() == ".zip" else source.folder.name
    return Balance(name, listing.classes, counts, listing.skipped)


def check(path: str) -> Balance:
    """``balance``, with any failure as a UserError (a damaged upload included)."""
    try:
        return balance(path)
    except OSError as e:
        raise UserError(f"{Path(path).name} cannot be read ({e.strerror or e})") from None
