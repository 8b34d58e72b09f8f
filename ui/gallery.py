"""Image galleries: small images, upscaled crisply, with coloured captions."""

from __future__ import annotations

import html

import numpy as np
import streamlit as st
from PIL import Image

SCALE = 3  # 28x28 -> 84x84, nearest neighbour: pixels stay sharp


def to_pil(image: np.ndarray, scale: int = SCALE) -> Image.Image:
    """(C, H, W) uint8 -> an upscaled PIL image (greyscale or RGB)."""
    arr = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    img = Image.fromarray(arr)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def gallery(images: np.ndarray, captions: list[str], ok: list[bool] | None = None,
            columns: int = 8) -> None:  # fmt: skip
    """A grid of images; captions green when ``ok`` is True, red when False."""
    for start in range(0, len(images), columns):
        cols = st.columns(columns)
        for k, col in enumerate(cols):
            i = start + k
            if i >= len(images):
                break
            col.image(to_pil(images[i]))
            color = "" if ok is None else ("#1a7f37" if ok[i] else "#cf222e")
            col.html(f'<div style="font-size:0.75rem;line-height:1.1;color:{color}">'
                     f"{html.escape(captions[i])}</div>")  # fmt: skip
