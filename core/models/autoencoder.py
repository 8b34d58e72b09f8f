"""Seed 001's convolutional autoencoder and the classifier pretrained with its encoder.

Seed 001 (Fashion-MNIST, PyTorch): an encoder of two 3x3 convolutions (16 then 32 kernels),
each with ReLU, dropout p and a 2x2 max-pool, then a linear layer to n latent units; a decoder
of a linear layer and two transposed convolutions back to 28x28, with a sigmoid output;
MSE loss, Adam, batches of 100, a 50k/10k/10k split. Its Tables 1-3 report the test MSE for
n in 64..512, p in 0.05..0.2 and lr in 1e-2..1e-4 (0.020 at its best); the appendix drops
the pooling (test MSE 0.019 with it, 0.004 without) and compares a fine-tuned, a frozen and
an untrained encoder under the classifier (0.91 test accuracy fine-tuned).
"""

from __future__ import annotations

from torch import nn

from core import UserError
from core.models import register
from core.models.base import Classifier, InputSpec

CHANNELS = (16, 32)  # the encoder's two conv layers


class Autoencoder(Classifier):
    """``features(x)``: the n latent units; ``forward(x)``: the reconstruction, (B, C, H, W)
    in [0, 1] like the input. Trained on the MSE between the two (core.tasks.Reconstruct)."""


def make_encoder(spec: InputSpec, latent: int, dropout: float, pooling: bool) -> nn.Sequential:
    """conv 3x3 16 -> ReLU -> dropout [-> max-pool], conv 3x3 32 -> ReLU -> dropout
    [-> max-pool], flatten -> linear n -> ReLU -> dropout."""
    layers: list[nn.Module] = []
    c_in = spec.channels
    for c_out in CHANNELS:
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        ]
        if pooling:
            layers.append(nn.MaxPool2d(2))
        c_in = c_out
    side = spec.size // 4 if pooling else spec.size
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(CHANNELS[-1] * side * side, latent),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )


def make_decoder(spec: InputSpec, latent: int, dropout: float) -> nn.Sequential:
    """linear -> 32 maps of side/4 -> two stride-2 transposed convs -> sigmoid (any pooling:
    seed 001 changed only the encoder)."""
    side = spec.size // 4
    return nn.Sequential(
        nn.Linear(latent, CHANNELS[-1] * side * side),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Unflatten(1, (CHANNELS[-1], side, side)),
        nn.ConvTranspose2d(CHANNELS[-1], CHANNELS[0], 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.ConvTranspose2d(CHANNELS[0], spec.channels, 3, stride=2, padding=1, output_padding=1),
        nn.Sigmoid(),
    )


def _check(spec: InputSpec) -> None:
    if spec.size % 4:
        raise UserError(f"the autoencoder needs an image side divisible by 4 (got {spec.size})")


@register("conv_autoencoder")
def conv_autoencoder(spec: InputSpec, latent: int, dropout: float, pooling: bool) -> Autoencoder:
    """Seed 001's autoencoder (Gabaldón, 2023; its numbers are in this module's docstring)."""
    _check(spec)
    return Autoencoder(
        spec, make_encoder(spec, latent, dropout, pooling), make_decoder(spec, latent, dropout)
    )


@register("ae_classifier")
def ae_classifier(
    spec: InputSpec, latent: int, dropout: float, pooling: bool, encoder: str | None,
    encoder_mode: str,
) -> Classifier:  # fmt: skip
    """Seed 001's pretrained classifier: the autoencoder's encoder, then a linear layer to the
    classes. Its weights start as those of the ``encoder`` run (core.runs loads them; the
    architecture options come from that run too). ``encoder_mode``: ``finetune`` trains
    everything, ``frozen`` only the linear head, ``random`` keeps the architecture but starts
    from random weights (seed 001's appendix: fine-tuned 0.91, frozen and random lower).
    """
    _check(spec)
    del encoder, encoder_mode  # they decide the starting weights, not the architecture
    body = make_encoder(spec, latent, dropout, pooling)
    return Classifier(spec, body, nn.Linear(latent, spec.num_classes))
