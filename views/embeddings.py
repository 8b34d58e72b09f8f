"""Embeddings: the test set as a network sees it, projected to a map (PCA, t-SNE or UMAP)."""

from __future__ import annotations

import html
import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from core import UserError, embed
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
HEIGHT = 640  # pixels, the map
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


def features_ui(meta: dict | None, data) -> np.ndarray:
    """(N, D) float32: the run's penultimate features, or the raw pixels."""
    if meta is None:
        return embed.pixels(data.x_test)
    with st.spinner(t("emb_features", n=num(len(data.y_test)))):
        net, _ = model(meta["run_id"])
        return embed.features(net, data.x_test)


def live_tsne_ui(x: np.ndarray, data) -> np.ndarray:
    """openTSNE with a progress bar and the map redrawn as it refines."""
    bar = st.progress(0.0, text=t("emb_tsne_prepare"))
    live = st.empty()
    total = embed.TSNE_ITERATIONS
    n = len(data.y_test)
    some = np.sort(np.random.default_rng(SEED).permutation(n)[:LIVE_POINTS])

    def show(iteration: int, coords: np.ndarray) -> None:
        bar.progress(iteration / total, text=t("emb_tsne_progress", it=iteration, total=total))
        if iteration == embed.TSNE_CALLBACK_EVERY or iteration % REDRAW_EVERY == 0:
            fig, _ = scatter(coords[some], data.y_test[some], None, data.classes, "live",
                             trace=go.Scatter)  # fmt: skip
            live.plotly_chart(fig, key=f"emb_live_{iteration}", config={"displayModeBar": False})

    coords = embed.tsne(x, show, SEED)
    bar.empty()
    live.empty()
    return coords


def projection_ui(meta: dict | None, data, method: str) -> tuple[np.ndarray, str]:
    """(coordinates (N, 2), the cache key's file name) from the cache, or computed now."""
    source = embed.pixels_source(data.identity) if meta is None else meta["run_id"]
    key = embed.CacheKey(source, method, len(data.y_test), SEED)
    note = st.empty()
    start, computed = time.perf_counter(), []

    def compute() -> np.ndarray:
        computed.append(True)
        x = features_ui(meta, data)
        if method == "tsne":
            return live_tsne_ui(x, data)
        with st.spinner(t("emb_computing", method=METHODS[method])):
            return embed.project(method, x, seed=SEED)

    coords = embed.cached_projection(key, compute, store().root,
                                     on_wait=lambda: note.info(t("emb_waiting")))  # fmt: skip
    points = num(len(coords))
    seconds = num(time.perf_counter() - start, 1)
    note.caption(t("emb_computed", points=points, seconds=seconds) if computed
                 else t("emb_cached", points=points))  # fmt: skip
    return coords, key.filename()


def scatter(coords, y, pred, classes, revision: str, trace=go.Scattergl, ring: bool = False,
            only_wrong: bool = False):  # fmt: skip
    """(scatter, one trace per class, the indices into ``y`` of each trace's points).

    WebGL traces by default (10,000 points); the live t-SNE preview passes go.Scatter.
    Hover shows the true and (for a run) predicted class. With predictions, ``ring`` adds
    a trace of open rings around the misclassified images (the dots stay visible inside:
    a thousand filled crosses hid the very regions they marked), and ``only_wrong`` keeps
    the misclassified images alone.
    """
    names = [html.escape(class_name(c)) for c in classes]  # plotly renders some HTML tags
    palette = qualitative.D3 if len(names) <= 10 else qualitative.Alphabet
    colors = [palette[c % len(palette)] for c in range(len(names))]
    true, predicted = t("emb_true"), t("emb_pred")
    fig, traces = go.Figure(), []
    alone = only_wrong and pred is not None
    shown = (pred != y) if alone else np.ones(len(y), dtype=bool)
    size = 6 if alone else 4  # the few points left stand out a little more
    for c, name in enumerate(names):
        idx = np.flatnonzero((y == c) & shown)
        hover = f"{true}: {name}"
        text = None
        if pred is not None:
            text = [names[p] for p in pred[idx]]
            hover += f"<br>{predicted}: %{{text}}"
        fig.add_trace(trace(
            x=coords[idx, 0], y=coords[idx, 1], mode="markers", name=name, text=text,
            customdata=idx, hovertemplate=hover + "<br>#%{customdata}<extra></extra>",
            marker={"size": size, "color": colors[c], "opacity": 0.75},
        ))  # fmt: skip
        traces.append(idx)
    if ring and pred is not None:
        wrong = np.flatnonzero(pred != y)
        fig.add_trace(trace(
            x=coords[wrong, 0], y=coords[wrong, 1], mode="markers",
            name=t("emb_wrong_trace", n=num(len(wrong))), customdata=wrong,
            text=[f"{true}: {names[y[i]]}<br>{predicted}: {names[pred[i]]}" for i in wrong],
            hovertemplate="%{text}<br>#%{customdata}<extra></extra>",
            marker={"symbol": "circle-open", "size": 9, "color": "rgba(0,0,0,0.55)",
                    "line": {"width": 1}},
        ))  # fmt: skip
        traces.append(wrong)
    fig.update_layout(
        height=HEIGHT, dragmode="lasso", uirevision=revision,  # zoom survives reruns
        margin={"t": 10, "b": 10, "l": 10, "r": 10},
        legend={"itemsizing": "constant", "y": 0.94, "yanchor": "top"},  # below the tool bar
    )  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    return fig, traces


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
        coords, revision = projection_ui(meta, data, method)  # first: the live map needs no labels
        pred = None if meta is None else test_probs(meta["run_id"]).argmax(1)
    except KeyError:  # the run was deleted since the list was read
        st.warning(t("emb_run_missing"))
        return
    except embed.CollapsedFeatures:
        st.warning(t("emb_collapsed"))
        return
    fig, traces = scatter(coords, data.y_test, pred, data.classes, revision, ring=ring,
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
