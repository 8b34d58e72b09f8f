"""A CNN built from a list of stages, so an ablation can take any part of it away."""

from __future__ import annotations

from torch import nn

from core.models import register
from core.models.base import Classifier, InputSpec


@register("cnn_stages")
def cnn_stages(
    spec: InputSpec,
    stages: tuple[int, ...],
    kernel: int,
    no_relu: tuple[int, ...],
    no_pool: tuple[int, ...],
    skip: tuple[int, ...],
) -> Classifier:
    """Seed 003's network, whose parts an ablation can remove.

    Each stage is a k x k convolution with ``stages[i]`` channels (padding keeps the size),
    a ReLU and a 2x2 max-pool (28 x 28 inputs end as 2 x 2 maps, 64 x 64 as 4 x 4); then a
    last convolution whose kernel covers the whole remaining map, to one output per class (a
    linear layer on the flattened map, which is what ``head`` is). Stages are numbered from
    1: ``no_relu`` and ``no_pool`` list the stages that lose their ReLU or their pooling,
    ``skip`` the stages removed whole (conv and pool).
    Like seed 003's MatConvNet network it has no BatchNorm, so an ablation can still diverge.

    Seed 003 (Campo, Amaya and Franky, Universidad de los Andes): five stages on 64 x 64
    images, 4 x (conv + ReLU + 2x2 pool) then a conv to 1 x 1 x 25; after 15 epochs top-1
    error about 0.35 and top-5 error about 0.17; every ablation did worse, and removing
    stage 4's conv and pool gave NaN.
    """
    layers: list[nn.Module] = []
    channels, side = spec.channels, spec.size
    for number, width in enumerate(stages, start=1):
        if number in skip:
            continue
        layers.append(nn.Conv2d(channels, width, kernel, padding=kernel // 2))
        if number not in no_pool and side >= 2:  # a 1 x 1 map has nothing left to pool
            # An odd side keeps its last row and column (28 -> 14 -> 7 -> 4 -> 2): a floor
            # would drop them, and after four stages keep 1 of the 3 x 3 positions.
            layers.append(nn.MaxPool2d(2, ceil_mode=side % 2 == 1))
            side = (side + 1) // 2
        if number not in no_relu:
            # After the pool: max and ReLU commute, and a quarter of the values remain.
            layers.append(nn.ReLU(inplace=True))
        channels = width
    body = nn.Sequential(*layers, nn.Flatten())
    return Classifier(spec, body, nn.Linear(channels * side * side, spec.num_classes))
