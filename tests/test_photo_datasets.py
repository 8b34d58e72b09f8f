"""Datasets of one's own photos on the Train page (issue 7): uploads kept per visitor, folders
the teacher offers, the class balance, refusals, and a backbone trained on them."""

from __future__ import annotations

import shutil
import zipfile

import pytest
from conftest import open_page, widget
from test_backbone import write_photos

from core import UserError
from ui import datasets as photo_sets


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
