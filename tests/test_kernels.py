"""The CPU training kernels (core/models/kernels.py) against the plain PyTorch layers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import models
from core.config import ModelConfig
from core.models import kernels
from core.models.base import InputSpec

pytestmark = pytest.mark.skipif(kernels._kernels() is None, reason="Numba is not installed")


def with_ties(shape, seed=0) -> torch.Tensor:
    """Random maps with flat patches (equal values, as a conv gives on a blank background)."""
    torch.manual_seed(seed)
    x = torch.randn(shape) * 3 + 1
    x[:, :, : shape[2] // 2, : shape[3] // 3] = 0.25
    return x


@pytest.mark.parametrize("shape", [(6, 3, 8, 10), (16, 12, 28, 28)])
def test_fused_block_trains_like_the_plain_layers(shape):
    torch.manual_seed(1)
    fused = kernels.BatchNormPoolReLU(shape[1]).train()
    with torch.no_grad():
        fused.bn.weight.uniform_(0.5, 1.5)
        fused.bn.weight[0] = -0.7  # a negative scale turns the pool's winner around
        fused.bn.bias.uniform_(-0.5, 0.5)
    reference = copy.deepcopy(fused)
    x = with_ties(shape)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    assert fused.fusable(x1)
    y1, y2 = fused(x1), reference.plain(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y2)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for p1, p2 in zip(fused.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-4)
    for (name, b1), (_, b2) in zip(fused.named_buffers(), reference.named_buffers(), strict=True):
        torch.testing.assert_close(b1, b2, rtol=1e-5, atol=1e-6, msg=name)
    assert int(fused.bn.num_batches_tracked) == 1


def test_a_nan_still_reaches_the_loss():
    # A diverging run must be caught: the fused ReLU may not turn NaN into 0.
    block = kernels.BatchNormPoolReLU(2).train()
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 1, 1] = float("nan")
    assert block.fusable(x)
    y = block(x)
    assert torch.isnan(y[:, 0]).all() and not torch.isnan(y[:, 1]).any()


def test_what_the_kernel_does_not_cover_takes_the_plain_layers(monkeypatch):
    block = kernels.BatchNormPoolReLU(3).train()
    x = torch.randn(2, 3, 8, 8)
    assert block.fusable(x)
    assert not block.fusable(torch.randn(2, 3, 9, 8))  # odd sides
    assert not block.fusable(x.double())
    with torch.no_grad():
        assert not block.fusable(x)
    assert not block.eval().fusable(x)
    block.train()
    seen = []
    handle = block.relu.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    assert not block.fusable(x)
    block(x)
    assert seen == [torch.Size([2, 3, 4, 4])]  # a hook sees the layer it is on
    handle.remove()
    monkeypatch.setenv(kernels.SWITCH, "off")
    assert not block.fusable(x)


def test_evaluation_uses_the_running_statistics():
    torch.manual_seed(0)
    block = kernels.BatchNormPoolReLU(4).train()
    for _ in range(3):
        block(with_ties((8, 4, 6, 6)).requires_grad_(True))
    block.eval()
    x = torch.randn(2, 4, 6, 6)
    expected = F.relu(F.max_pool2d(F.batch_norm(
        x, block.bn.running_mean, block.bn.running_var, block.bn.weight, block.bn.bias,
        eps=block.bn.eps,
    ), 2))  # fmt: skip
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (1, 1), (2, 1)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("input_grad", [False, True])
def test_gray_conv_gradients_match_conv2d(stride, padding, bias, input_grad):
    torch.manual_seed(0)
    gray = kernels.GrayConv2d(5, 3, stride=stride, padding=padding, bias=bias)
    conv = nn.Conv2d(1, 5, 3, stride=stride, padding=padding, bias=bias)
    conv.load_state_dict(gray.state_dict())
    x = torch.rand(4, 1, 9, 9)
    x1, x2 = x.clone().requires_grad_(input_grad), x.clone().requires_grad_(input_grad)
    y1, y2 = gray(x1), conv(x2)
    torch.testing.assert_close(y1, y2)
    grad = torch.randn_like(y2)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(gray.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-5)
    if bias:
        torch.testing.assert_close(gray.bias.grad, conv.bias.grad, rtol=1e-4, atol=1e-5)
    if input_grad:
        torch.testing.assert_close(x1.grad, x2.grad)


@pytest.mark.parametrize("name", ["cnn_bn", "fast", "cnn_small"])
def test_models_take_the_same_training_step_with_and_without_the_kernels(name, monkeypatch):
    torch.manual_seed(0)
    fast = models.build(ModelConfig(name, dropout=0.0), InputSpec()).train()
    slow = copy.deepcopy(fast)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    x[:, :, :5] = 0  # a blank border, as Fashion-MNIST's
    losses = []
    for model, switch in ((fast, "on"), (slow, "off")):
        monkeypatch.setenv(kernels.SWITCH, switch)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for (name, p1), (_, p2) in zip(fast.named_parameters(), slow.named_parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-3, atol=1e-5, msg=name)
    for (name, b1), (_, b2) in zip(fast.named_buffers(), slow.named_buffers(), strict=True):
        torch.testing.assert_close(b1, b2, msg=name)
