"""Fully connected networks."""

from __future__ import annotations

from torch import nn

from core.models import register
from core.models.base import Classifier, InputSpec, dense_stack


@register("mlp")
def mlp(spec: InputSpec, hidden: tuple[int, ...], dropout: float) -> Classifier:
    """Seed 000's network without convolution: flatten -> dense hidden layer(s) -> 10.

    Seed 000 (Chediack Ciminari, 2022), Table 2: test accuracy 0.8799, macro F1 0.8781, after
    10 epochs. The paper gives one hidden layer; its size and dropout are configurable here.
    """
    inputs = spec.channels * spec.size * spec.size
    body = nn.Sequential(nn.Flatten(), dense_stack([inputs, *hidden], dropout))
    return Classifier(spec, body, nn.Linear(hidden[-1], spec.num_classes))
