"""Zip datasets (issue 7): a class's zip of photos is extracted once, safely; every malicious
zip of ../shared/DESIGN.md's checklist is refused with one message, writes nothing outside
its own folder, and leaves no temporary files."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import UserError
from core.data import archive


def png(value: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def photos(prefix: str = "") -> dict[str, bytes]:
    """Two classes of tiny photos, plus the junk a Mac adds."""
    entries = {f"{prefix}{c}/{i}.png": png(20 * i + (120 if c == "bees" else 0))
               for c in ("ants", "bees") for i in range(6)}  # fmt: skip
    return entries | {f"__MACOSX/{prefix}ants/._0.png": b"junk", f"{prefix}.DS_Store": b"junk"}


def everything(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def work(tmp_path) -> tuple[Path, Path]:
    """(the folder zips are extracted under, a sibling that must stay empty)."""
    root, outside = tmp_path / "datasets", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def test_a_zip_of_class_folders_is_extracted_once_without_junk(tmp_path, work):
    root, _ = work
    zipped = write_zip(tmp_path / "bugs.zip", photos("bugs/"))  # one nested root folder
    folder = archive.extract(zipped, root)
    assert sorted(p.name for p in folder.iterdir()) == ["ants", "bees"]
    assert not any("MACOSX" in p or "DS_Store" in p for p in everything(root))
    assert archive.extract(zipped, root) == folder  # the same content: no second copy
    assert len(list(root.iterdir())) == 1

    from core.data import folder as folders

    listing = folders.scan(folder)
    assert listing.classes == ("ants", "bees") and len(listing.files["all"]) == 12


def symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ants/0.png", png(1))
        link = zipfile.ZipInfo("bees/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return path


def bomb_zip(path: Path, mib: int = 1024) -> Path:
    """One entry of ``mib`` MiB of zeros (a thousandth of that compressed), beside a photo."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ants/0.png", png(1))
        with zf.open("bees/0.png", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(mib):
                f.write(block)
    return path


def lying_zip(path: Path) -> Path:
    """An entry whose central directory claims 100 bytes for 3 MiB of data."""
    noise = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    write_zip(path, {"ants/0.png": png(1), "bees/0.png": noise})
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x01\x02")  # the last central-directory record: bees/0.png
    struct.pack_into("<I", data, at + 24, 100)  # its uncompressed size
    path.write_bytes(bytes(data))
    return path


def many_bombs_zip(path: Path, n: int = 40) -> Path:
    """``n`` entries of 1 MiB of zeros: each passes the per-entry checks (1 MiB is no more
    than a photo, and small files may compress well), the whole zip inflates 1,000 times."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ants/0.png", png(1))
        for i in range(n):
            zf.writestr(f"bees/{i}.png", bytes(1 << 20))
    return path


def many_zip(path: Path, n: int = 100_000) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"ants/{i}.png", b"x")
    return path


MALICIOUS = {
    "dotdot": (lambda p: write_zip(p, {"ants/0.png": png(1), "../evil.png": png(2)}),
               "outside the dataset folder"),
    "nested dotdot": (lambda p: write_zip(p, {"ants/../../evil.png": png(2)}), "outside"),
    "absolute": (lambda p: write_zip(p, {"ants/0.png": png(1), "/tmp/evil.png": png(2)}),
                 "absolute path"),
    "drive": (lambda p: write_zip(p, {"C:/evil.png": png(2)}), "absolute path"),
    "backslash": (lambda p: write_zip(p, {"..\\evil.png": png(2)}), "backslash"),
    "symlink": (symlink_zip, "symbolic link"),
    "duplicate": (lambda p: write_zip(p, {"ants/0.png": png(1), "ANTS/0.png": png(2)}),
                  "appears twice"),
    "1 GiB bomb": (bomb_zip, "1024 MiB; at most 64 MiB per file"),
    "small bomb": (lambda p: bomb_zip(p, mib=32), "inflates 1,0[0-9]{2} times: a zip bomb"),
    "many small bombs": (many_bombs_zip, "inflates [0-9,]+ times in all .40 MiB from 1 MiB"),
    "lying sizes": (lying_zip, "zip"),
    "100k entries": (many_zip, "100,000 entries"),
    "not a zip": (lambda p: p.write_bytes(b"%PDF-1.4 not a zip") and p, "not a zip file"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_each_malicious_zip_is_refused_and_leaves_nothing(tmp_path, work, case):
    root, outside = work
    build, message = MALICIOUS[case]
    zipped = build(tmp_path / "bad.zip")
    before = everything(tmp_path)
    with pytest.raises(UserError, match=message):
        archive.extract(zipped, root)
    assert everything(tmp_path) == before  # no temporary folder, nothing outside
    assert not any(outside.iterdir()) and not any(root.iterdir())


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink", "1 GiB bomb", "100k entries"])
def test_the_command_line_refuses_each_bad_zip_in_one_line(tmp_path, run_cli, case):
    build, message = MALICIOUS[case]
    zipped = build(tmp_path / "bad.zip")
    before = everything(tmp_path)
    proc = run_cli("train", "--model", "fast", "--dataset", str(zipped),
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache")})  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert re.search(message, proc.stderr)
    new = everything(tmp_path) - before
    assert all((tmp_path / p).is_dir() for p in new), new  # the cache folders, not one file
    assert not any(Path(p).name.startswith(".extract") for p in new)


def test_the_command_line_trains_on_a_zip(tmp_path, run_cli):
    zipped = write_zip(tmp_path / "bugs.zip", photos("bugs/"))
    out = tmp_path / "run.json"
    proc = run_cli("train", "--model", "fast", "--dataset", str(zipped), "--image-size", "16",
                   "--epochs", "1", "--batch-size", "4", "--no-map", "--json", str(out),
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["test"]["per_class"]) == {"ants", "bees"}
    extracted = list((tmp_path / "cache" / "cnn-classroom" / "datasets").iterdir())
    assert len(extracted) == 1 and not extracted[0].name.startswith(".")
    assert os.listdir(extracted[0]) == ["bugs"]


def test_a_zip_is_refused_when_the_disk_is_nearly_full(tmp_path, work, monkeypatch):
    root, _ = work
    zipped = write_zip(tmp_path / "bugs.zip", photos())
    real = shutil.disk_usage(root)
    free = archive.FREE_MARGIN + 1000  # the photos unpack to more than 1,000 bytes
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda _: real._replace(free=free))
    with pytest.raises(UserError, match=r"^the server's disk has 512 MB free; this zip needs 1 MB"):
        archive.extract(zipped, root)
    assert not any(root.iterdir())
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda _: real._replace(free=free << 1))
    assert sorted(p.name for p in archive.extract(zipped, root).iterdir()) == ["ants", "bees"]


def test_stale_partial_extractions_are_cleaned_and_live_ones_kept(tmp_path, work):
    root, _ = work
    old = [root / ".extract-dead", root / ".evicted-0123-5"]
    young = root / ".extract-live"
    for folder in [*old, young]:
        (folder / "ants").mkdir(parents=True)
        (folder / "ants" / "0.png").write_bytes(png(1))
    for folder in old:
        os.utime(folder, (time.time() - 2 * archive.STALE_AFTER,) * 2)
    kept = archive.extract(write_zip(tmp_path / "bugs.zip", photos()), root)  # cleans first
    assert sorted(p.name for p in root.iterdir()) == sorted([".extract-live", kept.name])
    archive.clean_stale(root, older_than=0)
    assert [p.name for p in root.iterdir()] == [kept.name]  # never a finished extraction


def test_each_use_of_an_extraction_marks_it_recently_used(tmp_path, work):
    root, _ = work
    zipped = write_zip(tmp_path / "bugs.zip", photos())
    folder = archive.extract(zipped, root)
    os.utime(folder, (1_000_000, 1_000_000))
    assert archive.extract(zipped, root) == folder
    assert folder.stat().st_mtime > time.time() - 60


def test_a_zip_replaced_under_the_same_name_is_extracted_again(tmp_path, work):
    root, _ = work
    zipped = write_zip(tmp_path / "bugs.zip", photos())
    first = archive.extract(zipped, root)
    write_zip(zipped, {"cats/0.png": png(1), "dogs/0.png": png(2)})
    second = archive.extract(zipped, root)
    assert second != first and sorted(p.name for p in second.iterdir()) == ["cats", "dogs"]
