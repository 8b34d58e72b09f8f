"""Any image a person brings -> the tensor a model expects, safely.

Guards first (issue 4 and DESIGN's checklist): formats by content from an allow-list, the
pixel count read from the header and refused before decoding (MAX_PIXELS: a phone's photo
passes, a panorama or a camera's 24-megapixel raw export does not), truncated or fake files
turned into one clear error; a large JPEG is decoded at 1/2, 1/4 or 1/8 of its size (Pillow's
``draft``), never below DRAFT_SIDE, which gives the same 28x28 input at a fraction of the
memory and time. Then the framing: ``frame_like_dataset`` turns a photo or a drawing into
what Fashion-MNIST looks like (light object on a dark background, cropped to the object and
centred with its longest side filling the frame), so a model trained on the dataset sees what
it was trained on.
"""

from __future__ import annotations

import io
import re

import numpy as np
import torch
from PIL import Image, ImageOps

from core import UserError

MAX_PIXELS = 16_000_000  # larger images are refused before any pixel is decoded (12 MP: a phone)
DRAFT_SIDE = 512  # a JPEG is decoded reduced, to no less than this on each side
MAX_UPLOAD_MB = 20  # an image upload larger than this is refused by the page's uploader
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")  # Pillow format names an upload may have
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError)  # Pillow on a truncated or fake file


class ImageTooLarge(UserError):
    def __init__(self, pixels: int | None):
        self.pixels = pixels  # None when the header's size is not known
        size = f"{pixels / 1e6:.0f} megapixels" if pixels else "too many pixels"
        super().__init__(f"the image has {size}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels")


class UnreadableImage(UserError):
    def __init__(self):
        names = ", ".join(UPLOAD_FORMATS[:-1]) + " or " + UPLOAD_FORMATS[-1]
        super().__init__(f"not a readable image ({names})")


def open_image(data: bytes, formats: tuple[str, ...] = UPLOAD_FORMATS) -> Image.Image:
    """Bytes of an uploaded file -> a lazily opened PIL image (nothing decoded yet).

    Raises UnreadableImage for anything that is not one of ``formats`` (by content, not by
    name), ImageTooLarge above MAX_PIXELS (judged from the header). Animated GIF and WEBP
    files are read as their first frame: nothing else is ever decoded.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=list(formats))
    except Image.DecompressionBombError as e:  # Pillow's own cap (higher than ours)
        raise ImageTooLarge(_bomb_pixels(e)) from None
    except READ_ERRORS:
        raise UnreadableImage() from None
    _check_pixels(image)
    return image


def _bomb_pixels(error: Exception) -> int | None:
    """The pixel count in Pillow's DecompressionBombError message, if it names one."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    return int(found.group(1)) if found else None


def _check_pixels(image: Image.Image) -> None:
    if image.width * image.height > MAX_PIXELS:
        raise ImageTooLarge(image.width * image.height)


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit or float grey ("I", "I;16...", "F") -> "L", scaled (Pillow's own conversion
    clips at 255: a 16-bit photo comes out almost all white); other modes as they are."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        a = np.asarray(image, dtype=np.float32)
        top = 65535.0 if a.max(initial=0) > 255 else 255.0  # 16-bit data, or 8-bit in a wide mode
        return Image.fromarray(np.round(np.clip(a / top, 0, 1) * 255).astype(np.uint8), "L")
    return image


def _flatten(image: Image.Image) -> Image.Image:
    """Any mode -> "L" or "RGB": 16-bit grey scaled to 8 bits, transparency composited over
    black (the datasets' background), CMYK, palette and 1-bit converted."""
    image = eight_bit(image)  # a new "L" image: no transparency left to composite
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image


def to_model_input(image: Image.Image, channels: int, size: int) -> torch.Tensor:
    """A PIL image -> float32 (1, channels, size, size) in [0, 1], what ``model(x)`` expects.

    EXIF orientation is applied, the image is converted to grey ("L", channels=1) or "RGB"
    (channels=3) and resized bilinearly to size x size (no crop: the aspect ratio is not
    kept). Raises ImageTooLarge above MAX_PIXELS before decoding, UnreadableImage when the
    pixels cannot be decoded (truncated or corrupt files).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    _check_pixels(image)
    mode = "L" if channels == 1 else "RGB"
    try:
        image.draft(mode, (size, size))  # JPEG: decode at a reduced scale (never below size)
        image = _flatten(ImageOps.exif_transpose(image)).convert(mode)
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        pixels = np.asarray(image, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(_bomb_pixels(e)) from None
    except READ_ERRORS:
        raise UnreadableImage() from None
    x = torch.from_numpy(pixels.reshape(size, size, channels).transpose(2, 0, 1).copy())
    return x[None]


class BlankImage(UserError):
    def __init__(self):
        super().__init__("the image is blank: draw something first")


def frame_like_dataset(grey: np.ndarray, size: int = 28, margin: int = 0) -> np.ndarray:
    """(H, W) grey in [0, 1] -> (size, size) in [0, 1], framed as Fashion-MNIST frames items.

    - dark-on-light inputs (photos, drawings on white) are inverted to light-on-dark: the
      background is judged from the image's border;
    - the background level is subtracted and the object cropped to its bounding box;
    - the longest side is scaled to ``size - 2 * margin`` (Fashion-MNIST's items touch the
      frame: the median longest side is 28 of 28), the other side keeps the aspect ratio,
      and the object is centred on black;
    - contrast is stretched so the brightest object pixels are white.

    Raises BlankImage when nothing stands out from the background (an empty sketch).
    """
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {g.shape}")
    background = _background(g)
    if background > 0.5:  # light background: a photo or a drawing on paper
        g, background = 1.0 - g, 1.0 - background
    g = np.clip(g - background, 0.0, 1.0)
    top = float(g.max(initial=0.0))
    if top < 0.08:  # nothing stands out by more than ~20 grey levels
        raise BlankImage()
    mask = g > 0.15 * top
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    g = g[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] / top
    h, w = g.shape
    inner = size - 2 * margin
    scale = inner / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    # Box filter when shrinking (averages the pixels), bilinear when enlarging.
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(g, "F").resize((new_w, new_h), method), np.float32)
    out = np.zeros((size, size), np.float32)
    y0, x0 = (size - new_h) // 2, (size - new_w) // 2
    out[y0 : y0 + new_h, x0 : x0 + new_w] = np.clip(small, 0.0, 1.0)
    return out


def _background(g: np.ndarray) -> float:
    """The background's grey level: the median of the four corner patches (objects reach
    the edges of a frame, as Fashion-MNIST's trousers do, but seldom its corners)."""
    k = max(1, min(g.shape) // 10)
    corners = [g[:k, :k], g[:k, -k:], g[-k:, :k], g[-k:, -k:]]
    return float(np.median(np.concatenate([c.ravel() for c in corners])))


def prepare(image: Image.Image, channels: int, size: int) -> torch.Tensor:
    """A PIL image -> (1, channels, size, size) in [0, 1]: framed like Fashion-MNIST for
    greyscale models; resized on the shorter side and centre-cropped for colour models.

    A JPEG not yet decoded is decoded at a reduced scale (at least DRAFT_SIDE, and at least
    ``size``, on each side): a 12-megapixel photo (4032x3024) is decoded at 1008x756, still
    36 times the 28 pixels across that the framing keeps of an object filling the frame."""
    _check_pixels(image)
    side = max(DRAFT_SIDE, size)
    try:
        image.draft(None, (side, side))  # JPEG only; other formats ignore it
        image = ImageOps.exif_transpose(image)
        image = _flatten(image if channels == 3 else _on_white(image))
        if channels == 3:
            image = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
            return torch.from_numpy(pixels.copy())[None]
        grey = np.asarray(_on_white(image).convert("L"), dtype=np.float32) / 255.0
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(_bomb_pixels(e)) from None
    except READ_ERRORS:
        raise UnreadableImage() from None
    return torch.from_numpy(frame_like_dataset(grey, size))[None, None]


def _on_white(image: Image.Image) -> Image.Image:
    """Transparent images (a sketchpad's strokes, a cut-out photo) on white paper, for the
    greyscale path: the framing then inverts them to light-on-dark like any drawing."""
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image
