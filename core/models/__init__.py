"""The model registry: one registered factory per architecture (as timm's ``@register_model``).

Every model is a ``Classifier``: ``features(x)`` gives the penultimate embedding the maps and
Grad-CAM use, ``forward(x)`` gives logits. Inputs are float images in [0, 1], shape
(B, C, H, W); each model normalises them itself, so a stored model needs nothing else to run.
"""

from __future__ import annotations

import contextvars
import functools
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
    # Bumped when a change alters the numbers a fixed seed gives (layers, their order, init):
    # the store's run keys hash it (a docstring or speed-only edit keeps every stored run).
    version: int = 1


_REGISTRY: dict[str, Entry] = {}
# False while counting parameters: backbones then skip reading (or downloading) their weights.
PRETRAINED_WEIGHTS = contextvars.ContextVar("pretrained_weights", default=True)


def register(name: str, summary: str, version: int = 1, **defaults):
    """Decorator: ``@register("mlp", "one hidden layer", version=1, hidden=(256,),
    dropout=0.2)``. ``version``: the family's numerics version (see ``Entry``; bump it, and
    tests/test_fingerprints.py's table, when a fixed seed's numbers change)."""

    def wrap(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = Entry(name, factory, summary, defaults, version=version)
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


@functools.lru_cache(maxsize=64)
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


@functools.lru_cache(maxsize=256)
def footprint(model_cfg, spec: InputSpec, batch_size: int) -> tuple[int, int]:
    """(parameters, estimated bytes to train one batch) of ``model_cfg`` on ``spec``.

    Built and run on the meta device (shapes only: nothing is allocated, no weights are
    read, a 100-million-unit layer costs nothing to measure). The bytes count float32
    weights, and for the trainable ones their gradient and two Adam moments, plus every
    module's output kept for the backward pass and its gradient there (x 2), per image.
    An estimate for a refusal threshold, not a profile: within 2x of the peak RSS growth.
    """
    import torch

    token = PRETRAINED_WEIGHTS.set(False)
    try:
        with torch.device("meta"):
            model = build(model_cfg, spec)
            per_image = 0

            def count(_module, _inputs, output):
                nonlocal per_image
                if isinstance(output, torch.Tensor):
                    per_image += output.numel()

            leaves = [m for m in model.modules() if not list(m.children())]
            hooks = [m.register_forward_hook(count) for m in leaves]
            try:
                model(torch.zeros(1, spec.channels, spec.size, spec.size))
            finally:
                for h in hooks:
                    h.remove()
    finally:
        PRETRAINED_WEIGHTS.reset(token)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return params, 4 * (params + 3 * trainable + 2 * per_image * batch_size)


__all__ = ["Classifier", "InputSpec", "build", "footprint", "get", "list_models",
           "parameter_count", "register"]  # fmt: skip
