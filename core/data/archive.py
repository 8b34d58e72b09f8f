"""A zip of class folders -> a folder, extracted safely (seed 004's "bring your own photos").

Every entry is checked before a byte is written: no path that leaves the folder (``../``,
absolute, drive or UNC paths, backslashes, NUL bytes), no symlinks, no duplicate names, no
more than MAX_ENTRIES entries, no more than MAX_TOTAL_BYTES in all as the zip declares them,
no entry that inflates more than MAX_RATIO times and no zip that inflates more than
MAX_ZIP_RATIO times in all (a thousand 1 MiB entries of zeros pass every per-entry check and
make 1 GiB from a 1 MB zip), and the disk must keep FREE_MARGIN free after it. While
extracting, sizes are counted again, because a zip can lie about them. Everything goes to a
temporary folder inside the destination, renamed into place only when all of it passed; on
any refusal that folder is removed and nothing else was touched. macOS's ``__MACOSX/`` and
``.DS_Store`` are dropped. The extracted folder is named by the zip's content hash, so the
same zip is extracted once; each use touches it, so the least recently used can be evicted
first (``core.data.uploads`` keeps uploads and extractions within their quotas).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from core import UserError

MAX_ENTRIES = 20_000  # files and folders in one zip
MAX_TOTAL_BYTES = 1 << 30  # 1 GiB uncompressed in all: well above a class's photos
MAX_ENTRY_BYTES = 64 << 20  # one image file
MAX_RATIO = 200  # uncompressed / compressed, for entries above RATIO_FLOOR
RATIO_FLOOR = 1 << 20  # small files may compress well (a blank PNG); big ones may not
MAX_ZIP_RATIO = 100  # the whole zip's uncompressed / compressed, above ZIP_RATIO_FLOOR in all
ZIP_RATIO_FLOOR = 16 << 20  # photos barely compress (x1-x3); a small zip of drawings may more
FREE_MARGIN = 512 << 20  # left free on the disk after any write: the store and the OS need it
STALE_AFTER = 3600.0  # seconds: a temporary folder this old belongs to a process that died
MAX_HASHES = 256  # zips whose content hash is remembered
CHUNK = 1 << 20
JUNK = ("__MACOSX", ".DS_Store", "Thumbs.db")
SCRATCH, EVICTED = ".extract-", ".evicted-"  # prefixes of our temporary folders under root


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn-classroom" / "datasets"


_hashes: OrderedDict[tuple, str] = OrderedDict()  # a zip's stat -> its SHA-256, recent last
_hashes_lock = threading.Lock()


def sha256(path: Path) -> str:
    """The zip's content hash, computed once per version of the file: pages ask for the
    same upload on every rerun, and hashing 200 MB takes a second. A replaced or rewritten
    file (another inode, size, modification or change time) is hashed again."""
    about = os.stat(path)
    key = (str(Path(path).resolve()), about.st_dev, about.st_ino, about.st_size,
           about.st_mtime_ns, about.st_ctime_ns)  # fmt: skip
    with _hashes_lock:
        if key in _hashes:
            _hashes.move_to_end(key)
            return _hashes[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    value = digest.hexdigest()
    with _hashes_lock:
        _hashes[key] = value
        while len(_hashes) > MAX_HASHES:
            _hashes.popitem(last=False)
    return value


def ensure_free(folder: Path, need: int) -> None:
    """UserError unless the disk holding ``folder`` has ``need`` bytes and FREE_MARGIN to
    spare: a full disk breaks the store, the job queue and every other student at once."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need + FREE_MARGIN:
        raise UserError(f"the server's disk has {free >> 20:,} MB free; this zip needs "
                        f"{-(-need >> 20):,} MB and {FREE_MARGIN >> 20} MB must stay free: "
                        "refused (ask the teacher to free some space)")  # fmt: skip


def discard(folder: Path) -> None:
    """Remove an extraction: renamed out of sight in one step (a reader never finds half of
    it under its name), then deleted."""
    trash = Path(folder).with_name(f"{EVICTED}{Path(folder).name}-{time.time_ns()}")
    try:
        os.rename(folder, trash)
    except OSError:  # already gone
        return
    shutil.rmtree(trash, ignore_errors=True)


def clean_stale(root: str | Path | None = None, older_than: float = STALE_AFTER) -> None:
    """Remove temporary folders under ``root`` left by processes killed while extracting or
    evicting (younger ones may belong to a live process, and are left alone)."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return
    now = time.time()
    for folder in root.iterdir():
        if folder.name.startswith((SCRATCH, EVICTED)):
            with contextlib.suppress(OSError):
                if now - folder.lstat().st_mtime > older_than:
                    shutil.rmtree(folder)


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
        if info.flag_bits & 0x1:  # "encrypted" in the entry's header
            raise UserError("the zip is protected by a password; zip the folders again "
                            "without one")  # fmt: skip
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
    packed = sum(info.compress_size for info, _ in keep)
    if total > ZIP_RATIO_FLOOR and total > MAX_ZIP_RATIO * packed:
        raise UserError(f"the zip inflates {total // max(1, packed):,} times in all "
                        f"({total >> 20:,} MiB from {-(-packed >> 20):,} MiB; at most "
                        f"{MAX_ZIP_RATIO} times): a zip bomb, refused")  # fmt: skip
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


def extraction(zip_path: str | Path, root: str | Path | None = None) -> Path:
    """Where ``extract`` keeps this zip's content (whether or not it is there yet)."""
    root = Path(root) if root is not None else default_root()
    return root / sha256(Path(zip_path))[:20]


def extract(zip_path: str | Path, root: str | Path | None = None) -> Path:
    """The folder the zip's class folders are in, extracted under ``root`` (the user cache by
    default) once per zip content. UserError, and nothing left behind, for any refused zip."""
    zip_path = Path(zip_path)
    root = Path(root) if root is not None else default_root()
    if not zipfile.is_zipfile(zip_path):
        raise UserError(f"{zip_path} is not a zip file")
    final = extraction(zip_path, root)
    if final.is_dir():
        with contextlib.suppress(OSError):  # a use: the least recently used go first
            os.utime(final)
        return _single_root(final)
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH, dir=root))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            entries = _check(zf.infolist())
            ensure_free(root, sum(info.file_size for info, _ in entries))
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
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
            zlib.error) as e:  # fmt: skip
        shutil.rmtree(scratch, ignore_errors=True)  # a damaged entry: CRC or deflate data
        raise UserError(f"{zip_path.name}: unreadable zip, damaged ({e})") from None
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _single_root(final)
