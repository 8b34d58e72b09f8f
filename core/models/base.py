"""What every model shares: the input it expects, normalisation, features and logits."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
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
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, num_classes) logits."""
        return self.head(self.features(x))


def conv_out(size: int, kernel: int, padding: int, pool: bool) -> int:
    """Side of a square feature map after a stride-1 conv and an optional 2x2 max-pool."""
    size = size + 2 * padding - kernel + 1
    return size // 2 if pool else size


def dense_stack(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for each consecutive pair of sizes."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


@contextlib.contextmanager
def one_view(model: nn.Module) -> Iterator[None]:
    """Within the block a model that averages its answers over views of the image
    (``average_views``: models.resnet.ViewAveraged) answers for the image alone; any other
    model is left as it is."""
    if not getattr(model, "average_views", False):
        yield
        return
    model.average_views = False
    try:
        yield
    finally:
        del model.average_views  # the class's True again
