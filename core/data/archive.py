"""A zip of class folders -> a folder, extracted safely (seed 004's "bring your own photos").

Every entry is checked before a byte is written: no path that leaves the folder (``../``,
absolute, drive or UNC paths, backslashes, NUL bytes), no symlinks, no duplicate names, no
more than MAX_ENTRIES entries, no more than MAX_TOTAL_BYTES in all as the zip declares them,
and no entry that inflates more than MAX_RATIO times. While extracting, sizes are counted
again, because a zip can lie about them. Everything goes to a temporary folder inside the
destination, renamed into place only when all of it passed; on any refusal that folder is
removed and nothing else was touched. macOS's ``__MACOSX/`` and ``.DS_Store`` are dropped.
The extracted folder is named by the zip's content hash, so the same zip is extracted once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from core import UserError

MAX_ENTRIES = 20_000  # files and folders in one zip
MAX_TOTAL_BYTES = 1 << 30  # 1 GiB uncompressed in all: well above a class's photos
MAX_ENTRY_BYTES = 64 << 20  # one image file
MAX_RATIO = 200  # uncompressed / compressed, for entries above RATIO_FLOOR
RATIO_FLOOR = 1 << 20  # small files may compress well (a blank PNG); big ones may not
CHUNK = 1 << 20
JUNK = ("__MACOSX", ".DS_Store", "Thumbs.db")


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-classroom" / "datasets"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _safe_name(name: str) -> PurePosixPath | None:
    """The entry's relative path, None for junk to skip; UserError for a dangerous one."""
    if "\x00" in name or "\\" in name:
        raise UserError(f"zip entry {name!r} has a backslash or NUL byte in its name: refused")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (path.parts and ":" in path.parts[0]):
        raise UserError(f"zip entry {name!r} is an absolute path: refused")
    if ".." in path.parts:
        raise UserError(f"zip entry {name!r} points outside the dataset folder: refused")
    if any(part in JUNK for part in path.parts):
        return None
    return path


def _check(infos: list[zipfile.ZipInfo]) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The entries to extract, after every check that needs no decompression."""
    if len(infos) > MAX_ENTRIES:
        raise UserError(f"the zip has {len(infos):,} entries; at most {MAX_ENTRIES:,} are "
                        "accepted")  # fmt: skip
    keep, seen, total = [], set(), 0
    for info in infos:
        path = _safe_name(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UserError(f"zip entry {info.filename!r} is a symbolic link: refused")
        if path is None or info.is_dir():
            continue
        key = str(path).lower()  # case-insensitive file systems would merge these
        if key in seen:
            raise UserError(f"zip entry {info.filename!r} appears twice: refused")
        seen.add(key)
        if info.file_size > MAX_ENTRY_BYTES:
            raise UserError(f"zip entry {info.filename!r} is {info.file_size >> 20} MiB; at most "
                            f"{MAX_ENTRY_BYTES >> 20} MiB per file")  # fmt: skip
        ratio = info.file_size // max(1, info.compress_size)
        if info.file_size > RATIO_FLOOR and ratio > MAX_RATIO:
            raise UserError(f"zip entry {info.filename!r} inflates {ratio:,} times: a zip bomb, "
                            "refused")  # fmt: skip
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise UserError(f"the zip unpacks to more than {MAX_TOTAL_BYTES >> 30} GiB: refused")
        keep.append((info, path))
    if not keep:
        raise UserError("the zip holds no files")
    return keep


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: list[int]) -> None:
    """Stream one entry, stopping the moment it passes its declared size or the total cap."""
    written = 0
    with zf.open(info) as src, open(target, "xb") as dst:
        while block := src.read(CHUNK):
            written += len(block)
            budget[0] -= len(block)
            if written > info.file_size or budget[0] < 0:
                raise UserError(f"zip entry {info.filename!r} holds more than it declares: "
                                "a zip bomb, refused")  # fmt: skip
            dst.write(block)


def _single_root(folder: Path) -> Path:
    """A zip of ``photos/<class>/...`` is used from ``photos/``."""
    children = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        inner = children[0]
        grandchildren = [p for p in inner.iterdir() if p.is_dir()]
        if len(grandchildren) >= 1:
            return inner
    return folder


def extract(zip_path: str | Path, root: str | Path | None = None) -> Path:
    """The folder the zip's class folders are in, extracted under ``root`` (the user cache by
    default) once per zip content. UserError, and nothing left behind, for any refused zip."""
    zip_path = Path(zip_path)
    root = Path(root) if root is not None else default_root()
    if not zipfile.is_zipfile(zip_path):
        raise UserError(f"{zip_path} is not a zip file")
    final = root / sha256(zip_path)[:20]
    if final.is_dir():
        return _single_root(final)
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            entries = _check(zf.infolist())
            budget = [MAX_TOTAL_BYTES]
            for info, path in entries:
                target = scratch.joinpath(*path.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                # After mkdir: no parent can be a link (none were written), so this stays
                # inside the scratch folder; check it anyway.
                if not target.resolve().is_relative_to(scratch.resolve()):
                    raise UserError(f"zip entry {info.filename!r} leaves the folder: refused")
                _copy(zf, info, target, budget)
        try:
            scratch.rename(final)
        except OSError:  # another process extracted the same zip meanwhile
            shutil.rmtree(scratch, ignore_errors=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as e:
        shutil.rmtree(scratch, ignore_errors=True)
        raise UserError(f"{zip_path.name}: unreadable zip ({e})") from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _single_root(final)
