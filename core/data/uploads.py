"""Photo datasets a visitor can train on besides the built-in ones: zips they upload and
folders the teacher offers (the Train page's listing, upload and class balance).

Uploads are kept per visitor token (``<store>/uploads/<token>/<content hash>/<name>.zip``), so
a refresh finds them and nobody else sees them; the same zip uploaded twice is stored once.
A zip is only ever read through ``core.data.archive``'s safe extraction. Folders on the
server are never typed in: the teacher lists the folders that hold datasets in
``CNN_CLASSROOM_DATASETS`` (paths separated by ``os.pathsep``), and each class-folder
dataset inside them is offered by name.

Disk is bounded: each visitor's zips and their extracted photos stay within
``CNN_CLASSROOM_UPLOAD_QUOTA_MB``, everyone's (with the command line's extractions) within
``CNN_CLASSROOM_UPLOADS_TOTAL_MB``. A new zip makes room by evicting the least recently used
uploads and extractions (never its own), and is refused when it alone exceeds a quota or
the disk lacks the space; a refused zip leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from core import UserError
from core import data as datasets
from core.config import DataConfig
from core.data import archive
from core.store import atomic_write

ENV_FOLDERS = "CNN_CLASSROOM_DATASETS"
MAX_ZIP_MB = 200  # a zip of photos (the server's limit, .streamlit/config.toml)
QUOTA_ENV = "CNN_CLASSROOM_UPLOAD_QUOTA_MB"  # one visitor's zips and their extracted photos
TOTAL_ENV = "CNN_CLASSROOM_UPLOADS_TOTAL_MB"  # everyone's, and the command line's extractions
QUOTA_MB = 1024  # a few zips of a class's photos per student
TOTAL_MB = 8192  # thirty students at a quarter of their quota, and room to spare
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Balance:
    """What a dataset holds, for the class-balance view."""

    name: str
    classes: tuple[str, ...]
    counts: dict[str, np.ndarray]  # split ("all" | "train" | "val" | "test") -> per class
    skipped: int  # hidden or non-image files
    renamed: tuple[tuple[str, str], ...] = ()  # (class folder, the class name shown)

    @property
    def total(self) -> int:
        return int(sum(c.sum() for c in self.counts.values()))

    @property
    def ratio(self) -> float:
        """Largest class over smallest, all splits together."""
        overall = sum(self.counts.values())
        return float(overall.max() / max(overall.min(), 1))


def upload_dir(store_root: Path, token: str) -> Path:
    """A visitor's upload folder, named by a hash of their token: an upload's path ends up
    in a run's stored config, which every student can read, and must not hand over the
    token (it opens that student's jobs and uploads)."""
    return Path(store_root) / "uploads" / _folder_of(token)


def _folder_of(token: str) -> str:
    return hashlib.sha256(f"cnn-classroom uploads|{token}".encode()).hexdigest()[:16]


def save_upload(store_root: Path, token: str, filename: str, content: bytes) -> Path:
    """Keep an uploaded zip (atomically, once per content); returns its path. Makes room
    within the quotas first (module docstring); UserError, with nothing written, when the
    zip alone exceeds a quota or the disk lacks the space."""
    digest = hashlib.sha256(content).hexdigest()[:16]
    stem = _SAFE.sub("-", Path(filename).stem).strip(".-")[:60] or "photos"
    folder = upload_dir(store_root, token) / digest
    uploads_root = Path(store_root) / "uploads"
    uploads_root.mkdir(parents=True, exist_ok=True)
    with FileLock(uploads_root / ".lock"):  # two uploads at once do not both take the room
        if kept := sorted(folder.glob("*.zip")):  # the same bytes again, under any name
            with contextlib.suppress(OSError):
                os.utime(folder)  # a use
            return kept[0]
        need = len(content) + _unpacked(content)
        _make_room(store_root, token, digest, need, filename)
        archive.ensure_free(uploads_root, need)
        return atomic_write(folder / f"{stem}.zip", content)


def _unpacked(content: bytes) -> int:
    """What the zip will take once extracted, as it declares it (at most what the safe
    extraction accepts; 0 for a file that is no zip, which the extraction then refuses)."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            declared = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return 0
    return min(declared, archive.MAX_TOTAL_BYTES)


@dataclass(eq=False)  # one thing on disk each: compared by identity
class _Held:
    """What the quotas count: a visitor's upload with the extraction of its zip, or an
    extraction no upload owns (the command line's, or an upload's whose zip is gone)."""

    owner: str | None  # the visitor's token; None for an extraction alone
    digest: str  # the zip's content hash, 16 hex digits (its extraction's name starts so)
    folder: Path | None  # the upload's folder
    own: int  # bytes of the upload's folder
    extraction: Path | None
    extracted: int  # bytes of the extraction
    used: float  # last use: the newest modification time of the two


def _size(folder: Path | None) -> int:
    """Bytes of the files under ``folder`` (0 for None or a folder gone meanwhile)."""
    total = 0
    for path, _, files in os.walk(folder) if folder is not None else ():
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(path, name)).st_size
    return total


def _mtime(path: Path | None) -> float:
    try:
        return path.stat().st_mtime if path is not None else 0.0
    except OSError:
        return 0.0


def _holdings(store_root: Path) -> list[_Held]:
    """Everything the quotas count, read from disk."""
    root = archive.default_root()
    extractions = {p.name[:16]: p for p in (root.iterdir() if root.is_dir() else ())
                   if p.is_dir() and not p.name.startswith(".")}  # fmt: skip
    held = []
    for folder in sorted((Path(store_root) / "uploads").glob("*/*")):
        if folder.is_dir() and not folder.name.startswith("."):
            extraction = extractions.get(folder.name)
            held.append(_Held(folder.parent.name, folder.name, folder, _size(folder),
                              extraction, _size(extraction),
                              max(_mtime(folder), _mtime(extraction))))  # fmt: skip
    owned = {h.digest for h in held}
    for digest, extraction in extractions.items():
        if digest not in owned:
            held.append(_Held(None, digest, None, 0, extraction, _size(extraction),
                              _mtime(extraction)))  # fmt: skip
    return held


def _in_use(held: list[_Held]) -> int:
    """Bytes on disk (an extraction shared by two visitors' uploads counts once)."""
    shared = {h.digest: h.extracted for h in held}
    return sum(h.own for h in held) + sum(shared.values())


def _evict(victim: _Held, held: list[_Held]) -> None:
    """Remove ``victim`` (from disk and from ``held``); its extraction only when no other
    upload of the same zip remains."""
    held.remove(victim)
    if victim.folder is not None:
        shutil.rmtree(victim.folder, ignore_errors=True)
    if victim.extraction is not None and all(h.digest != victim.digest for h in held):
        archive.discard(victim.extraction)


def _make_room(store_root: Path, token: str, digest: str, need: int, filename: str) -> None:
    """Evict the least recently used uploads and extractions until ``need`` more bytes fit
    in the visitor's quota and in the total; never the zip being saved (``digest``), whose
    extraction another visitor's copy may already hold."""
    quota, total = datasets.megabytes(QUOTA_ENV, QUOTA_MB), datasets.megabytes(TOTAL_ENV, TOTAL_MB)
    if need > min(quota, total):
        which = "each student may keep" if quota <= total else "the class may keep"
        raise UserError(f"{Path(filename).name} takes {-(-need >> 20):,} MB on the server "
                        f"(the zip and its photos unpacked); {which} {min(quota, total) >> 20:,} "
                        "MB: refused")  # fmt: skip
    held = _holdings(store_root)
    oldest_first = sorted((h for h in held if h.digest != digest), key=lambda h: h.used)
    owner = _folder_of(token)
    mine = [h for h in oldest_first if h.owner == owner]
    for victim in mine:
        if sum(h.own + h.extracted for h in held if h.owner == owner) + need <= quota:
            break
        _evict(victim, held)
    for victim in oldest_first:
        if _in_use(held) + need <= total:
            break
        if victim in held:
            _evict(victim, held)


def clean_stale(store_root: Path, older_than: float = archive.STALE_AFTER) -> None:
    """Remove what processes killed while writing left behind: partial uploads (``.tmp-*``
    parts, and their folders once empty) and partial extractions. Call once when the app
    starts; younger files may belong to a live process and are left alone."""
    now = time.time()
    for part in (Path(store_root) / "uploads").glob("*/*/.tmp-*"):
        with contextlib.suppress(OSError):
            if now - part.lstat().st_mtime > older_than:
                part.unlink()
                with contextlib.suppress(OSError):  # not empty: a finished zip is there
                    part.parent.rmdir()
    archive.clean_stale(older_than=older_than)


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
    return Balance(name, listing.classes, counts, listing.skipped, listing.renamed)


def check(path: str) -> Balance:
    """``balance``, with any failure as a one-line UserError (a damaged upload included)."""
    try:
        return balance(path)
    except OSError as e:
        raise UserError(f"{Path(path).name} cannot be read ({e.strerror or e})") from None
    except MemoryError:
        raise UserError(f"{Path(path).name} is too large to read here") from None
    except (ValueError, RuntimeError) as e:  # what a library says of a file it cannot use
        from core.worker import one_line

        raise UserError(f"{Path(path).name} cannot be used ({one_line(e)})") from None
