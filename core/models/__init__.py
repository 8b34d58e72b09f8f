"""The model registry: one registered factory per architecture (as timm's ``@register_model``).

Every model is a ``Classifier``: ``features(x)`` gives the penultimate embedding the maps and
Grad-CAM use, ``forward(x)`` gives logits. Inputs are float images in [0, 1], shape
(B, C, H, W); each model normalises them itself, so a stored model needs nothing else to run.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass

from core import UserError
from core.models.base import Classifier, InputSpec

Factory = Callable[..., Classifier]


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Factory
    summary: str  # one line for pickers and ``python -m core models``
    defaults: dict  # the ModelConfig fields this model reads, with its defaults


_REGISTRY: dict[str, Entry] = {}
# False while counting parameters: backbones then skip reading (or downloading) their weights.
PRETRAINED_WEIGHTS = contextvars.ContextVar("pretrained_weights", default=True)


def register(name: str, summary: str, **defaults):
    """Decorator: ``@register("mlp", "one hidden layer", hidden=(256,), dropout=0.2)``."""

    def wrap(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = Entry(name, factory, summary, defaults)
        return factory

    return wrap


def _load_families() -> None:
    # Importing the family modules runs their @register decorators.
    from core.models import autoencoder, backbone, cnn, mlp, stages  # noqa: F401


def list_models() -> list[Entry]:
    _load_families()
    return sorted(_REGISTRY.values(), key=lambda e: e.name)


def get(name: str) -> Entry:
    _load_families()
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build(model_cfg, spec: InputSpec) -> Classifier:
    """A fresh, randomly initialised model for ``model_cfg`` (a ModelConfig) and the input."""
    entry = get(model_cfg.name)
    options = {k: getattr(model_cfg, k) for k in entry.defaults}
    options = {k: (entry.defaults[k] if v is None else v) for k, v in options.items()}
    return entry.factory(spec, **options)


def parameter_count(name: str, spec: InputSpec | None = None) -> int:
    """Model ``name``'s parameters for ``spec`` (default: 28x28 greyscale, 10 classes),
    counted on the meta device: nothing is allocated and no pretrained weights are read."""
    import torch

    from core.config import ModelConfig

    token = PRETRAINED_WEIGHTS.set(False)
    try:
        with torch.device("meta"):
            model = build(ModelConfig(name), spec or InputSpec())
    finally:
        PRETRAINED_WEIGHTS.reset(token)
    return sum(p.numel() for p in model.parameters())


__all__ = ["Classifier", "InputSpec", "build", "get", "list_models", "parameter_count",
           "register"]  # fmt: skip
