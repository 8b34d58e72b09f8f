"""Named configurations: each seed paper's recipe, our fast default and our most accurate.

``python -m core train --preset NAME`` starts from one; flags given beside it override it.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import UserError
from core.config import ModelConfig, RunConfig, TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    config: RunConfig
    paper: dict  # what the seed paper reported, to show next to ours ({} for our own)


def _run(model: ModelConfig, **train) -> RunConfig:
    return RunConfig(model=model, train=TrainConfig(**train))


def _adam(model: str, epochs: int, batch_size: int) -> RunConfig:
    """The seed papers' recipe: Adam at a constant learning rate of 1e-3."""
    return _run(ModelConfig(model), epochs=epochs, batch_size=batch_size, lr=1e-3,
                optimizer="adam", schedule="constant")  # fmt: skip


PRESETS = {
    p.name: p
    for p in (
        Preset(
            "fast",
            "our fast default: 90% test accuracy in about 2 epochs on 2 CPU cores",
            _run(ModelConfig("fast"), epochs=3, batch_size=256, lr=4e-3, weight_decay=5e-4,
                 label_smoothing=0.1),
            {},
        ),
        Preset(
            "best",
            "our most accurate: about 94% test accuracy in 3 minutes on 2 CPU cores",
            _run(ModelConfig("resnet_mini"), epochs=15, batch_size=256, lr=0.2,
                 optimizer="nesterov", weight_decay=5e-4, label_smoothing=0.1, jitter=1,
                 hflip=True),
            {},
        ),
        Preset("seed000-cnn", "seed 000's CNN as the paper trained it: Adam, 10 epochs",
               _adam("cnn_bn", epochs=10, batch_size=64),
               {"source": "seed 000, Table 1", "accuracy": 0.8978, "macro_f1": 0.899302,
                "macro_precision": 0.903567}),
        Preset("seed000-mlp", "seed 000's network without convolution: Adam, 10 epochs",
               _adam("mlp", epochs=10, batch_size=64),
               {"source": "seed 000, Table 2", "accuracy": 0.8799, "macro_f1": 0.878057,
                "macro_precision": 0.882789}),
        Preset("seed002-cnn", "seed 002's Keras CNN: Adam, batch 32, 5 epochs",
               _adam("cnn_small", epochs=5, batch_size=32),
               {"source": "seed 002, section 3.1 (training accuracy)", "accuracy": 0.9002}),
    )
}  # fmt: skip


def get(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def paper_for(model_name: str, dataset: str) -> dict | None:
    """What a seed paper reported for this model on Fashion-MNIST (None if nothing)."""
    if dataset != "fashion-mnist":
        return None
    return next((p.paper for p in PRESETS.values()
                 if p.paper and p.config.model.name == model_name), None)  # fmt: skip
