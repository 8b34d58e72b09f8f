"""Convolutional networks: the two seed papers' CNNs and our fast default."""

from __future__ import annotations

from torch import nn

from core.models import register
from core.models.base import Classifier, InputSpec, conv_out, dense_stack


def conv_block(c_in: int, c_out: int, padding: int, batchnorm: bool) -> list[nn.Module]:
    """conv 3x3 -> [BatchNorm] -> max-pool 2x2 -> ReLU.

    Pooling before the ReLU gives exactly the same output as ReLU-then-pool (max and ReLU
    commute) while the ReLU touches a quarter of the values. (On CPUs core.accel trains
    BatchNorm -> pool -> ReLU, and a grayscale first conv with them, as one kernel.)
    """
    conv = nn.Conv2d(c_in, c_out, 3, padding=padding, bias=not batchnorm)
    norm = [nn.BatchNorm2d(c_out)] if batchnorm else []
    return [conv, *norm, nn.MaxPool2d(2), nn.ReLU(inplace=True)]


@register("cnn_bn")
def cnn_bn(spec: InputSpec, hidden: tuple[int, ...], dropout: float) -> Classifier:
    """Seed 000's convolutional network.

    conv 3x3 1->12 (padding 1), BatchNorm, ReLU, max-pool 2/2; conv 3x3 12->24 (no padding),
    BatchNorm, ReLU, max-pool -> 6x6x24 = 864 -> Linear 600 -> 100 -> 10, dropout 0.4.
    Seed 000 (Chediack Ciminari, 2022), Table 1: test accuracy 0.8978, macro F1 0.8993 after
    10 epochs with Adam.
    """
    side = conv_out(conv_out(spec.size, 3, 1, pool=True), 3, 0, pool=True)  # 28 -> 14 -> 6
    body = nn.Sequential(
        *conv_block(spec.channels, 12, padding=1, batchnorm=True),
        *conv_block(12, 24, padding=0, batchnorm=True),
        nn.Flatten(),
        dense_stack([24 * side * side, *hidden], dropout),
    )
    return Classifier(spec, body, nn.Linear(hidden[-1], spec.num_classes))


@register("cnn_small")
def cnn_small(spec: InputSpec, hidden: tuple[int, ...], dropout: float) -> Classifier:
    """Seed 002's Keras CNN.

    Conv2D(32, 3x3, relu), MaxPooling2D(2), Conv2D(64, 3x3, relu), MaxPooling2D(2),
    Dropout(0.5), Flatten, Dense(50, relu), Dense(50, relu), Dense(10). Seed 002 tried hidden
    layers of 1x100, 2x50 and 3x75; all reached about 0.90 training accuracy after 5 epochs
    (Salazar Hernandez, 2021: 0.9002 with 1x100, batch 32, Adam).
    """
    side = conv_out(conv_out(spec.size, 3, 0, pool=True), 3, 0, pool=True)  # 28 -> 13 -> 5
    body = nn.Sequential(
        *conv_block(spec.channels, 32, padding=0, batchnorm=False),
        *conv_block(32, 64, padding=0, batchnorm=False),
        nn.Dropout(dropout),
        nn.Flatten(),
        # Keras puts no dropout between its dense layers.
        dense_stack([64 * side * side, *hidden], 0.0),
    )
    return Classifier(spec, body, nn.Linear(hidden[-1], spec.num_classes))


def strided_block(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    """conv k x k (3 x 3 unless told) stride 2 -> BatchNorm -> ReLU: halves the side
    without a pooling pass.

    (A fused BatchNorm -> ReLU kernel like core.accel's pooled one measured no faster than
    PyTorch's layers here: with 32 and 64 channels they are not the bottleneck.)
    """
    conv = nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register("fast")
def fast(spec: InputSpec, hidden: tuple[int, ...], dropout: float, width: int) -> Classifier:
    """CNN Classroom's fast default (no seed paper): built for 2 CPU cores.

    Strided 3x3 convs replace conv + max-pool (max-pool's backward pass dominated the CPU
    profile of cnn_bn), BatchNorm lets a one-cycle schedule use a high learning rate, and
    the feature maps stay small: 28 -> 14 -> 7. About 0.5 M multiply-adds per image, half of
    cnn_bn's. Reaches 0.90 test accuracy on Fashion-MNIST in about 2 epochs (see bench/).
    """
    side = (spec.size + 3) // 4  # two stride-2 convs with padding 1: 28 -> 14 -> 7
    body = nn.Sequential(
        *strided_block(spec.channels, width),
        *strided_block(width, 2 * width),
        nn.Flatten(),
        dense_stack([2 * width * side * side, *hidden], dropout),
    )
    return Classifier(spec, body, nn.Linear(hidden[-1], spec.num_classes))
