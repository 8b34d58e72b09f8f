"""Embeddings: features, the three projections, the on-disk cache and the page."""

from __future__ import annotations

import json

import numpy as np
import pytest
import streamlit as st
from conftest import ROOT
from streamlit.testing.v1 import AppTest

from core import embed

N = 300  # points: enough for t-SNE and UMAP to run their real code paths, fast


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """(N, 64) float32 points in three well-separated clusters, and their labels."""
    rng = np.random.default_rng(0)
    y = np.arange(N) % 3
    x = rng.normal(size=(N, 64)).astype(np.float32) + 8 * np.eye(3, 64, dtype=np.float32)[y]
    return x, y


def separated(coords: np.ndarray, y: np.ndarray) -> float:
    """Share of points whose nearest map neighbour has the same label."""
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((y[d.argmin(1)] == y).mean())


def test_features_shape_and_mode(tiny_run):
    from core.store import Store

    model, _ = Store(tiny_run.root).load_model(tiny_run.run_id)
    images = np.random.default_rng(0).integers(0, 256, (37, 1, 28, 28), dtype=np.uint8)
    feats = embed.features(model, images, batch=16)  # several batches, a ragged last one
    assert feats.dtype == np.float32 and feats.shape[0] == 37 and feats.ndim == 2
    assert np.isfinite(feats).all()
    assert not model.training
    model.train()
    assert np.allclose(embed.features(model, images), feats, atol=1e-5)  # eval inside
    assert model.training  # and the caller's mode restored


def test_pixels_are_flat_and_scaled():
    images = np.full((5, 1, 4, 4), 255, dtype=np.uint8)
    x = embed.pixels(images)
    assert x.shape == (5, 16) and x.dtype == np.float32 and x.max() == 1.0


def test_pca_shape_and_oracle(blobs):
    from sklearn.decomposition import PCA

    x, _ = blobs
    out = embed.pca(x)
    assert out.shape == (N, 2) and out.dtype == np.float32
    ref = PCA(2).fit_transform(x)
    assert np.allclose(np.abs(out), np.abs(ref), atol=1e-3)  # same up to each axis' sign
    assert embed.project("pca", x[:, :1]).shape == (N, 2)  # one feature: a line


def test_tsne_maps_and_reports_progress(blobs):
    x, y = blobs
    calls = []
    coords = embed.tsne(x, callback=lambda it, emb: calls.append((it, emb.shape)))
    assert coords.shape == (N, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all()
    iterations = [it for it, _ in calls]
    every = embed.TSNE_CALLBACK_EVERY
    assert iterations == list(range(every, embed.TSNE_ITERATIONS + 1, every))  # one count
    assert all(shape == (N, 2) for _, shape in calls)
    assert separated(coords, y) > 0.95


def test_umap_maps(blobs):
    x, y = blobs
    coords = embed.project("umap", x)
    assert coords.shape == (N, 2) and coords.dtype == np.float32
    assert np.isfinite(coords).all()
    assert separated(coords, y) > 0.95


def test_unknown_method_is_refused(blobs):
    with pytest.raises(ValueError, match="unknown projection"):
        embed.project("mds", blobs[0])


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_collapsed_features_are_refused_not_crashed_on(method):
    # A network on the edge of diverging can map every image to one point; openTSNE then
    # crashed the whole server process (a segmentation fault) instead of raising.
    same = np.full((300, 8), 3.25, np.float32) + np.float32(1e-7) * np.arange(300)[:, None] % 2
    with pytest.raises(embed.CollapsedFeatures, match="same features"):
        embed.project(method, same)


def test_non_finite_features_still_map(blobs):
    x = np.array(blobs[0], dtype=np.float32)
    x[0, 0], x[1, 1], x[2, 2] = np.nan, np.inf, -np.inf
    coords = embed.project("tsne", x)
    assert coords.shape == (len(x), 2) and np.isfinite(coords).all()


def test_cache_round_trip_without_pickle(tmp_path):
    key = embed.CacheKey("0123456789abcdef0123", "tsne", 7, seed=3)
    coords = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    assert embed.load_cached(key, tmp_path) is None
    path = embed.save_cached(key, coords, tmp_path)
    assert path.parent == tmp_path / "embeddings" and path.suffix == ".npy"
    assert np.array_equal(np.load(path, allow_pickle=False), coords)
    assert np.array_equal(embed.load_cached(key, tmp_path), coords)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    # Another seed, method or size is another map.
    for other in (embed.CacheKey(key.source, "tsne", 7, 4), embed.CacheKey(key.source, "umap", 7)):
        assert embed.load_cached(other, tmp_path) is None


def test_cache_never_unpickles_and_drops_bad_files(tmp_path):
    key = embed.CacheKey("pixels-00ff", "pca", 3)
    folder = tmp_path / "embeddings"
    folder.mkdir()
    np.save(folder / key.filename(), np.array([{"x": 1}], dtype=object), allow_pickle=True)
    assert embed.load_cached(key, tmp_path) is None  # an object array: refused, not loaded
    (folder / key.filename()).write_bytes(b"garbage")
    assert embed.load_cached(key, tmp_path) is None
    np.save(folder / key.filename(), np.zeros((4, 2), np.float32))  # wrong number of points
    assert embed.load_cached(key, tmp_path) is None
    np.save(folder / key.filename(), np.full((3, 2), np.nan, np.float32))
    assert embed.load_cached(key, tmp_path) is None


@pytest.mark.parametrize("source", ["../x", "A" * 20, "", "x/y", "pixels_1"])
def test_cache_key_refuses_odd_sources(source):
    with pytest.raises(ValueError):
        embed.CacheKey(source, "pca", 3).filename()


def test_cached_projection_computes_once(tmp_path):
    key = embed.CacheKey("pixels-abc", "pca", 4)
    calls = []

    def compute():
        calls.append(1)
        return np.ones((4, 2))

    first = embed.cached_projection(key, compute, tmp_path)
    again = embed.cached_projection(key, compute, tmp_path)
    assert calls == [1] and first.dtype == np.float32 and np.array_equal(first, again)


# -- the page ------------------------------------------------------------------------------
def translations() -> dict:
    return json.loads((ROOT / "assets" / "i18n" / "embeddings.json").read_text())


def test_every_label_has_english_and_spanish():
    table = translations()
    assert all(set(v) == {"en", "es"} and all(v.values()) for v in table.values())
    assert all(k.startswith("emb_") or k == "nav_embeddings" for k in table)


@pytest.fixture
def fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def page(lang: str | None = None, method: str = "pca") -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / "embeddings.py"), default_timeout=120)
    if lang:
        at.session_state["lang"] = lang
    at.session_state["emb_method"] = method
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_maps_raw_pixels_with_pca(isolated_store, fresh_caches):
    """An empty store: raw pixels are the only source; the PCA map is drawn and cached."""
    text = translations()
    at = page()
    assert [x.value for x in at.title] == [text["emb_title"]["en"]]
    assert at.selectbox(key="emb_source").value == "pixels"
    assert at.checkbox(key="emb_highlight").disabled  # no predictions without a run
    assert len(at.get("plotly_chart")) == 1
    cached = list((isolated_store / "embeddings").glob("pixels-*-pca-*.npy"))
    assert len(cached) == 1
    again = page()  # the second visit reads the map from the cache
    captions = " ".join(c.value for c in again.caption)
    assert text["emb_cached"]["en"].split("·")[1].strip() in captions


def test_page_in_spanish(isolated_store, fresh_caches):
    text = translations()
    at = page("es")
    assert [x.value for x in at.title] == [text["emb_title"]["es"]]
    assert at.selectbox(key="emb_source").label == text["emb_source"]["es"]
    assert text["emb_intro"]["es"] in [m.value for m in at.markdown]


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_page_maps_a_stored_run(method, tiny_run, tmp_path, monkeypatch, fresh_caches):
    """A stored run is picked first; each projection is drawn and cached; misclassified
    images can be marked (the tiny run's test set: a few hundred digits)."""
    import shutil

    root = tmp_path / "store"
    shutil.copytree(tiny_run.root, root)
    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    at = page(method=method)
    assert at.selectbox(key="emb_source").value == tiny_run.run_id
    assert list((root / "embeddings").glob(f"{tiny_run.run_id}-{method}-*.npy"))
    at.checkbox(key="emb_highlight").check().run()
    assert not at.exception, [e.value for e in at.exception]
    wrong = translations()["emb_wrong_count"]["en"].split("}")[-1]  # " are misclassified (..."
    assert any(wrong.split("(")[0].strip() in c.value for c in at.caption)
