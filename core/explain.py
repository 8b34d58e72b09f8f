"""What a trained network looks at: first-layer filters, feature maps, HiResCAM and saliency.

Images go in as float tensors in [0, 1] of shape (1, C, H, W) (uint8 arrays are accepted and
divided by 255); the model normalises them itself. Everything comes back as numpy arrays
ready to draw, plus helpers that turn them into uint8 pictures (``tile``, ``overlay``,
``enlarge``). Used by the "Inside the network" page and the classify tab.

Which tensor is a conv layer's "feature map": the output of the first ``nn.ReLU`` (or
``nn.ReLU6``, in EfficientNet-Lite) that runs after that ``nn.Conv2d`` and before the next
one (the layer's activation); when no ReLU follows, the conv's own output. In ``cnn_bn`` and
``cnn_small`` a block runs conv -> [BatchNorm] -> max-pool -> ReLU, so their maps are the
pooled ones (half the conv's side: 28x28 input -> 12x14x14 and 24x6x6 for cnn_bn); in
``fast`` (conv -> BatchNorm -> ReLU) they are 32x14x14 and 64x7x7. HiResCAM uses the same
tensor of the last conv layer.

Models are shared between sessions (pages cache them), so nothing here leaves a trace on a
model: hooks are removed, train/eval mode is restored, no ``.grad`` is written, and hooked
passes hold one lock so two sessions never see each other's activations.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

# The user-image guards live in core.preprocess; re-exported for the pages and tests.
from core.preprocess import (  # noqa: F401
    MAX_PIXELS,
    UPLOAD_FORMATS,
    ImageTooLarge,
    UnreadableImage,
    open_image,
    to_model_input,
)

_LOCK = threading.RLock()


# -- layers and filters --------------------------------------------------------------------


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` with its module name ("body.0"), in definition order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """The first conv layer's weights, float32 (out_channels, in_channels, k, k)."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError("the model has no convolution layers")
    return convs[0][1].weight.detach().float().cpu().numpy()


# -- activations ---------------------------------------------------------------------------


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm's running statistics, no dropout) for the block, then as before."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _batch(model: nn.Module, image) -> torch.Tensor:
    """(1, C, H, W) or (C, H, W), float in [0, 1] or uint8 -> float32 (1, C, H, W) on the
    model's device."""
    x = torch.as_tensor(image)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image (1, C, H, W), got shape {tuple(x.shape)}")
    return x.to(next(model.parameters()).device)


def _traced_forward(model: nn.Module, x: torch.Tensor, keep_graph: bool):
    """(logits, calls): calls lists (module name, is_conv, output) for every Conv2d and ReLU
    call, in execution order. Outputs are cloned unless ``keep_graph`` (a later in-place
    ReLU would otherwise overwrite a conv's output)."""
    calls: list[tuple[str, bool, torch.Tensor]] = []

    def hook(name: str):
        def record(module, _inputs, output):
            out = output if keep_graph else output.detach().clone()
            calls.append((name, isinstance(module, nn.Conv2d), out))

        return record

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.ReLU | nn.ReLU6)
    ]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits, calls


def _activations(calls) -> list[tuple[str, torch.Tensor]]:
    """Each conv call's activation: the first spatial (4-D) ReLU output before the next conv,
    else the conv's own output."""
    maps = []
    for i, (name, is_conv, out) in enumerate(calls):
        if not is_conv:
            continue
        act = out
        for _, later_is_conv, later in calls[i + 1 :]:
            if later_is_conv:
                break
            if later.ndim == 4:
                act = later
                break
        maps.append((name, act))
    return maps


def feature_maps(model: nn.Module, image) -> list[tuple[str, np.ndarray]]:
    """[(conv layer name, float32 (channels, h, w))] for one image, one entry per conv layer
    in execution order (see the module docstring for which tensor that is); [] for models
    without convolutions."""
    x = _batch(model, image)
    with _LOCK, _evaluating(model), torch.inference_mode():
        _, calls = _traced_forward(model, x, keep_graph=False)
    return [(name, act[0].float().cpu().numpy()) for name, act in _activations(calls)]


def probabilities(model: nn.Module, image) -> np.ndarray:
    """Softmax class probabilities (num_classes,) for one image."""
    x = _batch(model, image)
    with _LOCK, _evaluating(model), torch.inference_mode():
        return torch.softmax(model(x).float(), dim=1)[0].cpu().numpy()


# -- where the model looks -----------------------------------------------------------------


def _target(logits: torch.Tensor, target_class: int | None) -> int:
    if target_class is None:
        return int(logits.argmax(1))
    if not 0 <= target_class < logits.shape[1]:
        raise ValueError(f"class {target_class} out of range 0..{logits.shape[1] - 1}")
    return int(target_class)


def _unit(heat: torch.Tensor) -> np.ndarray:
    """Non-negative map -> float32 numpy in [0, 1], divided by its maximum (0 stays 0: "no
    evidence"); an all-zero or non-finite map gives zeros."""
    heat = heat.detach().float().cpu()
    top = float(heat.max()) if heat.numel() else 0.0
    if not math.isfinite(top) or top <= 0:
        return np.zeros(tuple(heat.shape), np.float32)
    return (heat / top).clamp_(0, 1).numpy()


def saliency(model: nn.Module, image, target_class: int | None = None) -> np.ndarray:
    """(H, W) in [0, 1]: |d score / d pixel|, the maximum over colour channels, divided by
    its maximum. The score is the logit of ``target_class`` (default: the predicted one)."""
    x = _batch(model, image)
    with _LOCK, _evaluating(model), torch.inference_mode(False), torch.enable_grad():
        x = x.clone().requires_grad_(True)  # a fresh leaf (even if ``image`` was not)
        logits = model(x)
        score = logits[0, _target(logits, target_class)]
        (grad,) = torch.autograd.grad(score, x)  # (1, C, H, W); no parameter .grad written
    return _unit(grad[0].abs().amax(dim=0))


def hires_cam(model: nn.Module, image, target_class: int | None = None) -> np.ndarray:
    """Where the model found evidence for ``target_class`` (default: the predicted one):
    (H, W) in [0, 1], the map the Inside page and the Classify tab both draw.

    HiResCAM (Draelos and Carin, 2020) on the last conv layer's activation A (K, h, w),
    measured from an empty picture: ReLU(sum_k dScore/dA_k * (A_k - A0_k)) position by
    position, where A0 is the activation of an all-black image (Fashion-MNIST's background,
    and the one core.preprocess frames a greyscale model's uploads on; for photos, the usual
    baseline of attribution methods). Upsampled bilinearly to the input size and divided by
    its maximum. Models without convolutions get ``saliency``.

    Why not Grad-CAM: it averages each map's gradient over the positions first, and behind a
    flatten and dense layers (all our CNNs) that average mixes places the model treats
    differently: its map came out empty for 28 and 35 of the first 200 Fashion-MNIST test
    images with two runs of the fast preset (confident answers on image 0 or 1 among them;
    none empty with this map). Why from an empty picture: plain HiResCAM also credits the
    background, whose constant activation the dense layer weighs like any other (the same
    for every image, so no evidence about this one): with the fast preset 0.75 of its map
    fell on the object's pixels (dilated by one) in the median over those 200 images, with
    red blobs in empty corners; measured from black, 0.91. Summed over the positions, the
    map is (to first order) the score's rise over the empty picture's.
    """
    if not conv_layers(model):
        return saliency(model, image, target_class)
    x = _batch(model, image)
    with _LOCK, _evaluating(model), torch.inference_mode(False):
        x = x.clone()  # a normal tensor even under the caller's inference mode
        with torch.no_grad():
            _, calls = _traced_forward(model, torch.zeros_like(x), keep_graph=False)
            _, empty = _activations(calls)[-1]  # (1, K, h, w)
        with torch.enable_grad():
            # Needing the input's gradient keeps the graph even if the weights are frozen.
            x.requires_grad_(True)
            logits, calls = _traced_forward(model, x, keep_graph=True)
            _, act = _activations(calls)[-1]  # (1, K, h, w)
            score = logits[0, _target(logits, target_class)]
            (grad,) = torch.autograd.grad(score, act)
        rise = (grad * (act.detach() - empty)).sum(dim=1, keepdim=True)  # (1, 1, h, w)
    onto_image = getattr(model, "onto_image", None)
    if onto_image is not None and getattr(model, "average_views", False):
        # It answered for several views of the image (models.resnet.ViewAveraged): each
        # view's evidence, at the image's size, moved back onto the image's own pixels.
        rise = onto_image(F.interpolate(rise, size=x.shape[-2:], mode="bilinear",
                                        align_corners=False))  # fmt: skip
        return _unit(F.relu(rise)[0, 0])
    cam = F.interpolate(F.relu(rise), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return _unit(cam[0, 0])


# -- pictures ------------------------------------------------------------------------------


def _minmax_each(maps: np.ndarray) -> np.ndarray:
    """(N, ...) -> uint8, each map scaled to 0..255 on its own; a constant map becomes 0."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    scale = np.divide(255.0, hi - lo, out=np.zeros_like(hi), where=hi > lo)
    shape = (-1,) + (1,) * (maps.ndim - 1)
    return np.round((maps - lo.reshape(shape)) * scale.reshape(shape)).astype(np.uint8)


def tile(
    maps: np.ndarray,
    columns: int = 8,
    gap: int = 1,
    gap_value: int | tuple[int, ...] = 255,
    scale: int = 1,
) -> np.ndarray:
    """A stack of maps as one uint8 grid image, ``columns`` maps a row, ``gap`` pixels apart.

    (N, h, w) or (N, 1, h, w) -> grey (rows*(h*scale+gap)-gap, cols*(w*scale+gap)-gap);
    (N, 3, h, w), or an RGB ``gap_value`` (a gap colour no grey map can take), -> the same
    with colour (..., 3). Each map is enlarged ``scale`` times by nearest neighbour before
    the gaps go in, so a big grid keeps thin gaps (enlarging the finished grid would widen
    them too). Each map is min-max scaled on its own (black: its lowest value, white: its
    highest), so weak and strong maps look alike: compare shapes, not brightness, across maps.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if not (maps.ndim == 3 or (maps.ndim == 4 and maps.shape[1] == 3)) or len(maps) == 0:
        raise ValueError(f"expected (N, h, w) or (N, 3, h, w) maps, got {maps.shape}")
    cells = _minmax_each(maps)
    if maps.ndim == 4:
        cells = cells.transpose(0, 2, 3, 1)  # (N, h, w, 3)
    elif np.ndim(gap_value) == 1:
        cells = np.repeat(cells[..., None], 3, axis=3)
    cells = cells.repeat(scale, axis=1).repeat(scale, axis=2)  # (N, h*scale, w*scale[, 3])
    n, h, w = cells.shape[:3]
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    grid = np.empty((rows * (h + gap) - gap, cols * (w + gap) - gap, *cells.shape[3:]), np.uint8)
    grid[...] = gap_value
    for i, m in enumerate(cells):
        r, c = divmod(i, cols)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = m
    return grid


def enlarge(picture: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (H, W[, 3]) -> (H*scale, W*scale[, 3]), nearest neighbour: a 3x3 kernel stays 9
    crisp squares instead of a blur."""
    image = Image.fromarray(picture)
    w, h = image.size
    return np.asarray(image.resize((w * scale, h * scale), Image.Resampling.NEAREST))


def to_display(image) -> np.ndarray:
    """One model input (1, C, H, W) in [0, 1] (or uint8) -> uint8 (H, W) grey or (H, W, 3)."""
    x = torch.as_tensor(image)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.reshape(-1, *x.shape[-2:])  # (C, H, W)
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)


# Control points of the classic "jet" colour map: 0 dark blue, 0.5 green-yellow, 1 dark red.
_JET = np.array(
    [[0, 0, 0.5], [0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0.5, 0, 0]], dtype=np.float32
)
_JET_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_JET)), _JET[:, c]) for c in range(3)],
    axis=1,
)  # (256, 3) in [0, 1]


def overlay(picture: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A heatmap (H, W) in [0, 1], coloured blue (0) to red (1), blended over a uint8 picture
    (H, W) or (H, W, 3): ``alpha`` of the heatmap's colour -> uint8 (H, W, 3)."""
    rgb = np.asarray(picture, np.float32) / 255.0
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    index = np.round(np.clip(np.nan_to_num(heat), 0, 1) * 255).astype(np.intp)
    blend = (1 - alpha) * rgb + alpha * _JET_LUT[index]
    return np.round(blend * 255).astype(np.uint8)
