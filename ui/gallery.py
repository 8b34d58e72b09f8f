"""Image galleries: small images, upscaled crisply, with coloured captions.

A gallery is one HTML element (a CSS grid of inline PNGs), not an ``st.image`` per picture:
48 images used to be 48 media files the browser fetched one by one plus 48 caption elements,
and the Evaluate page's switch time was mostly that. Small images travel at their own size
(a 28x28 PNG is a few hundred bytes) and the browser enlarges them without blurring.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import streamlit as st
from PIL import Image

from ui.i18n import num, t

SCALE = 3  # 28x28 -> 84x84 on screen, nearest neighbour: pixels stay sharp
MAX_SENT = 2 * 28 * SCALE  # larger images (photos) are sent at most this many pixels wide
OK_COLOR, WRONG_COLOR = "#1a7f37", "#cf222e"


def data_uri(image: np.ndarray) -> str:
    """(C, H, W) uint8, greyscale or RGB -> a PNG data URI, at most MAX_SENT pixels on its
    longer side."""
    img = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    if max(img.size) > MAX_SENT:
        img.thumbnail((MAX_SENT, MAX_SENT), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def gallery_html(images: np.ndarray, captions: list[str], ok: list[bool] | None = None,
                 columns: int = 8, name: str = "gallery") -> str:  # fmt: skip
    """The gallery's HTML: ``columns`` images per row, each with its caption (escaped),
    green when ``ok`` is True and red when False. ``name`` tags the grid (data-gallery)."""
    side = images.shape[-1]
    # Images sent at their own size are enlarged crisply; shrunk photos smoothly.
    rendering = "pixelated" if side <= MAX_SENT else "auto"
    cells = []
    for i, image in enumerate(images):
        color = "inherit" if ok is None else (OK_COLOR if ok[i] else WRONG_COLOR)
        caption = html.escape(captions[i])
        cells.append(
            f'<figure style="margin:0;min-width:0"><img src="{data_uri(image)}" alt="{caption}"'
            f' style="width:100%;max-width:{side * SCALE}px;image-rendering:{rendering}">'
            f'<figcaption style="font-size:0.75rem;line-height:1.1;color:{color}">{caption}'
            "</figcaption></figure>"
        )
    return (
        f'<div data-gallery="{html.escape(name)}" style="display:grid;gap:0.5rem;'
        f'grid-template-columns:repeat({columns},minmax(0,1fr))">{"".join(cells)}</div>'
    )


def gallery(images: np.ndarray, captions: list[str], ok: list[bool] | None = None,
            columns: int = 8, name: str = "gallery") -> None:  # fmt: skip
    """A grid of images; captions green when ``ok`` is True, red when False."""
    if len(images):
        st.html(gallery_html(images, captions, ok, columns, name))


def page(count: int, per_page: int, key: str) -> slice:
    """Which of ``count`` images to show: all of them when they fit on one page, else one
    page of them, with page buttons (``key``) and a line saying which are shown of how many."""
    if count <= per_page:
        return slice(0, count)
    note = st.empty()  # filled once the page is known, but shown before the buttons
    current = st.pagination(-(-count // per_page), key=key)
    start = (current - 1) * per_page
    stop = min(start + per_page, count)
    note.caption(t("ch_showing", first=num(start + 1), last=num(stop), n=num(count)))
    return slice(start, stop)
