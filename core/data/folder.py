"""Datasets from a folder of class folders: ``root/<class>/*.png`` or with ``train/``,
``val/`` and ``test/`` subfolders holding the class folders.

Images are decoded with Pillow under a pixel cap, resized on the shorter side and
centre-cropped (seed 004's fix for distortion), and held as uint8 arrays like Fashion-MNIST.
A dataset is capped when it is scanned, before any image is read: at most MAX_IMAGES images
(10,000 photos at a backbone's 288 pixels in colour already take 2.5 GB decoded) and
MAX_CLASSES classes. A zip is first extracted, safely, by ``core.data.archive``; this module
then reads the folder.

Folder names are a student's input: a class is named by its folder's name in a safe, short
form (``class_name``), which every page still escapes where it shows one. Images are read as
the Classify tab reads uploads: only its formats, judged by content; 16-bit grey scaled, not
clipped; a file that cannot be read is skipped and counted, not the end of the dataset.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
MAX_PIXELS = 40_000_000  # refuse larger images before decoding them (decompression bombs)
MAX_IMAGES = 10_000  # images in one dataset, all splits together
MAX_CLASSES = 100  # class folders in one dataset
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test"}  # fmt: skip
MAX_NAME = 40  # characters of a class name
NAME_CHARACTERS = "letters, digits, spaces and . , ( ) + - _"  # what a class name keeps


@dataclass(frozen=True)
class Listing:
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]  # split ("all" | "train" | "val" | "test") -> items
    skipped: int  # hidden or non-image files
    renamed: tuple[tuple[str, str], ...] = ()  # (folder name, class name) where they differ


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))


def class_name(folder: str) -> str:
    """A class folder's name as its class is named: letters, digits and their accents in
    any script (composed first: a Mac writes "é" as "e" and an accent), spaces and
    ``.,()+-_``; each run of other characters becomes "_"; at most MAX_NAME characters."""
    kept = "".join(c if unicodedata.category(c)[0] in "LNM" or c in " .,()+-_" else "\0"
                   for c in unicodedata.normalize("NFC", folder))  # fmt: skip
    return " ".join(re.sub("\0+", "_", kept).split())[:MAX_NAME].strip()


def _class_names(root: Path, folders: list[str]) -> dict[str, str]:
    """Each class folder's class name; UserError for a blank one or two that become one."""
    names = {f: class_name(f) for f in folders}
    if "" in names.values():
        raise UserError(f"dataset {root}: a class folder's name is blank; name it with "
                        "letters or digits")  # fmt: skip
    if clash := sorted(n for n, k in Counter(names.values()).items() if k > 1):
        raise UserError(f"dataset {root}: class names keep only {NAME_CHARACTERS} (at most "
                        f"{MAX_NAME}), and then more than one class folder is named "
                        f"{', '.join(map(repr, clash))}: rename them")  # fmt: skip
    return names


def scan(root: Path) -> Listing:
    """Find the classes and files; raise UserError for anything a run cannot use."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset {root} is not a folder")
    subdirs = _class_dirs(root)
    splits = {SPLIT_NAMES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_NAMES}
    layout = splits if "train" in splits else {"all": root}
    folders = sorted({d.name for folder in layout.values() for d in _class_dirs(folder)})
    if len(folders) > MAX_CLASSES:
        raise UserError(f"dataset {root} has {len(folders):,} class folders; at most "
                        f"{MAX_CLASSES} are accepted: refused")  # fmt: skip
    names = _class_names(root, folders)
    classes = [names[f] for f in folders]
    files: dict[str, list[tuple[Path, int]]] = {}
    skipped = found = 0
    for split, folder in layout.items():
        items = []
        for c, name in enumerate(folders):
            class_dir = folder / name
            if not class_dir.is_dir():
                continue
            for f in sorted(class_dir.rglob("*")):
                if f.is_symlink() or not f.is_file():
                    continue
                if is_image(f):
                    items.append((f, c))
                    found += 1
                    if found > MAX_IMAGES:  # stop reading the folder here
                        raise UserError(f"dataset {root} holds more than {MAX_IMAGES:,} "
                                        "images; at most that many are accepted: refused "
                                        "(pick fewer per class)")  # fmt: skip
                else:
                    skipped += 1
        files[split] = items
    total = sum(len(v) for v in files.values())
    if total == 0:
        raise UserError(f"dataset {root} holds no images (PNG, JPEG, GIF, WEBP or BMP)")
    counts = np.bincount([c for items in files.values() for _, c in items], minlength=len(classes))
    if len(classes) < 2 or (counts > 0).sum() < 2:
        raise UserError(f"dataset {root} needs at least two classes with images (one folder each)")
    if (counts == 0).any():
        empty = [classes[i] for i in np.flatnonzero(counts == 0)]
        raise UserError(f"dataset {root}: class folder(s) without images: {', '.join(empty)}")
    # Only what a reader can see: a Mac's decomposed "é" is composed without a word.
    renamed = tuple((f, n) for f, n in names.items() if unicodedata.normalize("NFC", f) != n)
    return Listing(tuple(classes), files, skipped, renamed)


def decode(path: Path, size: int, channels: int) -> np.ndarray:
    """One image -> (channels, size, size) uint8: EXIF-rotated, 16-bit grey scaled to 8 bits,
    shorter side resized to ``size``, centre-cropped. Raises UserError for a file that is
    not one of the Classify tab's formats (by content), oversized, truncated or corrupt."""
    from PIL import Image, ImageOps

    from core.preprocess import READ_ERRORS, UPLOAD_FORMATS, eight_bit

    try:
        with Image.open(path, formats=UPLOAD_FORMATS) as img:
            if img.width * img.height > MAX_PIXELS:
                raise UserError(f"{path.name}: {img.width}x{img.height} pixels is too large")
            img.seek(0)  # animated files: the first frame
            img = eight_bit(ImageOps.exif_transpose(img))
            img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info
                              else "RGB")  # fmt: skip
            if img.mode == "RGBA":  # transparent pixels become white, as on a page
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            img = img.convert("L" if channels == 1 else "RGB")
            img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)  # resize + crop
            arr = np.asarray(img, dtype=np.uint8)
    except (*READ_ERRORS, Image.DecompressionBombError) as e:
        raise UserError(f"{path.name} is not a readable image ({type(e).__name__})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def is_color(paths: list[Path], sample: int = 50) -> bool:
    """True when any of the first ``sample`` images that can be read has colour."""
    from PIL import Image

    from core.preprocess import READ_ERRORS, UPLOAD_FORMATS

    for path in paths[:sample]:
        try:
            with Image.open(path, formats=UPLOAD_FORMATS) as img:
                if img.mode not in ("1", "L", "LA", "I", "F") and not img.mode.startswith("I;16"):
                    return True
        except (*READ_ERRORS, Image.DecompressionBombError):
            continue
    return False


def fingerprint(listing: Listing) -> str:
    """Hash of every file's split, class, name and bytes, and of the folder names that were
    renamed (two folders whose names differ only in what the class name drops differ)."""
    h = hashlib.sha256("|".join(listing.classes).encode())
    if listing.renamed:
        h.update(repr(listing.renamed).encode())
    for split, items in sorted(listing.files.items()):
        for path, c in items:
            h.update(f"{split}/{c}/{path.name}".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def load(listing: Listing, size: int, unreadable: list[Path] | None = None
         ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], bool]:  # fmt: skip
    """Decode every listed image: ({split: (x (N, C, size, size) uint8, y)}, colour?).

    A file that cannot be decoded (see ``decode``) is skipped and appended to
    ``unreadable`` (when given), for the report; UserError when a class is left without
    any image.
    """
    color = is_color([p for items in listing.files.values() for p, _ in items])
    channels = 3 if color else 1
    unreadable = [] if unreadable is None else unreadable
    out = {}
    for split, items in listing.files.items():
        xs, ys = [], []
        for path, c in items:
            try:
                xs.append(decode(path, size, channels))
                ys.append(c)
            except UserError:
                unreadable.append(path)
        x = np.stack(xs) if xs else np.zeros((0, channels, size, size), np.uint8)
        out[split] = (x, np.asarray(ys, dtype=np.int64))
    _check_readable(listing, out)
    return out, color


def _check_readable(listing: Listing, splits: dict) -> None:
    """UserError naming the classes none of whose images could be read."""
    counts = sum(np.bincount(y, minlength=len(listing.classes)) for _, y in splits.values())
    if empty := [listing.classes[i] for i in np.flatnonzero(counts == 0)]:
        raise UserError(f"class folder(s) without a readable image: {', '.join(empty)}")
