"""Embeddings: the test set as a network sees it, projected to a map (PCA, t-SNE or UMAP)."""

from __future__ import annotations

import contextlib

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core import UserError, embed
from ui.charts import class_map
from ui.gallery import gallery, page
from ui.i18n import class_name, dataset_name, num, pct, t
from ui.runs import choose, data_of, default_run, label, model, test_probs
from ui.state import dataset, store, stored_runs
from ui.text import plain
from ui.thumbs import MAP_CONFIG, hover_thumbs

PIXELS = "pixels"
SOURCE = "emb_source"  # the source picker's key
METHODS = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}  # the first is the default
SEED = 0
PER_PAGE = 60  # images of the selection gallery per page
GALLERY_COLUMNS = 10
REDRAW_EVERY = 50  # t-SNE iterations between redraws of the live map (the bar moves every 25)
# Points drawn in the live map: enough to watch the clusters form, few enough that redrawing
# does not slow the t-SNE down (a browser without a GPU shares the server's cores).
LIVE_POINTS = 2000
MAP_BOX = "emb_map_box"  # the map's container: the hover thumbnails find the chart in it


def source_ui() -> dict | None:
    """The picked run's metadata, or None for raw pixels. The picker opens on the run picked
    on any page (ui.runs.default_run), and a run picked here is every page's pick; raw
    pixels stay this page's choice."""
    runs = {m["run_id"]: m for m in stored_runs()}
    # Labels are looked up now, not in format_func: Streamlit may call it outside the run.
    labels = {PIXELS: t("emb_pixels")} | {r: label(m) for r, m in runs.items()}
    if st.session_state.get(SOURCE) != PIXELS:  # follow a pick made on another page
        st.session_state[SOURCE] = default_run(list(runs.values())) if runs else PIXELS

    def picked() -> None:
        if st.session_state[SOURCE] != PIXELS:
            choose(st.session_state[SOURCE])

    choice = st.selectbox(t("emb_source"), [*runs, PIXELS], format_func=labels.__getitem__,
                          help=t("emb_source_help"), key=SOURCE, on_change=picked)  # fmt: skip
    if choice == PIXELS:
        return None
    choose(choice)  # the first view's default too: the URL names what is shown
    return runs[choice]


def method_ui() -> str:
    return st.radio(t("emb_method"), list(METHODS), format_func=METHODS.__getitem__,
                    horizontal=True, help=t("emb_method_help"), key="emb_method")  # fmt: skip


def test_set(meta: dict | None):
    """The test images to map: the run's own test set, or the default dataset's for pixels."""
    if meta is None:
        return dataset()
    try:
        data = data_of(meta)
    except (UserError, OSError) as e:
        st.warning(t("emb_no_test_set", why=str(e)))
        return None
    if data.identity != meta["dataset"]["identity"]:  # e.g. it fell back to digits here
        st.warning(t("emb_no_test_set", why=dataset_name(data.name)))
        return None
    return data


class LiveTsne:
    """openTSNE's progress while its step runs (a context): a bar, and the map redrawn as
    it refines (called with each intermediate map)."""

    def __init__(self, data):
        self.data = data
        n = len(data.y_test)
        self.some = np.sort(np.random.default_rng(SEED).permutation(n)[:LIVE_POINTS])

    def __enter__(self):
        self.bar = st.progress(0.0, text=t("emb_tsne_prepare"))
        self.live = st.empty()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.empty()
        self.live.empty()

    def __call__(self, iteration: int, coords: np.ndarray) -> None:
        total, some = embed.TSNE_ITERATIONS, self.some
        self.bar.progress(iteration / total, text=t("emb_tsne_progress", it=iteration, total=total))
        if iteration == embed.TSNE_CALLBACK_EVERY or iteration % REDRAW_EVERY == 0:
            fig, _ = class_map(coords[some], self.data.y_test[some], self.data.classes, "live",
                               trace=go.Scatter)  # fmt: skip
            self.live.plotly_chart(fig, key=f"emb_live_{iteration}",
                                   config={"displayModeBar": False})  # fmt: skip


def projection_ui(meta: dict | None, data, method: str) -> embed.Projection:
    """The map from the cache, or computed now (core.embed.projection) with its progress:
    a spinner while features and PCA or UMAP compute, t-SNE's bar and live map."""
    note, live = st.empty(), LiveTsne(data)

    def step(name: str):
        if name == "tsne":
            return live
        if name == "features":
            n = num(len(data.y_test))
            return st.spinner(t("emb_features", n=n)) if meta else contextlib.nullcontext()
        return st.spinner(t("emb_computing", method=METHODS[method]))

    run_id = None if meta is None else meta["run_id"]
    found = embed.projection(data, method, run_id, model=lambda: model(run_id)[0],
                             root=store().root, seed=SEED, progress=live, step=step,
                             on_wait=lambda: note.info(t("emb_waiting")))  # fmt: skip
    points = num(len(found.coords))
    note.caption(t("emb_computed", points=points, seconds=num(found.seconds, 1))
                 if found.computed else t("emb_cached", points=points))  # fmt: skip
    return found


def selected_indices(event, traces: list[np.ndarray]) -> np.ndarray:
    """Test-set indices of the selected points, ascending, without repeats (a point can be
    in a class trace and in the misclassified trace)."""
    points = (event or {}).get("selection", {}).get("points", [])
    chosen = set()
    for p in points:
        curve, k = p.get("curve_number"), p.get("point_index")
        if curve is not None and k is not None and curve < len(traces) and k < len(traces[curve]):
            chosen.add(int(traces[curve][k]))
    return np.array(sorted(chosen), dtype=np.int64)


def selection_ui(chosen: np.ndarray, data, pred) -> None:
    """The selected images (a page of PER_PAGE at a time) with true -> predicted labels, and
    how many of each class the selection holds."""
    if len(chosen) == 0:
        st.caption(t("emb_select_hint"))
        return
    st.subheader(t("emb_selected", n=num(len(chosen))))
    counts = np.bincount(data.y_test[chosen], minlength=data.num_classes)
    st.caption(" · ".join(f"{plain(class_name(data.classes[c]))}: {num(counts[c])}"
                          for c in np.argsort(-counts, kind="stable") if counts[c]))  # fmt: skip
    # A new selection opens on its first page.
    idx = chosen[page(len(chosen), PER_PAGE, key=f"emb_page_{len(chosen)}_{chosen[0]}")]
    truth = [class_name(data.classes[c]) for c in data.y_test[idx]]
    if pred is None:
        gallery(data.x_test[idx], truth, columns=GALLERY_COLUMNS, name="selection")
        return
    guess = [class_name(data.classes[c]) for c in pred[idx]]
    captions = [f"{a} → {b}" for a, b in zip(truth, guess, strict=True)]
    ok = list(pred[idx] == data.y_test[idx])
    gallery(data.x_test[idx], captions, ok, columns=GALLERY_COLUMNS, name="selection")


def main() -> None:
    st.title(t("emb_title"))
    st.write(t("emb_intro"))
    left, middle, right = st.columns([4, 2, 2], vertical_alignment="bottom")
    with left:
        meta = source_ui()
    with middle:
        method = method_ui()
    with right:
        ring = st.checkbox(t("emb_highlight"), key="emb_highlight", disabled=meta is None,
                           help=t("emb_highlight_help"))  # fmt: skip
        only_wrong = st.checkbox(t("emb_only_wrong"), key="emb_only_wrong",
                                 disabled=meta is None, help=t("emb_only_wrong_help"))  # fmt: skip
    st.caption(t(f"emb_about_{method}"))
    data = test_set(meta)
    if data is None:
        return
    try:
        found = projection_ui(meta, data, method)  # first: the live map needs no labels
        pred = None if meta is None else test_probs(meta["run_id"]).argmax(1)
    except KeyError:  # the run was deleted since the list was read
        st.warning(t("emb_run_missing"))
        return
    except embed.CollapsedFeatures:
        st.warning(t("emb_collapsed"))
        return
    revision = found.name
    fig, traces = class_map(found.coords, data.y_test, data.classes, revision, pred, ring=ring,
                            only_wrong=only_wrong)  # fmt: skip
    with hover_thumbs(MAP_BOX, data.x_test, data.identity):
        event = st.plotly_chart(fig, key=f"emb_map_{revision}", on_select="rerun",
                                selection_mode=("points", "box", "lasso"),
                                config=MAP_CONFIG)  # fmt: skip
    if (ring or only_wrong) and pred is not None:
        wrong, total = int((pred != data.y_test).sum()), len(pred)
        st.caption(t("emb_wrong_count", n=num(wrong), total=num(total), share=pct(wrong / total)))
    selection_ui(selected_indices(event, traces), data, pred)


main()
