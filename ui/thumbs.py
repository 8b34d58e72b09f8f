"""Hover thumbnails for a Plotly map: the picture behind a dot, next to the pointer.

Plotly's hover labels are text only, so the pictures travel to the browser once, as one
image atlas (a grid of every test image, a 4-bit PNG of about 1.9 MB for Fashion-MNIST's
10,000), and a small component draws the hovered dot's cell from it. The dot's test-set
index is the trace's ``customdata``.

The atlas is built once per dataset (and kept in the store) and shown by a hidden
``st.image``: the browser fetches it over HTTP beside the page and keeps it while its
address is unchanged.
Sent inside the component's data instead, its 2.5 MB of base64 went through the websocket
and made opening the Embeddings page slower each time (figures: README, Benchmarks).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
from collections.abc import Iterator

import numpy as np
import streamlit as st
from PIL import Image

from ui.state import store

COLUMNS = 100  # thumbnails per atlas row
PIXEL_BUDGET = 10_000 * 28 * 28  # pixels per atlas: Fashion-MNIST's test set at full size
MIN_SIDE, MAX_SIDE = 16, 64  # photos are shrunk to fit the budget, within these sides
SHOWN = 96  # CSS pixels: the thumbnail's side on screen
# Plotly config for the maps: WebGL canvases at the screen's own resolution on ordinary (1x)
# screens and projectors; plotly's default (2) draws four times the pixels. Where the
# browser has no GPU and renders WebGL in software, that made opening or leaving the
# Embeddings page more than twice as slow (figures: README, Benchmarks).
MAP_CONFIG = {"displaylogo": False, "plotGlPixelRatio": 1}

# Streamlit calls the default export at mount and again whenever the data changes (another
# run, another dataset), and calls the cleanup it returns only at unmount: one set of
# listeners and one floating canvas per mounted component, kept on its parent element, read
# the latest data.
_JS = """
function mount(parent) {
    const self = { data: null };
    const tip = document.createElement("canvas");
    tip.className = "cnn-hover-thumb";
    tip.style.cssText = "position:fixed;z-index:1000;pointer-events:none;display:none;" +
        "background:#fff;border:1px solid #888;border-radius:4px;" +
        "box-shadow:0 2px 6px rgba(0,0,0,.3)";
    document.body.appendChild(tip);
    let pointer = { x: 0, y: 0 };
    const track = (e) => { pointer = { x: e.clientX, y: e.clientY }; };

    let hovered = null;  // the hover event under the pointer now, if any
    const show = (ev) => {
        hovered = ev;
        const data = self.data;
        const point = ev.points && ev.points[0];
        const i = point ? Number(point.customdata) : NaN;
        const atlas = document.querySelector(".st-key-" + data.box + "_atlas img");
        if (!Number.isInteger(i) || i < 0 || i >= data.count || !atlas) return;
        if (!atlas.complete || !atlas.naturalWidth) {  // still loading: show it when it is in
            atlas.addEventListener("load", () => { if (hovered === ev) show(ev); }, { once: true });
            return;
        }
        const size = data.shown, s = data.side;
        if (tip.width !== size) {
            tip.width = tip.height = size;
            tip.style.width = tip.style.height = size + "px";
        }
        tip.style.imageRendering = data.pixelated ? "pixelated" : "auto";
        const pen = tip.getContext("2d");
        pen.imageSmoothingEnabled = !data.pixelated;
        pen.clearRect(0, 0, size, size);
        const col = i % data.columns, row = Math.floor(i / data.columns);
        pen.drawImage(atlas, col * s, row * s, s, s, 0, 0, size, size);
        tip.dataset.index = String(i);
        // Above and to the left of the pointer: Plotly puts its label to the right.
        tip.style.left = Math.max(4, pointer.x - size - 16) + "px";
        tip.style.top = Math.max(4, pointer.y - size - 16) + "px";
        tip.style.display = "block";
    };
    const hide = () => { hovered = null; tip.style.display = "none"; };

    // The chart may be drawn after this component, and redrawn: look for it until found.
    let chart = null;
    const detach = () => {
        if (!chart) return;
        if (typeof chart.removeListener === "function") {  // gone once Plotly purged it
            chart.removeListener("plotly_hover", show);
            chart.removeListener("plotly_unhover", hide);
        }
        chart.removeEventListener("mousemove", track);
        chart.removeEventListener("mouseleave", hide);
        chart = null;
    };
    const attach = () => {
        const box = self.data && document.querySelector(".st-key-" + self.data.box);
        const found = box && box.querySelector(".js-plotly-plot");
        if (!found || found === chart || typeof found.on !== "function") return;
        detach();
        chart = found;
        chart.on("plotly_hover", show);
        chart.on("plotly_unhover", hide);
        chart.addEventListener("mousemove", track);
        chart.addEventListener("mouseleave", hide);
    };
    const timer = setInterval(attach, 250);
    self.refresh = () => { hide(); attach(); };
    self.cleanup = () => {
        clearInterval(timer);
        detach();
        tip.remove();
        delete parent.hoverThumbs;
    };
    return self;
}

export default function ({ data, parentElement }) {
    const self = parentElement.hoverThumbs || (parentElement.hoverThumbs = mount(parentElement));
    self.data = data;
    self.refresh();
    return self.cleanup;
}
"""

_component = st.components.v2.component("cnn_classroom.hover_thumbs", js=_JS)


def thumb_side(count: int, side: int) -> int:
    """The side of each thumbnail: the images' own, or less where the atlas would exceed
    the budget (a large set of photos), never below MIN_SIDE nor above MAX_SIDE."""
    fits = math.isqrt(PIXEL_BUDGET // max(count, 1))
    return max(MIN_SIDE, min(side, fits, MAX_SIDE))


def atlas_png(images: np.ndarray) -> tuple[bytes, int]:
    """(the PNG of every image in a COLUMNS-wide grid, the side of one cell).

    ``images``: (N, C, H, W) uint8 with C = 1 or 3. Greyscale is kept at 16 levels (4-bit
    PNG: half the bytes, and a 28x28 thumbnail looks the same); colour photos are shrunk to
    ``thumb_side`` and kept in full colour.
    """
    n, channels, height, width = images.shape
    side = thumb_side(n, max(height, width))
    if channels == 1 and side == height == width:
        cells = images[:, 0]
    else:
        mode = "L" if channels == 1 else "RGB"
        cells = np.stack([
            np.asarray(Image.fromarray(im[0] if channels == 1 else im.transpose(1, 2, 0), mode)
                       .resize((side, side), Image.Resampling.LANCZOS))
            for im in images
        ])  # fmt: skip
    rows = math.ceil(n / COLUMNS)
    pad = rows * COLUMNS - n
    cells = np.concatenate([cells, np.zeros((pad, *cells.shape[1:]), np.uint8)])
    grid = cells.reshape(rows, COLUMNS, side, side, *cells.shape[3:])
    grid = grid.swapaxes(1, 2).reshape(rows * side, COLUMNS * side, *cells.shape[3:])
    buf = io.BytesIO()
    if channels == 1:
        img = Image.fromarray(grid >> 4, "P")  # 16 levels: 0, 17, ..., 255
        img.putpalette([v * 17 for v in range(16) for _ in range(3)])
        img.save(buf, "PNG", bits=4)
    else:
        Image.fromarray(grid, "RGB").save(buf, "PNG")
    return buf.getvalue(), side


@st.cache_data(show_spinner=False, max_entries=4)
def _atlas(identity: str, shape: tuple, _images: np.ndarray) -> tuple[bytes, int]:
    """``atlas_png`` once per dataset (``identity``) and image ``shape`` (one source can be
    loaded at several sizes): kept in the store's embeddings folder, so a restarted server
    reads it instead of encoding it again (figures: README, Benchmarks)."""
    from core.store import atomic_write

    n, _, height, width = shape
    side = thumb_side(n, max(height, width))
    name = hashlib.sha256(f"{identity}:{shape}:{side}".encode()).hexdigest()[:16]
    path = store().derived_path(f"atlas-{name}.png")
    try:
        png = path.read_bytes()
        kept = Image.open(io.BytesIO(png))
        kept.load()  # decoded in full: a damaged file fails here
        if kept.size == (COLUMNS * side, math.ceil(n / COLUMNS) * side):
            return png, side
    except (OSError, ValueError, SyntaxError):  # missing or damaged: build it again
        pass
    png, side = atlas_png(_images)
    atomic_write(path, png)
    return png, side


@contextlib.contextmanager
def hover_thumbs(box: str, images: np.ndarray, identity: str) -> Iterator[None]:
    """Draw a Plotly chart inside this block (a container keyed ``box``) whose traces carry
    each dot's index into ``images`` as customdata: hovering a dot shows its picture."""
    with st.container(key=box):
        yield
    png, side = _atlas(identity, images.shape, images)
    st.html(f"<style>.st-key-{box}_atlas {{display: none}}</style>")
    with st.container(key=f"{box}_atlas"):
        st.image(png, width=COLUMNS * side)  # its own width: Streamlit would shrink it
    _component(
        key=f"{box}_thumbs",
        data={"side": side, "columns": COLUMNS, "count": len(images), "box": box,
              "shown": SHOWN, "pixelated": side * 2 <= SHOWN},
        height=0,
    )  # fmt: skip
