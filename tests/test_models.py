"""The model registry and every registered architecture."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import UserError, models, tasks
from core.config import ModelConfig
from core.models import backbone, base, cnn
from core.models.base import InputSpec

NAMES = [e.name for e in models.list_models()]
# Buildable here: torchvision's backbones need weights this machine cannot download.
OFFLINE = [n for n in NAMES if n not in backbone.DOWNLOADED]
SPECS = {
    "gray28x10": InputSpec(),
    "rgb64x5": InputSpec(channels=3, size=64, num_classes=5, mean=(0.5,) * 3, std=(0.5,) * 3),
}


def build(name: str, spec: InputSpec | None = None, **options) -> base.Classifier:
    torch.manual_seed(0)
    return models.build(ModelConfig(name, **options), spec or InputSpec())


def layers(model: nn.Module, kind: type) -> list:
    return [m for m in model.modules() if isinstance(m, kind)]


def test_registry_holds_the_documented_models():
    assert {"mlp", "cnn_bn", "cnn_small", "fast"} <= set(NAMES)
    assert sorted(NAMES) == NAMES


@pytest.mark.parametrize("spec_id", SPECS)
@pytest.mark.parametrize("name", OFFLINE)
def test_forward_features_and_gradients(name, spec_id):
    spec = SPECS[spec_id]
    model = build(name, spec).train()
    x = torch.rand(4, spec.channels, spec.size, spec.size)
    logits = model(x)
    features = model.features(x)
    autoencoder = models.get(name).task == "reconstruct"
    assert logits.shape == (x.shape if autoencoder else (4, spec.num_classes))
    assert features.ndim == 2 and features.shape[0] == 4
    assert torch.isfinite(logits).all() and torch.isfinite(features).all()
    # The head reads exactly the embedding that features() returns.
    head_in = layers(model.head, nn.Linear)[0].in_features
    assert features.shape[1] == head_in

    if autoencoder:  # its output is the reconstruction
        F.mse_loss(logits, x).backward()
    else:
        F.cross_entropy(logits, torch.arange(4) % spec.num_classes).backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trained, "nothing to train"
    for pname, p in trained:  # a backbone's frozen layers are meant to get none
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"


@pytest.mark.parametrize("name", OFFLINE)
def test_every_model_trains_under_bf16_autocast(name):
    """The trainer's bf16 path on CPUs with AVX512-BF16 (bf16="auto" there): the custom
    layers' backward passes get bfloat16 gradients (GrayConv2d once crashed on them)."""
    model = build(name).train()
    x = torch.rand(8, 1, 28, 28)
    with torch.autocast("cpu", torch.bfloat16):
        out = model(x)
        loss = tasks.of(name).loss(out, x, torch.arange(8) % 10, label_smoothing=0.0)
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.dtype == p.dtype, pname
            assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", OFFLINE)
def test_eval_mode_is_deterministic_and_normalisation_travels_with_weights(name):
    model = build(name).eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), model(x))
    state = model.state_dict()
    assert "mean" in state and "std" in state  # buffers: a stored model needs nothing else


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UserError) as err:
        models.get("resnet9000")
    message = str(err.value)
    assert "resnet9000" in message
    for name in NAMES:
        assert name in message
    with pytest.raises(UserError):
        models.build(ModelConfig("resnet9000"), InputSpec())


def test_a_factory_is_registered_once_and_only_for_a_declared_family(monkeypatch):
    def factory(spec):
        raise AssertionError("never built")

    models.factory("mlp")  # its module imported: registered
    with pytest.raises(ValueError, match="mlp"):
        models.register("mlp")(factory)
    with pytest.raises(UserError, match="unknown model 'toy'"):  # declare it in the catalog
        models.register("toy")(factory)
    assert models.factory("mlp") is not factory


@pytest.mark.parametrize("name", NAMES)
def test_every_factory_names_its_paper(name):
    doc = (models.factory(name).__doc__ or "").lower()
    assert "seed" in doc, f"{name}'s docstring names no seed paper (or says 'no seed')"
    assert models.get(name).summary.strip()


def test_cnn_bn_matches_seed_000():
    model = build("cnn_bn")
    convs = layers(model, nn.Conv2d)
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 12, (3, 3), (1, 1)),
        (12, 24, (3, 3), (0, 0)),
    ]
    assert [bn.num_features for bn in layers(model, nn.BatchNorm2d)] == [12, 24]
    pools = [m for m in model.modules() if "maxpool" in type(m).__name__.lower()]
    assert len(pools) == 2
    linears = layers(model, nn.Linear)
    assert [(m.in_features, m.out_features) for m in linears] == [(864, 600), (600, 100), (100, 10)]
    dropouts = layers(model, nn.Dropout)
    assert dropouts and all(d.p == 0.4 for d in dropouts)


def test_cnn_small_matches_seed_002_and_hidden_is_configurable():
    def dense(model):
        return [(m.in_features, m.out_features) for m in layers(model, nn.Linear)]

    assert dense(build("cnn_small")) == [(1600, 50), (50, 50), (50, 10)]
    assert dense(build("cnn_small", hidden=(100,))) == [(1600, 100), (100, 10)]
    assert dense(build("cnn_small", hidden=(75, 75, 75))) == [
        (1600, 75),
        (75, 75),
        (75, 75),
        (75, 10),
    ]
    assert [c.out_channels for c in layers(build("cnn_small"), nn.Conv2d)] == [32, 64]
    assert layers(build("cnn_small"), nn.Dropout)[0].p == 0.5


def test_model_options_override_the_defaults():
    assert [m.p for m in layers(build("mlp"), nn.Dropout)] == [0.2]
    assert [m.p for m in layers(build("mlp", dropout=0.1), nn.Dropout)] == [0.1]
    assert layers(build("mlp"), nn.Linear)[0].out_features == 256
    assert [c.out_channels for c in layers(build("fast", width=8), nn.Conv2d)] == [8, 16]
    assert [c.out_channels for c in layers(build("fast"), nn.Conv2d)] == [32, 64]


def test_pool_before_relu_equals_relu_before_pool():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 10, 10)
    pool_first = nn.Sequential(nn.MaxPool2d(2), nn.ReLU())
    relu_first = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    assert torch.equal(pool_first(x), relu_first(x))


@pytest.mark.parametrize("side", [12, 11])
def test_conv_block_equals_conv_bn_relu_then_max_pool(side):
    """The blocks the CNNs use give the textbook conv -> BN -> ReLU -> pool result."""
    torch.manual_seed(0)
    block = nn.Sequential(*cnn.conv_block(2, 5, padding=1, batchnorm=True)).eval()
    conv, bn = block[0], block[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 2, side, side)
    expected = F.max_pool2d(F.relu(bn(conv(x))), 2)
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", OFFLINE)
def test_every_model_is_plain_torch_nn(name):
    """The CPU speed-ups live in core.accel, applied by the trainer: a built model holds
    torch.nn layers (and the containers and blocks of core.models) only."""
    for m in build(name).modules():
        module = type(m).__module__
        assert module.startswith(("torch.nn.", "core.models.")), (name, type(m))


def test_resnet_mini_answers_for_ten_views_of_the_image_when_evaluated():
    model = build("resnet_mini").eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        # By hand: the image moved one pixel each way (zeros fill the edge), and mirrored.
        padded = F.pad(x, (1, 1, 1, 1))
        moved = [x, padded[..., :28, 1:29], padded[..., 2:, 1:29], padded[..., 1:29, :28],
                 padded[..., 1:29, 2:]]  # fmt: skip
        views = moved + [v.flip(-1) for v in moved]
        expected = torch.stack([model.head(model.features(v)) for v in views]).mean(0)
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x.flip(-1)), model(x))  # the views mirror as a set
        with base.one_view(model):
            torch.testing.assert_close(model(x), model.head(model.features(x)))
        assert model.average_views  # back after the block
        model.train()  # training sees one view: the shifts and flips are its augmentation
        torch.testing.assert_close(model(x), model.head(model.features(x)))


def test_views_go_back_onto_the_image():
    model = build("resnet_mini")
    picture = torch.zeros(1, 1, 28, 28)
    picture[..., 10, 5] = 1.0  # one pixel
    views = torch.cat([model.view(picture, v) for v in model.views])
    assert views.sum() == 10  # none pushed it off the edge
    back = model.onto_image(views)
    assert back.shape == picture.shape and torch.equal(back, 10 * picture)


def test_resnet_mini_is_a_shrunk_resnet_9():
    model = build("resnet_mini")
    convs = layers(model, nn.Conv2d)
    pairs = [(1, 32), (32, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 128), (128, 128),
             (128, 128)]  # fmt: skip
    assert [(c.in_channels, c.out_channels) for c in convs] == pairs
    assert convs[0].stride == (2, 2) and all(c.stride == (1, 1) for c in convs[1:])
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # Conv weights (no biases: BatchNorm follows), BatchNorm scales and shifts, the head.
    conv = sum(9 * a * b for a, b in pairs)
    norms = 2 * sum(b for _, b in pairs)
    assert models.parameter_count("resnet_mini") == conv + norms + 128 * 10 + 10 == 482_154
    x = torch.rand(2, 1, 28, 28)
    assert model.body[:3](x).shape == (2, 32, 14, 14)  # the strided conv
    assert model.body[:8](x).shape == (2, 64, 7, 7)  # the second stage
    assert model.features(x).shape == (2, 128)


def test_cnn_bn_pools_before_its_relus():
    kinds = [type(m) for m in build("cnn_bn").body][:8]
    block = [nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ReLU]
    assert kinds == block * 2
