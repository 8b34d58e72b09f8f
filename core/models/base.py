"""What every model shares: the input it expects, normalisation, features and logits."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class InputSpec:
    channels: int = 1
    size: int = 28  # square images, size x size pixels
    num_classes: int = 10
    mean: tuple[float, ...] = (0.5,)  # per channel, of the training images in [0, 1]
    std: tuple[float, ...] = (0.5,)

    @classmethod
    def of(cls, data) -> InputSpec:
        """The spec of an ImageData."""
        mean, std = data.mean_std()
        return cls(data.channels, data.size, data.num_classes, mean, std)


class Classifier(nn.Module):
    """``body`` maps normalised images to the embedding; ``head`` maps it to logits."""

    def __init__(self, spec: InputSpec, body: nn.Module, head: nn.Module):
        super().__init__()
        self.spec = spec
        # Buffers, so they travel with the weights into the store.
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1))
        self.body = body
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, D) penultimate embedding."""
        return self.body(_plain_strides((x - self.mean) / self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, num_classes) logits."""
        return self.head(self.features(x))


def _plain_strides(x: torch.Tensor) -> torch.Tensor:
    """``x`` with row-major (NCHW) strides, without a copy when it is contiguous.

    A one-channel batch gathered by index comes back with strides like (784, 1, 28, 1): also
    "channels last", so oneDNN picks NHWC kernels for every layer after it, and on CPUs
    BatchNorm over 12 channels in NHWC ran six times slower (cnn_bn trained 35% slower).
    """
    return x.reshape(-1).view(x.shape)


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max-pool, stride 2, on even-sized maps: same values and gradients as
    ``F.max_pool2d(x, 2)`` (ties go to the first element in row-major order).

    Why: on CPUs, PyTorch's NCHW ``max_pool2d_with_indices`` forward took a third of cnn_bn's
    training step; four strided views and three ``maximum`` calls take a tenth of that, and
    the backward pass rebuilds the winner masks instead of storing int64 indices.
    """

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = (x[..., i::2, j::2] for i, j in _WINDOW)
        return torch.maximum(torch.maximum(a, b), torch.maximum(c, d))

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _MaxPool2x2.pool(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        out = _MaxPool2x2.pool(x)  # recomputed: cheap, and the output may be changed in place
        grad = torch.empty_like(x)
        free = torch.ones_like(out, dtype=torch.bool)  # windows whose winner is not yet found
        for i, j in _WINDOW:
            hit = (x[..., i::2, j::2] == out) & free
            grad[..., i::2, j::2] = grad_out * hit
            free &= ~hit
        return grad


_WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))  # row-major order inside each 2x2 window


class MaxPool2x2(nn.Module):
    """Drop-in for ``nn.MaxPool2d(2)`` (odd trailing rows/columns are dropped, as there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":  # the native kernel is the fast one on GPUs
            return F.max_pool2d(x, 2)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        return _MaxPool2x2.apply(x[..., :h, :w])


def conv_out(size: int, kernel: int, padding: int, pool: bool) -> int:
    """Side of a square feature map after a stride-1 conv and an optional 2x2 max-pool."""
    size = size + 2 * padding - kernel + 1
    return size // 2 if pool else size


class Dropout(nn.Dropout):
    """nn.Dropout with its keep-mask drawn by ``torch.rand``: the same Bernoulli(1 - p)
    mask and scaling, but on CPUs ``bernoulli_`` took three times as long (6% of cnn_bn's
    training step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p  # float32 draws: exact p
        return x * keep * (1.0 / (1.0 - self.p))


def dense_stack(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for each consecutive pair of sizes."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True), Dropout(dropout)]
    return nn.Sequential(*layers)
