"""The model families, declared without importing torch.

Planning a run (its key, its task, where its weights start), the command line's flags and the
config schema need to know the families; a cache hit on the command line must not pay for
importing torch to learn them. So each family is declared here: the module holding its
factory (registered there with ``@register(name)``, imported only to build a model), a one-line
summary, what it learns, its options with their defaults, and a version.

``version`` is part of every run key of the family (core.store.run_key): bump it when a change
changes the numbers a run gives (the architecture, an initialisation, a default), and only
then. A docstring or a speed-only change keeps every stored run valid;
tests/test_fingerprints.py catches a numerics change made without a bump.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StartsFrom:
    """A family whose weights start from another stored run's (seed 001's classifier on its
    autoencoder's encoder): ``option`` names the ModelConfig field holding that run's id,
    ``task`` the task the run must have, ``inherits`` the architecture options taken from
    it, ``mode`` the field saying how it starts (its values: config.ENCODER_MODES)."""

    option: str
    task: str
    inherits: tuple[str, ...]
    mode: str


@dataclass(frozen=True)
class Family:
    name: str
    module: str  # the module whose @register(name) builds it
    summary: str  # one line for pickers and ``python -m core models``
    options: dict = field(default_factory=dict)  # the ModelConfig fields it reads -> defaults
    version: int = 1  # see the module doc
    task: str = "classify"  # what it learns (core.tasks): "classify" or "reconstruct"
    starts_from: StartsFrom | None = None


_BACKBONE = {"dropout": 0.2, "tune": "frozen", "resolution": None}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("mlp", "core.models.mlp",
               "one hidden layer, no convolution (seed 000's comparison network)",
               {"hidden": (256,), "dropout": 0.2}),
        Family("cnn_bn", "core.models.cnn",
               "2 conv + BatchNorm + max-pool, 3 dense layers (seed 000's CNN)",
               {"hidden": (600, 100), "dropout": 0.4}),
        Family("cnn_small", "core.models.cnn",
               "Keras-style CNN: conv 32 + pool, conv 64 + pool, dense 50-50 (seed 002)",
               {"hidden": (50, 50), "dropout": 0.5}),
        Family("fast", "core.models.cnn",
               "our fast default: 2 strided conv + BatchNorm, 1 dense layer (90% in ~2 epochs)",
               {"hidden": (128,), "dropout": 0.0, "width": 32}),
        Family("resnet_mini", "core.models.resnet",
               "compact residual CNN: 3 conv stages, each with a residual pair, answers averaged "
               "over 10 views of the image (ResNet-9's shape)",
               {"width": 32}),
        Family("cnn_stages", "core.models.stages",
               "stage-built CNN: conv + ReLU + pool per stage, then a conv to the classes "
               "(seed 003)",
               {"stages": (16, 32, 64, 128), "kernel": 3, "no_relu": (), "no_pool": (),
                "skip": ()}),
        Family("conv_autoencoder", "core.models.autoencoder",
               "seed 001's convolutional autoencoder: conv 16-32 + pool, n latent units, MSE",
               {"latent": 128, "dropout": 0.05, "pooling": True}, task="reconstruct"),
        Family("ae_classifier", "core.models.autoencoder",
               "seed 001's classifier: a stored autoencoder's encoder + linear to the classes",
               {"latent": 128, "dropout": 0.05, "pooling": True, "encoder": None,
                "encoder_mode": "finetune"},
               starts_from=StartsFrom(option="encoder", task="reconstruct",
                                      inherits=("latent", "dropout", "pooling"),
                                      mode="encoder_mode")),
        Family("efficientnet_lite0", "core.models.backbone",
               "EfficientNet-Lite0, ImageNet weights (offline), seed 004", _BACKBONE),
        Family("resnet50", "core.models.backbone",
               "ResNet50, ImageNet weights (downloaded once), seed 004's best", _BACKBONE),
        Family("vgg16", "core.models.backbone",
               "VGG16 convolutions, ImageNet weights (downloaded once), seed 004", _BACKBONE),
        Family("inception_v3", "core.models.backbone",
               "Inception-v3, ImageNet weights (downloaded once), seed 004", _BACKBONE),
    )
}  # fmt: skip


def family(name: str) -> Family:
    """The family called ``name`` (UserError listing the others when there is none)."""
    from core import UserError

    if name not in FAMILIES:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def families() -> list[Family]:
    return sorted(FAMILIES.values(), key=lambda f: f.name)


def using(option: str) -> tuple[str, ...]:
    """The families that read ModelConfig field ``option``."""
    return tuple(f.name for f in families() if option in f.options)


__all__ = ["FAMILIES", "Family", "StartsFrom", "families", "family", "using"]
