"""core.preprocess: photos and drawings framed the way Fashion-MNIST frames its items."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import needs_fashion
from PIL import Image

from core import preprocess
from core.config import DataConfig


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def fashion_images():
    from core import data as datasets

    return datasets.load(DataConfig()).x_test[:50, 0]  # (50, 28, 28) uint8


@needs_fashion
def test_dataset_images_come_back_as_they_were(fashion_images):
    """A test image rendered at 280x280 RGB, as it is or inverted like a photo, and framed
    again is the same picture: the framing is what the dataset already does. (Through this
    path the `fast` model keeps 0.90 of its 0.91 accuracy; see the issue 4 note.)"""
    scores = []
    for img in fashion_images:
        framed = []
        for pixels in (img, 255 - img):
            big = Image.fromarray(pixels).resize((280, 280)).convert("RGB")
            x = preprocess.prepare(preprocess.open_image(png(big)), channels=1, size=28)
            assert x.shape == (1, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
            framed.append(x[0, 0].numpy())
        assert np.abs(framed[0] - framed[1]).max() < 0.05  # inverted input, same result
        scores.append(correlation(framed[0], img / 255.0))
    assert np.median(scores) > 0.9 and min(scores) > 0.5


def test_an_object_anywhere_is_cropped_centred_and_fills_the_frame():
    canvas = np.full((300, 500), 255, np.uint8)  # white paper
    canvas[40:100, 350:380] = 30  # a dark 60x30 bar near a corner
    framed = preprocess.frame_like_dataset(canvas / 255.0, size=28)
    rows, cols = np.flatnonzero(framed.max(1) > 0.5), np.flatnonzero(framed.max(0) > 0.5)
    assert rows[-1] - rows[0] + 1 == 28  # the longest side fills the frame
    assert 13 <= cols[-1] - cols[0] + 1 <= 15  # the aspect ratio is kept (60:30)
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1  # centred
    assert framed.max() == pytest.approx(1.0)  # light on dark, stretched to white


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (200, 200), "white"),
        Image.new("L", (64, 64), 0),
        Image.new("RGBA", (280, 280), (0, 0, 0, 0)),  # an untouched, transparent sketchpad
        Image.new("L", (1, 1), 128),
    ],
    ids=["white page", "black page", "transparent sketch", "1x1"],
)
def test_blank_images_ask_for_a_drawing(image):
    with pytest.raises(preprocess.BlankImage, match="draw something first"):
        preprocess.prepare(image, channels=1, size=28)


def test_a_transparent_sketch_becomes_white_strokes_on_black():
    sketch = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    pixels = np.array(sketch)
    pixels[100:180, 60:220] = (0, 0, 0, 255)  # black strokes, opaque
    x = preprocess.prepare(Image.fromarray(pixels, "RGBA"), channels=1, size=28)[0, 0]
    assert x[14, 14] > 0.9 and x[0, 0] == 0


def test_a_one_pixel_high_strip_is_handled():
    strip = np.zeros((1, 10_000), np.uint8)
    strip[0, 2000:8000] = 255
    x = preprocess.prepare(Image.fromarray(strip), channels=1, size=28)
    assert x.shape == (1, 1, 28, 28) and x.max() > 0.5


def test_colour_models_get_a_centre_crop():
    image = Image.new("RGB", (400, 200), (255, 0, 0))
    x = preprocess.prepare(image, channels=3, size=64)
    assert x.shape == (1, 3, 64, 64)
    assert x[0, 0].min() > 0.99 and x[0, 1].max() < 0.01  # red stays red, no distortion
