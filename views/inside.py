"""Inside the network: first-layer filters, feature maps and Grad-CAM for one picked image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import UserError, explain, preprocess
from core.config import from_dict
from ui.i18n import class_name, t
from ui.state import dataset, store, stored_runs
from ui.text import run_label

TOP_K = 3
FILTER_COLUMNS = 16  # kernels a row in the filter grid
MAP_COLUMNS = 8  # feature maps a row
MAX_MAPS = 64  # maps drawn per layer (a backbone's layers have up to 1,280)
GRID_WIDTH = 480  # pixels a grid is enlarged to, about (whole multiples: crisp pixels)
FILTER_WIDTH = 640
FILTER_GAP = (110, 150, 210)  # blue-grey: no weight's grey level, so kernels stay apart
IMAGE_WIDTH = 224
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "webp", "bmp"]  # core.preprocess.UPLOAD_FORMATS


@st.cache_resource(show_spinner=False, max_entries=4)
def load_model(run_id: str):
    """(model, meta), loaded once per server. A run id names fixed content, and
    core.explain leaves no trace on a model, so sessions can share it."""
    return store().load_model(run_id)


def picture(array: np.ndarray, width: int, caption: str | None = None) -> None:
    """Show a small uint8 picture enlarged by a whole factor with nearest neighbour."""
    scale = max(1, round(width / array.shape[1]))
    st.image(explain.enlarge(array, scale), caption=caption, output_format="PNG")


def run_ui() -> str | None:
    """The picked run's id, or None (with a message) when the store is empty."""
    runs = {m["run_id"]: m for m in stored_runs()}
    if not runs:
        st.info(t("ins_no_runs"))
        return None
    return st.selectbox(t("ins_run"), list(runs), format_func=lambda r: run_label(runs[r]),
                        help=t("ins_run_help"), key="ins_run")  # fmt: skip


def filters_section(model) -> None:
    st.subheader(t("ins_filters"))
    weights = explain.first_layer_filters(model)  # (out, in, k, k)
    out, _, k, _ = weights.shape
    st.write(t("ins_filters_explain", n=out, k=k))
    picture(explain.tile(weights, FILTER_COLUMNS, gap_value=FILTER_GAP), FILTER_WIDTH)


def test_data(meta: dict):
    """The run's own test set, or None when it cannot be loaded here as it was trained."""
    try:
        data = dataset(from_dict(meta["config"]).data)
    except (UserError, OSError) as e:
        st.warning(t("ins_no_test_set", why=str(e)))
        return None
    if data.identity != meta["dataset"]["identity"]:  # e.g. fell back to digits here
        st.warning(t("ins_no_test_set", why=data.name))
        return None
    return data


def test_image_ui(data) -> tuple[np.ndarray, int] | None:
    """(uint8 (1, C, H, W) test image, its true class) picked by class and number."""
    names = [t("ins_all_classes"), *(class_name(c) for c in data.classes)]
    choice = st.selectbox(t("ins_class_filter"), range(len(names)), format_func=names.__getitem__,
                          key="ins_class")  # fmt: skip
    idx = np.arange(len(data.y_test)) if choice == 0 else np.flatnonzero(data.y_test == choice - 1)
    if len(idx) == 0:
        st.info(t("ins_empty_class"))
        return None
    i = st.number_input(t("ins_index", last=len(idx) - 1), 0, len(idx) - 1, 0, step=1,
                        help=t("ins_index_help"), key=f"ins_index_{choice}")  # fmt: skip
    j = int(idx[i])
    return data.x_test[j : j + 1], int(data.y_test[j])


def upload_ui(meta: dict):
    """The uploaded image as the model's input (1, C, H, W), or None with a message."""
    spec = meta["input"]
    mode = t("ins_grey") if spec["channels"] == 1 else t("ins_colour")
    file = st.file_uploader(t("ins_upload"), type=UPLOAD_TYPES, key="ins_upload",
                            max_upload_size=preprocess.MAX_UPLOAD_MB,
                            help=t("ins_upload_help", mode=mode, size=spec["size"]))  # fmt: skip
    if file is None:
        st.info(t("ins_upload_prompt"))
        return None
    try:
        image = preprocess.open_image(file.getvalue())
        # Framed like the dataset: inverted if dark on light, cropped, centred (core.preprocess).
        return preprocess.prepare(image, spec["channels"], spec["size"])
    except preprocess.BlankImage:
        st.error(t("ins_blank"))
    except explain.ImageTooLarge as e:
        size = f"{e.pixels / 1e6:.0f}" if e.pixels else "?"
        st.error(t("ins_too_large", size=size, limit=f"{explain.MAX_PIXELS / 1e6:.0f}"))
    except explain.UnreadableImage:
        st.error(t("ins_unreadable"))
    return None


def image_ui(meta: dict):
    """(image for the model, true class or None), or None while there is nothing to show."""
    st.subheader(t("ins_image"))
    data = test_data(meta)
    sources = ["test", "upload"] if data is not None else ["upload"]
    # Labels are looked up now, not in format_func: Streamlit may call it outside the run.
    labels = {s: t(f"ins_source_{s}") for s in sources}
    source = st.radio(t("ins_source"), sources, format_func=labels.__getitem__,
                      horizontal=True, key="ins_source")  # fmt: skip
    if source == "test":
        return test_image_ui(data)
    image = upload_ui(meta)
    return None if image is None else (image, None)


def prediction_ui(probs: np.ndarray, classes: list[str]) -> int:
    """The top classes as a table; returns the class to explain (the top one by default)."""
    top = [int(c) for c in np.argsort(-probs)[:TOP_K]]
    st.markdown(f"**{t('ins_prediction')}**")
    table = pd.DataFrame(
        {t("ins_class"): [class_name(classes[c]) for c in top], t("ins_prob"): probs[top]}
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            t("ins_prob"): st.column_config.ProgressColumn(
                min_value=0, max_value=1, format="percent"
            )
        },
    )
    names = {c: class_name(classes[c]) for c in top}
    return st.radio(t("ins_explain_class"), top, format_func=names.__getitem__,
                    horizontal=True, help=t("ins_explain_class_help"))  # fmt: skip


def look_section(model, meta: dict, image, truth: int | None, has_conv: bool) -> None:
    """The image, the prediction and the Grad-CAM (or saliency) overlay, side by side."""
    classes = meta["classes"]
    shown = explain.to_display(image)
    left, middle, right = st.columns(3)
    with left:
        caption = t("ins_true", name=class_name(classes[truth])) if truth is not None else None
        picture(shown, IMAGE_WIDTH, caption)
        st.caption(t("ins_input_explain", size=shown.shape[0]))
    with middle:
        target = prediction_ui(explain.probabilities(model, image), classes)
    with right:
        heat = explain.grad_cam(model, image, target)
        kind = "gradcam" if has_conv else "saliency"
        picture(explain.overlay(shown, heat), IMAGE_WIDTH, t(f"ins_{kind}"))
        name = class_name(classes[target])
        st.caption(t(f"ins_{kind}_explain", name=name))
        if has_conv and not heat.any():  # Grad-CAM keeps only positive evidence
            st.caption(t("ins_gradcam_empty", name=name))


def maps_section(model, image) -> None:
    st.subheader(t("ins_maps"))
    st.write(t("ins_maps_explain"))
    maps = explain.feature_maps(model, image)
    for i, (name, m) in enumerate(maps):
        depth = "early" if i == 0 else "late" if i == len(maps) - 1 else "middle"
        n, h, w = m.shape
        label = t("ins_layer", i=i + 1, name=name, n=n, h=h, w=w)
        with st.expander(label, expanded=i == 0):
            st.caption(t(f"ins_layer_{depth}"))
            if n > MAX_MAPS:
                st.caption(t("ins_first_maps", shown=MAX_MAPS, n=n))
            picture(explain.tile(m[:MAX_MAPS], MAP_COLUMNS), GRID_WIDTH)


def main() -> None:
    st.title(t("ins_title"))
    st.write(t("ins_intro"))
    run_id = run_ui()
    if run_id is None:
        return
    try:
        model, meta = load_model(run_id)
    except KeyError:  # deleted or damaged since the list was read
        st.error(t("ins_run_missing"))
        return
    has_conv = bool(explain.conv_layers(model))
    if has_conv:
        filters_section(model)
    else:
        st.info(t("ins_no_conv", model=meta["model"]))
    picked = image_ui(meta)
    if picked is None:
        return
    image, truth = picked
    look_section(model, meta, image, truth, has_conv)
    if has_conv:
        maps_section(model, image)


main()
