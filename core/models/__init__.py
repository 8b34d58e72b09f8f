"""The model registry: each family declared in ``catalog`` (without torch), built by the
factory its module registers with ``@register(name)`` (as timm's ``@register_model``).

Every model is a ``Classifier``: ``features(x)`` gives the penultimate embedding the maps and
Grad-CAM use, ``forward(x)`` gives logits. Inputs are float images in [0, 1], shape
(B, C, H, W); each model normalises them itself, so a stored model needs nothing else to run.
Importing this package does not import torch; building a model does.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.models.catalog import Family, families, family

if TYPE_CHECKING:
    from core.models.base import Classifier, InputSpec

Factory = Callable[..., "Classifier"]
_FACTORIES: dict[str, Factory] = {}
# False while counting parameters: backbones then skip reading (or downloading) their weights.
PRETRAINED_WEIGHTS = contextvars.ContextVar("pretrained_weights", default=True)


def register(name: str):
    """Decorator: ``@register("mlp")`` makes the function the factory of catalog family
    ``mlp``: called with the input spec and the family's options."""

    def wrap(factory: Factory) -> Factory:
        family(name)  # declared in the catalog, or UserError
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} registered twice")
        _FACTORIES[name] = factory
        return factory

    return wrap


def factory(name: str) -> Factory:
    """The registered factory of family ``name`` (its module imported now: torch)."""
    entry = family(name)
    importlib.import_module(entry.module)
    return _FACTORIES[name]


def list_models() -> list[Family]:
    return families()


def get(name: str) -> Family:
    """Family ``name`` (UserError listing the known ones when there is none)."""
    return family(name)


def build(model_cfg, spec: InputSpec) -> Classifier:
    """A fresh, randomly initialised model for ``model_cfg`` (a ModelConfig) and the input."""
    defaults = family(model_cfg.name).options
    options = {k: getattr(model_cfg, k) for k in defaults}
    options = {k: (defaults[k] if v is None else v) for k, v in options.items()}
    return factory(model_cfg.name)(spec, **options)


@functools.lru_cache(maxsize=64)
def parameter_count(name: str, spec: InputSpec | None = None) -> int:
    """Model ``name``'s parameters for ``spec`` (default: 28x28 greyscale, 10 classes),
    counted on the meta device: nothing is allocated and no pretrained weights are read."""
    import torch

    from core.config import ModelConfig
    from core.models.base import InputSpec

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


__all__ = ["Family", "build", "factory", "footprint", "get", "list_models", "parameter_count",
           "register"]  # fmt: skip
