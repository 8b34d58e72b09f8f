"""A compact residual CNN: how good a network gets on Fashion-MNIST in minutes on 2 cores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.models import register
from core.models.base import Classifier, InputSpec
from core.models.cnn import conv_block, strided_block


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    """conv 3x3 (padding 1) -> BatchNorm -> ReLU."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def stage(c_in: int, c_out: int) -> list[nn.Module]:
    """conv 3x3 -> BatchNorm -> max-pool 2x2 -> ReLU: halves the side (cnn.conv_block)."""
    return conv_block(c_in, c_out, padding=1, batchnorm=True)


class Residual(nn.Module):
    """x + f(x), f two conv-BatchNorm-ReLU layers keeping the channels and the side."""

    def __init__(self, channels: int):
        super().__init__()
        self.f = nn.Sequential(*conv_bn(channels, channels), *conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


# The views a ViewAveraged model answers for: the image moved by (rows, columns), each also
# mirrored left-right. The first is the image itself.
SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))


def shifted(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``x`` (..., H, W) moved down ``rows`` and right ``cols`` pixels (at most 1 each way),
    the uncovered edge filled with 0 (the datasets' black background before normalising)."""
    if rows == cols == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 - rows : 1 - rows + h, 1 - cols : 1 - cols + w]


class ViewAveraged(Classifier):
    """A classifier that, evaluated, answers for the image and nine views of it at once:
    moved one pixel up, down, left or right, and each of the five mirrored left-right; its
    logits are the mean of the ten (test-time augmentation: the views are what training
    showed it, through the best preset's 1-pixel shifts and flips). Training sees one view.

    The views go through as one batch, the image's own first: hooks see (10B, ...)
    activations whose first B are the image's. ``onto_image`` takes a per-view map back
    onto the image (core.explain's HiResCAM). ``average_views = False`` (``one_view``)
    answers for the image alone (core.models.base.one_view): the trainer validates that
    way, one pass instead of ten.
    """

    average_views = True
    views = tuple((rows, cols, mirror) for mirror in (False, True) for rows, cols in SHIFTS)
    # Images per evaluation pass (core.train.eval_batch): ten views of 64 go through as one
    # batch of 640. Scoring the test set took 18.6 s at the default 512 (5,120 at once),
    # 8.4 s at 64, 8.6 s at 128, 8.9 s at 32 (float32, this machine).
    eval_batch = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.average_views:
            return super().forward(x)
        batch = torch.cat([self.view(x, v) for v in self.views])
        logits = super().forward(batch)
        return logits.view(len(self.views), -1, logits.shape[-1]).mean(0)  # any batch size

    @staticmethod
    def view(x: torch.Tensor, v: tuple[int, int, bool]) -> torch.Tensor:
        rows, cols, mirror = v
        moved = shifted(x, rows, cols)
        return moved.flip(-1) if mirror else moved

    def onto_image(self, maps: torch.Tensor) -> torch.Tensor:
        """(views x B, C, H, W) maps at the input's size, one per view (in ``views``'
        order) -> (B, C, H, W): each moved back where its view took the image, summed."""
        per_view = maps.unflatten(0, (len(self.views), -1))
        back = []
        for (rows, cols, mirror), m in zip(self.views, per_view, strict=True):
            back.append(shifted(m.flip(-1) if mirror else m, -rows, -cols))
        return torch.stack(back).sum(0)


@register("resnet_mini")
def resnet_mini(spec: InputSpec, width: int) -> Classifier:
    """CNN Classroom's most accurate network for small images (no seed paper).

    The shape of Page's ResNet-9 (2018, the fast CIFAR-10 training), shrunk for 28 x 28
    grey images and 2 CPU cores: a stride-2 conv of ``width`` channels (28 -> 14), then
    conv stages of 2 x width and 4 x width channels with a max-pool each (14 -> 7 -> 3),
    a residual pair after each of the three, a global max-pool and a linear layer. About
    0.48 M parameters and 17 M multiply-adds per image at width 32. Its weights are kept
    channels-last, the layout oneDNN's (and cuDNN's) bfloat16 convolutions run fastest in.
    Evaluated, it averages its answers for ten views of the image (``ViewAveraged``).

    How it was chosen: README, Benchmarks (bench/resnet_variants.py trains the variants).
    A conv + pool at full resolution instead of the strided conv learned a little more per
    epoch but trained 1.25x slower; without the first residual pair it learned less.
    """
    w = width
    body = nn.Sequential(
        *strided_block(spec.channels, w),
        Residual(w),
        *stage(w, 2 * w),
        Residual(2 * w),
        *stage(2 * w, 4 * w),
        Residual(4 * w),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
    )
    model = ViewAveraged(spec, body, nn.Linear(4 * w, spec.num_classes))
    return model.to(memory_format=torch.channels_last)
