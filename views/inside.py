"""Inside the network: first-layer filters, feature maps and HiResCAM for one picked image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core import UserError, explain, preprocess
from ui import runs
from ui.i18n import class_name, dataset_name, num, pct, styled, t
from ui.text import DASH, plain

TOP_K = 3
# Sizes for a projector at the back of a classroom: a 3x3 filter becomes 96 pixels across and
# a feature map about 100 (a 7x7 map 98, a 14x14 one 98), eight a row: about 800 pixels,
# within the page's column on a 1366-pixel-wide screen with the sidebar open.
COLUMNS = 8
FILTER_CELL = 96  # pixels a filter is enlarged to, about (a whole multiple: crisp squares)
MAP_CELL = 100  # the same for a feature map
GAP = 6  # pixels between cells
GAP_COLOUR = (110, 150, 210)  # blue-grey: no grey map or weight takes it, so cells stay apart
MAX_MAPS = 64  # maps drawn per layer (a backbone's layers have up to 1,280)
IMAGE_WIDTH = 280  # the input and its heatmap: a 28-pixel image ten times
# Every file name extension Pillow reads as one of the formats core.preprocess accepts (the
# Classify tab's allow-list): png, jpg, jpeg, gif, webp, bmp and their variants (jfif, dib, ...).
UPLOAD_TYPES = sorted(
    ext[1:]
    for ext, fmt in Image.registered_extensions().items()
    if fmt in preprocess.UPLOAD_FORMATS
)


def picture(array: np.ndarray, width: int, caption: str | None = None) -> None:
    """Show a small uint8 picture enlarged by a whole factor with nearest neighbour."""
    scale = max(1, round(width / array.shape[1]))
    st.image(explain.enlarge(array, scale), caption=caption, output_format="PNG")


def grid(maps: np.ndarray, cell: int) -> None:
    """Maps (N, [C,] h, w) as a grid of COLUMNS a row, each enlarged to about ``cell``
    pixels across. Shown at its own size (Streamlit only shrinks what is wider than the
    page), so nothing is smoothed: a pixel of a map stays a crisp square."""
    scale = max(1, cell // maps.shape[-1])
    st.image(explain.tile(maps, COLUMNS, GAP, GAP_COLOUR, scale), output_format="PNG")


def filters_section(model) -> None:
    st.subheader(t("ins_filters"))
    weights = explain.first_layer_filters(model)  # (out, in, k, k)
    st.write(t("ins_filters_explain", n=num(len(weights)), k=by(weights.shape[2:])))
    grid(weights, FILTER_CELL)


def test_data(meta: dict):
    """The run's own test set, or None when it cannot be loaded here as it was trained."""
    try:
        data = runs.data_of(meta)
    except (UserError, OSError):
        st.warning(t("ins_no_test_set"))
        return None
    if data.identity != meta["dataset"]["identity"]:  # e.g. fell back to digits here
        st.warning(t("ins_other_test_set", name=dataset_name(data.name)))
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
    i = st.number_input(t("ins_index", last=num(len(idx) - 1)), 0, len(idx) - 1, 0, step=1,
                        help=t("ins_index_help"), key=f"ins_index_{choice}")  # fmt: skip
    j = int(idx[i])
    return data.x_test[j : j + 1], int(data.y_test[j])


def upload_ui(meta: dict):
    """The uploaded image as the model's input (1, C, H, W), or None with a message. Read
    and framed by the Classify tab's two calls (core.preprocess), so both see the same."""
    spec = meta["input"]
    mode = t("ins_grey") if spec["channels"] == 1 else t("ins_colour")
    hint = t("ins_upload_help", mode=mode, size=num(spec["size"]))
    file = st.file_uploader(t("ins_upload"), type=UPLOAD_TYPES, key="ins_upload",
                            max_upload_size=preprocess.MAX_UPLOAD_MB, help=hint)  # fmt: skip
    if file is None:
        st.info(t("ins_upload_prompt"))
        return None
    try:
        image = preprocess.open_image(file.getvalue())
        # Framed like the dataset: inverted if dark on light, cropped, centred (core.preprocess).
        return preprocess.prepare(image, spec["channels"], spec["size"])
    except preprocess.BlankImage:
        st.error(t("ins_blank"))
    except preprocess.ImageTooLarge as e:
        size = num(e.pixels / 1e6) if e.pixels else "?"
        st.error(t("ins_too_large", size=size, limit=num(preprocess.MAX_PIXELS / 1e6)))
    except preprocess.UnreadableImage:
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
    prob = t("ins_prob")
    table = pd.DataFrame({t("ins_class"): [class_name(classes[c]) for c in top], prob: probs[top],
                          "bar": probs[top]})  # fmt: skip
    # A progress column writes its number in English whatever the Styler says, so the bar
    # gets no text (a format without a placeholder) and the percentage its own column.
    bar = st.column_config.ProgressColumn(" ", min_value=0, max_value=1, format=" ")
    st.dataframe(styled(table).format(pct, subset=[prob]), hide_index=True, placeholder=DASH,
                 column_config={"bar": bar})  # fmt: skip
    names = {c: plain(class_name(classes[c])) for c in top}  # radio options are Markdown
    return st.radio(t("ins_explain_class"), top, format_func=names.__getitem__,
                    horizontal=True, help=t("ins_explain_class_help"))  # fmt: skip


def look_section(model, meta: dict, image, truth: int | None, has_conv: bool) -> None:
    """The image, the prediction and the HiResCAM (or saliency) overlay, side by side."""
    classes = meta["classes"]
    shown = explain.to_display(image)
    left, middle, right = st.columns(3)
    with left:
        caption = None if truth is None else t("ins_true", name=plain(class_name(classes[truth])))
        picture(shown, IMAGE_WIDTH, caption)
        st.caption(t("ins_input_explain", size=num(shown.shape[0])))
    with middle:
        target = prediction_ui(explain.probabilities(model, image), classes)
    with right:
        # The Classify tab's map (core.classify.Classifier.heatmap calls the same function).
        heat = explain.hires_cam(model, image, target)
        kind = "cam" if has_conv else "saliency"
        picture(explain.overlay(shown, heat), IMAGE_WIDTH, t(f"ins_{kind}"))
        name = plain(class_name(classes[target]))  # captions are Markdown
        st.caption(t(f"ins_{kind}_explain", name=name))
        if has_conv and not heat.any():  # only what raises the score is drawn
            st.caption(t("ins_cam_empty", name=name))


def by(sides) -> str:
    """(3, 3) -> "3×3"; a single number for equal sides of a stride: (2, 2) -> "2"."""
    return "×".join(num(v) for v in sides)


def layer_label(i: int, count: int, conv, maps: np.ndarray) -> str:
    """A conv layer as a class reads it, not by its module path ("body.3"): its place, its
    filters and what it makes ("Convolution layer 2 of 2 · 3×3 filters, stride 2 · 64 maps
    of 7×7"). Kernels and strides may be uneven (Inception's 1×7)."""
    n, h, w = maps.shape
    stride = conv.stride
    step = num(stride[0]) if len(set(stride)) == 1 else by(stride)
    words = dict(i=num(i), count=num(count), k=by(conv.kernel_size), stride=step, n=num(n),
                 h=num(h), w=num(w))  # fmt: skip
    return t("ins_layer" if max(stride) == 1 else "ins_layer_strided", **words)


def maps_section(model, image) -> None:
    st.subheader(t("ins_maps"))
    st.write(t("ins_maps_explain"))
    convs = dict(explain.conv_layers(model))  # module path -> nn.Conv2d
    maps = explain.feature_maps(model, image)
    for i, (name, m) in enumerate(maps):
        depth = "early" if i == 0 else "late" if i == len(maps) - 1 else "middle"
        with st.expander(layer_label(i + 1, len(maps), convs[name], m), expanded=i == 0):
            st.caption(t(f"ins_layer_{depth}"))
            if len(m) > MAX_MAPS:
                st.caption(t("ins_first_maps", shown=num(MAX_MAPS), n=num(len(m))))
            grid(m[:MAX_MAPS], MAP_CELL)


def main() -> None:
    st.title(t("ins_title"))
    st.write(t("ins_intro"))
    meta = runs.pick_run(t("ins_run"), "ins_run", help=t("ins_run_help"), empty="ins_no_runs")
    if meta is None:
        return
    try:
        model, meta = runs.model(meta["run_id"])
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
