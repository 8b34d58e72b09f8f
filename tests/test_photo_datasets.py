"""Datasets of one's own photos on the Train page (issue 7): uploads kept per visitor, folders
the teacher offers, the class balance, refusals, and a backbone trained on them; their images
read as the Classify tab reads uploads (issue 18, item 7)."""

from __future__ import annotations

import io
import shutil
import zipfile

import numpy as np
import pytest
from conftest import open_page, widget
from PIL import Image
from test_backbone import write_photos

from core import UserError
from core.data import folder
from core.data import uploads as photo_sets


def test_an_upload_is_kept_once_per_content_and_only_for_its_visitor(tmp_path):
    content = b"PK\x05\x06" + bytes(18)  # an empty zip
    first = photo_sets.save_upload(tmp_path, "a" * 16, "../../My photos!.zip", content)
    again = photo_sets.save_upload(tmp_path, "a" * 16, "other name.zip", content)
    assert first == again and first.name == "My-photos.zip"  # no path parts, safe characters
    assert first.is_relative_to(photo_sets.upload_dir(tmp_path, "a" * 16))
    assert "a" * 16 not in str(first)  # a run's stored config shows this path to everyone
    assert first.read_bytes() == content
    assert not list(first.parent.glob("*.part"))  # written through a temporary file
    assert list(photo_sets.uploads(tmp_path, "a" * 16).values()) == [str(first)]
    assert photo_sets.uploads(tmp_path, "b" * 16) == {}  # another visitor sees nothing
    photo_sets.forget_upload(first)
    assert not first.parent.exists()


def test_the_balance_of_a_zip_counts_images_per_split_and_skipped_files(tmp_path):
    folder = write_photos(tmp_path / "bugs", per_class=5)
    (folder / "bees" / "notes.txt").write_text("not an image")
    (folder / "ants" / "4.jpg").unlink()  # 4 ants, 5 bees
    zipped = shutil.make_archive(str(tmp_path / "bugs"), "zip", tmp_path, "bugs")
    info = photo_sets.check(zipped)
    assert info.name == "bugs.zip" and info.classes == ("ants", "bees")
    assert list(info.counts["all"]) == [4, 5] and info.total == 9
    assert info.skipped == 1 and info.ratio == pytest.approx(1.25)


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"../evil/a.png": b"x", "ants/a.png": b"x"}, "outside the dataset folder"),
        ({"ants/a.png": b"x"}, "two classes"),
        ({"readme.txt": b"hello"}, "no images"),
    ],
)
def test_unusable_zips_are_refused_with_one_line(tmp_path, entries, message):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    with pytest.raises(UserError, match=message):
        photo_sets.check(str(path))


def test_teacher_folders_are_offered_by_name(tmp_path, monkeypatch):
    write_photos(tmp_path / "class" / "bugs")
    (tmp_path / "class" / "notes").mkdir()  # a folder without class folders: not offered
    write_photos(tmp_path / "single")  # a listed folder may itself be a dataset
    monkeypatch.setenv(photo_sets.ENV_FOLDERS, f"{tmp_path / 'class'}:{tmp_path / 'single'}")
    offered = photo_sets.offered_folders()
    assert offered == {"bugs": str((tmp_path / "class" / "bugs").resolve()),
                       "single": str((tmp_path / "single").resolve())}  # fmt: skip


def test_train_page_trains_a_backbone_on_an_offered_folder(tmp_path, monkeypatch):
    write_photos(tmp_path / "class" / "bugs")
    monkeypatch.setenv(photo_sets.ENV_FOLDERS, str(tmp_path / "class"))
    at = open_page("train", monkeypatch, tmp_path / "store")
    widget(at, "selectbox", "Model").set_value("efficientnet_lite0").run()
    # The backbone's recipe fills the form, and its own options appear; on Fashion-MNIST's
    # 28-pixel images without the photos' 16-pixel shift.
    assert widget(at, "number_input", "Epochs").value == 8
    assert widget(at, "selectbox", "What trains").value == "frozen"
    assert widget(at, "slider", "Random shift (pixels)").value == 0
    at.selectbox(key="train_dataset").set_value(str((tmp_path / "class" / "bugs").resolve()))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("bugs: 16 images in 2 classes" in c.value for c in at.caption)
    assert widget(at, "slider", "Random shift (pixels)").value == 16
    assert widget(at, "checkbox", "Balance classes (oversample)").value  # balances if need be
    widget(at, "number_input", "Epochs").set_value(1).run()
    next(b for b in at.button if b.label == "Start").click().run()
    from ui.state import jobs

    try:
        job = jobs().wait(at.session_state["job"], 120)
        assert job.state == "done", job.snapshot()["message"]
        assert job.cfg.data.image_size == 288
        assert job.cfg.model.tune is None  # the model default, frozen, left unset
    finally:
        jobs().shutdown()


# -- reading the images (issue 18, item 7) -----------------------------------------------------


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def test_sixteen_bit_grey_photos_keep_their_contrast(tmp_path):
    """A 16-bit PNG (a scanner's, a microscope's) is scaled to 8 bits as the Classify tab
    scales it, not clipped at 255 (which left it almost all white)."""
    ramp = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    (tmp_path / "deep.png").write_bytes(saved(Image.fromarray(ramp), "PNG"))
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    pixels = folder.decode(tmp_path / "deep.png", 32, 1)
    assert pixels.min() < 20 and pixels.max() > 235
    assert 100 < pixels.mean() < 155 and (pixels == 255).mean() < 0.05
    assert not folder.is_color([tmp_path / "deep.png"])


def test_unreadable_and_disguised_images_are_skipped_and_counted(tmp_path):
    """Truncated files, and files named .png that are another format Pillow reads (TIFF,
    ICO) but the Classify tab does not accept, are skipped and counted; the rest loads."""
    root = write_photos(tmp_path / "bugs", per_class=4)
    photo = Image.open(root / "ants" / "0.jpg").convert("RGB")
    jpeg, png = saved(photo, "JPEG"), saved(photo, "PNG")
    (root / "ants" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "bees" / "cut.png").write_bytes(png[: len(png) // 2])
    (root / "bees" / "tiff.png").write_bytes(saved(photo, "TIFF"))
    (root / "bees" / "icon.png").write_bytes(saved(photo, "ICO"))
    listing = folder.scan(root)
    unreadable = []
    splits, color = folder.load(listing, 16, unreadable)
    assert sorted(p.name for p in unreadable) == ["cut.jpg", "cut.png", "icon.png", "tiff.png"]
    x, y = splits["all"]
    assert color and x.shape == (8, 3, 16, 16) and list(np.bincount(y)) == [4, 4]
    with pytest.raises(UserError, match="not a readable image"):
        folder.decode(root / "bees" / "tiff.png", 16, 3)
    for bad in ("cut.jpg", "cut.png"):
        with pytest.raises(UserError, match="not a readable image"):
            folder.decode(root / ("ants" if bad.endswith("jpg") else "bees") / bad, 16, 3)
    # What a run and the pages are told: the dataset's source names the count.
    from core import data as datasets
    from core.config import DataConfig

    loaded = datasets.load(DataConfig(str(root), val_size=2, image_size=16))
    assert "(4 unreadable images skipped)" in loaded.source


def test_a_class_without_one_readable_image_is_refused(tmp_path):
    root = write_photos(tmp_path / "bugs", per_class=2)
    tiff = saved(Image.new("RGB", (8, 8), "red"), "TIFF")
    for path in (root / "bees").iterdir():
        path.write_bytes(tiff)
    with pytest.raises(UserError, match="without a readable image: bees"):
        folder.load(folder.scan(root), 16)


@pytest.mark.parametrize("fmt, suffix", [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"),
                                         ("WEBP", "webp"), ("BMP", "bmp")])  # fmt: skip
def test_the_classify_tabs_formats_still_load(tmp_path, fmt, suffix):
    image = Image.new("RGB", (12, 10), (200, 30, 30))
    (tmp_path / f"a.{suffix}").write_bytes(saved(image, fmt))
    pixels = folder.decode(tmp_path / f"a.{suffix}", 8, 3)
    assert pixels.shape == (3, 8, 8) and pixels[0].mean() > 150 and pixels[2].mean() < 90
