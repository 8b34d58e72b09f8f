"""Uploaded zips on a class's server (issue 16): per-student and total quotas with
least-recently-used eviction, a free-space check, nothing left behind by a refused zip, and
stale temporary files cleaned at start."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import UserError
from core.data import archive
from core.data import uploads as photo_sets

A, B = "a" * 16, "b" * 16  # two visitors' tokens


def noise_png(seed: int, side: int = 64) -> bytes:
    """A photo that does not compress: 12 KB of PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def photo_zip(seed: int, per_class: int = 8, classes=("ants", "bees")) -> bytes:
    """A zip of photos: about 200 KB, and as much again unpacked (two fit in 1 MB, three
    do not); the same bytes for the same arguments (entries dated 2026-01-01)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for c, name in enumerate(classes):
            for i in range(per_class):
                entry = zipfile.ZipInfo(f"{name}/{i}.png", date_time=(2026, 1, 1, 0, 0, 0))
                zf.writestr(entry, noise_png(seed * 1000 + c * 100 + i))
    return buf.getvalue()


@pytest.fixture
def server(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(the store, the folder zips are extracted to), both empty, in this test's folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = tmp_path / "store"
    store.mkdir()
    return store, archive.default_root()


def upload(store: Path, token: str, seed: int, age: float = 0.0) -> Path:
    """Save a zip and check it, as the Train page does (which extracts it); ``age``: seconds
    since it was last used."""
    path = photo_sets.save_upload(store, token, f"photos{seed}.zip", photo_zip(seed))
    photo_sets.check(str(path))
    if age:
        set_age(path.parent, age)
        set_age(archive.extraction(path), age)
    return path


def set_age(path: Path, age: float) -> None:
    then = time.time() - age
    os.utime(path, (then, then))


def kept(store: Path, token: str) -> list[str]:
    """The visitor's uploads by file name."""
    return sorted(Path(p).name for p in photo_sets.uploads(store, token).values())


def extracted_zips(root: Path) -> set[str]:
    """The upload folders (content hashes) whose zips are extracted."""
    return {p.name[:16] for p in root.iterdir()} if root.is_dir() else set()


def files(folder: Path) -> list[Path]:
    """Every file under ``folder`` but the uploads' lock."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"]


def test_two_photo_zips_fit_in_a_megabyte_and_three_do_not():
    """The sizes the tests below rely on."""
    content = photo_zip(1)
    need = len(content) + photo_sets._unpacked(content)
    assert 2 * need < (1 << 20) < 3 * need


def test_a_students_least_recently_used_upload_makes_room(server, monkeypatch):
    store, root = server
    monkeypatch.setenv(photo_sets.QUOTA_ENV, "1")
    first = upload(store, A, 1, age=300)
    second = upload(store, A, 2, age=200)
    photo_sets.save_upload(store, A, "again.zip", photo_zip(1))  # the first again: a use
    other = upload(store, B, 4, age=400)  # another student's, older still
    third = upload(store, A, 3)
    assert kept(store, A) == ["photos1.zip", "photos3.zip"]
    assert not second.parent.exists() and first.exists() and third.exists()
    assert extracted_zips(root) == {p.parent.name for p in (first, third, other)}
    assert other.exists()  # a student's quota is their own


def test_the_total_quota_evicts_the_least_recently_used_of_anyone(server, monkeypatch, tmp_path):
    store, root = server
    monkeypatch.setenv(photo_sets.TOTAL_ENV, "1")
    cli_zip = tmp_path / "cli.zip"
    cli_zip.write_bytes(photo_zip(5))
    cli = archive.extraction(cli_zip)
    archive.extract(cli_zip)  # the command line's own extraction: no upload owns it
    set_age(cli, 500)
    first = upload(store, A, 1, age=300)
    second = upload(store, B, 2, age=100)
    third = upload(store, B, 3)
    assert not cli.exists() and not first.parent.exists()  # the two least recently used
    assert kept(store, A) == [] and kept(store, B) == ["photos2.zip", "photos3.zip"]
    assert extracted_zips(root) == {second.parent.name, third.parent.name}


def test_a_zip_above_the_quota_is_refused_and_nothing_is_written_or_evicted(server, monkeypatch):
    store, root = server
    monkeypatch.setenv(photo_sets.QUOTA_ENV, "1")
    before = upload(store, A, 1)
    big = photo_zip(2, per_class=30)  # 740 KB, and as much again unpacked
    with pytest.raises(UserError, match=r"^big\.zip takes 2 MB on the server \(the zip and its "
                       r"photos unpacked\); each student may keep 1 MB: refused$"):  # fmt: skip
        photo_sets.save_upload(store, A, "big.zip", big)
    assert [p.name for p in files(store)] == [before.name]
    assert extracted_zips(root) == {before.parent.name}


def test_a_zip_is_refused_when_the_disk_is_nearly_full(server, monkeypatch):
    store, root = server
    content = photo_zip(1)
    need = len(content) + photo_sets._unpacked(content)
    usage = archive.shutil.disk_usage(store)
    free = archive.FREE_MARGIN + need - 1
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda _: usage._replace(free=free))
    with pytest.raises(UserError, match=r"^the server.s disk has [0-9,]+ MB free; this zip needs"):
        photo_sets.save_upload(store, A, "photos.zip", content)
    assert files(store) == [] and not root.exists()


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"ants/0.png": noise_png(1), "ants/1.png": noise_png(2)}, "two classes"),
        ({"ants/0.png": noise_png(1), "bees/readme.txt": b"hello"}, "two classes"),
        ({"ants/notes.txt": b"x", "bees/notes.txt": b"y"}, "no images"),
    ],
    ids=["one class", "one class with images", "no images"],
)
def test_a_refused_zip_leaves_neither_upload_nor_extraction(server, entries, message):
    """The Train page's path: save, check, forget when refused (the zip itself is safe, so
    it is extracted before its folders are found unusable)."""
    store, root = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    path = photo_sets.save_upload(store, A, "mine.zip", buf.getvalue())
    with pytest.raises(UserError, match=message):
        photo_sets.check(str(path))
    photo_sets.forget_upload(path)
    assert files(store) == [] and files(root) == []


def test_stale_partial_uploads_and_extractions_are_cleaned_at_start(server):
    store, root = server
    kept_zip = upload(store, A, 1)
    dead = store / "uploads" / A / "0123456789abcdef" / ".tmp-x.part"  # a killed upload
    beside = kept_zip.parent / ".tmp-y.part"  # a killed upload of a zip that is there
    live = store / "uploads" / B / "fedcba9876543210" / ".tmp-z.part"  # being written now
    scratch = root / ".extract-dead"
    for path in (dead, beside, live, scratch / "ants" / "0.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    for path in (dead, beside, scratch):
        set_age(path, 2 * archive.STALE_AFTER)
    photo_sets.clean_stale(store)
    assert not dead.parent.exists() and not beside.exists() and not scratch.exists()
    assert live.exists() and kept_zip.exists()
    assert photo_sets.check(str(kept_zip)).total == 16


def test_a_bad_quota_setting_is_one_clear_line(server, monkeypatch):
    store, _ = server
    monkeypatch.setenv(photo_sets.QUOTA_ENV, "lots")
    with pytest.raises(UserError, match=r"^CNN_CLASSROOM_UPLOAD_QUOTA_MB must be a positive "
                       r"whole number of MB, not 'lots'$"):  # fmt: skip
        photo_sets.save_upload(store, A, "photos.zip", photo_zip(1))
