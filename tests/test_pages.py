"""Evaluate and Compare, headless (streamlit.testing), on a store with two tiny runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import streamlit as st
from conftest import ROOT, TINY
from streamlit.testing.v1 import AppTest

from core import metrics
from core.runs import train_or_load
from core.store import Store

EVALUATE = str(ROOT / "views" / "evaluate.py")
COMPARE = str(ROOT / "views" / "compare.py")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A store holding TINY and the same run with another seed."""
    root = tmp_path_factory.mktemp("pages-store")
    other = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, seed=1))
    metas = [list(train_or_load(cfg, Store(root)))[-1].meta for cfg in (TINY, other)]
    return root, metas


@pytest.fixture
def store_env(two_runs, monkeypatch):
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(two_runs[0]))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield two_runs[1]
    st.cache_data.clear()
    st.cache_resource.clear()


def test_evaluate_shows_the_report_and_gallery(store_env):
    at = AppTest.from_file(EVALUATE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    meta = next(m for m in store_env if m["run_id"] == at.selectbox[0].value)
    assert [m.value for m in at.metric][:1] == [f"{meta['test']['accuracy']:.4f}"]
    report = at.dataframe[0].value
    assert len(report) == len(meta["classes"]) + 2  # classes, macro and weighted averages
    assert len(at.get("plotly_chart")) >= 2  # curves and the confusion matrix
    # The top-losses gallery: one HTML grid of 24 images, each captioned.
    (grid,) = [h.proto.body for h in at.get("html") if 'data-gallery="losses"' in h.proto.body]
    assert grid.count("<img ") == grid.count("<figcaption") == 24


def test_evaluate_cell_selection_shows_that_cell(store_env):
    """What a click on a cell does: the gallery lists exactly that (true, predicted) pair."""
    from core import data as datasets
    from core.config import DataConfig
    from core.train import predict_proba

    meta = store_env[0]
    model, _ = Store().load_model(meta["run_id"])
    data = datasets.load(DataConfig(**meta["config"]["data"]))
    y_pred = predict_proba(model, data.x_test).argmax(1)
    cm = np.array(meta["test"]["confusion_matrix"])
    for true, pred in [(0, 0), (3, 8), (9, 9)]:
        idx = metrics.pair_indices(data.y_test, y_pred, true, pred)
        assert len(idx) == cm[true, pred]
        assert (data.y_test[idx] == true).all() and (y_pred[idx] == pred).all()


def test_compare_puts_runs_side_by_side(store_env):
    at = AppTest.from_file(COMPARE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert table.shape[1] == 2  # two runs (digits: no paper column)
    accuracies = sorted(float(v) for v in table.iloc[0])
    assert accuracies == sorted(m["test"]["accuracy"] for m in store_env)
    assert len(at.get("plotly_chart")) == 1


def test_compare_in_spanish(store_env):
    at = AppTest.from_file(COMPARE, default_timeout=120)
    at.session_state["lang"] = "es"
    at.run()
    assert not at.exception
    assert at.title[0].value == "Compara entrenamientos"


def test_evaluate_and_compare_with_an_empty_store(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    st.cache_data.clear()
    st.cache_resource.clear()
    for page in (EVALUATE, COMPARE):
        at = AppTest.from_file(page, default_timeout=120).run()
        assert not at.exception
        assert at.info, page  # says how to get runs, no traceback


def test_a_gallery_is_one_grid_of_inline_images_with_escaped_captions():
    import base64
    import io

    from PIL import Image

    from ui.gallery import MAX_SENT, OK_COLOR, WRONG_COLOR, gallery_html

    digits = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 1, 28, 28)
    grid = gallery_html(digits, ["<script>x</script>", "b & c"], [True, False], columns=5,
                        name="cell")  # fmt: skip
    assert grid.startswith('<div data-gallery="cell"') and "repeat(5," in grid
    assert "<script>" not in grid and "&lt;script&gt;x&lt;/script&gt;" in grid
    assert "b &amp; c" in grid
    assert grid.index(OK_COLOR) < grid.index(WRONG_COLOR)  # first right, second wrong
    assert grid.count("image-rendering:pixelated") == 2  # small images enlarged crisply
    # Each image travels at its own size and decodes to exactly its pixels.
    first = grid.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(first))))
    assert np.array_equal(decoded, digits[0, 0])

    photos = np.zeros((1, 3, 288, 288), dtype=np.uint8)  # a folder's photos: scaled down
    src = gallery_html(photos, ["ant"]).split("base64,", 1)[1].split('"', 1)[0]
    assert Image.open(io.BytesIO(base64.b64decode(src))).size == (MAX_SENT, MAX_SENT)
    assert "pixelated" not in gallery_html(photos, ["ant"])


def test_the_hover_atlas_holds_every_image_in_its_cell():
    import io

    from PIL import Image

    from ui.thumbs import COLUMNS, MAX_SIDE, MIN_SIDE, atlas_png, thumb_side

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(COLUMNS + 3, 1, 28, 28), dtype=np.uint8)
    png, side = atlas_png(grey)
    atlas = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert side == 28 and atlas.shape == (2 * 28, COLUMNS * 28)  # two rows, the last padded
    for i in (0, 1, COLUMNS - 1, COLUMNS, COLUMNS + 2):
        row, col = divmod(i, COLUMNS)
        cell = atlas[row * side : (row + 1) * side, col * side : (col + 1) * side]
        assert np.array_equal(cell, (grey[i, 0] >> 4) * 17)  # 16 grey levels

    photos = np.zeros((3, 3, 288, 288), dtype=np.uint8)
    photos[1, 0] = 255  # the second photo is red
    png, side = atlas_png(photos)
    atlas = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert side == MAX_SIDE and atlas.shape == (MAX_SIDE, COLUMNS * MAX_SIDE, 3)
    assert (atlas[:, side : 2 * side] == [255, 0, 0]).all() and (atlas[:, :side] == 0).all()
    # A large set of photos gets smaller thumbnails: the atlas stays within its budget.
    assert thumb_side(10_000, 288) == 28 and thumb_side(1_000_000, 288) == MIN_SIDE


def test_the_hover_atlas_is_kept_on_disk_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    import ui.thumbs as thumbs

    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    st.cache_data.clear()
    st.cache_resource.clear()
    images = np.random.default_rng(1).integers(0, 256, (150, 1, 28, 28), dtype=np.uint8)
    png, side = thumbs._atlas("some-dataset", images.shape, images)
    (kept,) = (tmp_path / "embeddings").glob("atlas-*.png")
    assert kept.read_bytes() == png and side == 28

    def no_rebuild(_images):
        raise AssertionError("rebuilt although it is on disk")

    st.cache_data.clear()  # a restarted server: it reads the file
    monkeypatch.setattr(thumbs, "atlas_png", no_rebuild)
    assert thumbs._atlas("some-dataset", images.shape, images) == (png, side)

    kept.write_bytes(png[: len(png) // 2])  # damaged: built again and replaced
    st.cache_data.clear()
    monkeypatch.undo()
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(tmp_path))
    assert thumbs._atlas("some-dataset", images.shape, images) == (png, side)
    assert kept.read_bytes() == png
    st.cache_data.clear()
    st.cache_resource.clear()
