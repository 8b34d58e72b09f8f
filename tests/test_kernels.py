"""The CPU training kernels (core/models/kernels.py) against the plain PyTorch layers."""

from __future__ import annotations

import copy
import sys

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


def gray_block(channels: int, padding: int) -> kernels.Sequential:
    """cnn_bn's first block: conv 3x3 (no bias) -> BatchNorm -> pool -> ReLU."""
    torch.manual_seed(2)
    block = kernels.Sequential(
        kernels.GrayConv2d(channels, 3, padding=padding, bias=False),
        kernels.BatchNormPoolReLU(channels),
    ).train()
    with torch.no_grad():
        block[1].bn.weight.uniform_(0.5, 1.5)
        block[1].bn.weight[0] = -0.7
        block[1].bn.bias.uniform_(-0.5, 0.5)
    return block


def train_step(block: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> dict:
    """One forward and backward pass: the output, whether the fused kernel ran, the
    gradients and the buffers."""
    y = block(x)
    y.backward(grad.to(y))
    steps, node = [], y.grad_fn  # the backward graph's chain of first inputs
    while node is not None:
        steps.append(type(node).__name__)
        node = next((fn for fn, _ in node.next_functions if fn is not None), None)
    return {
        "out": y.detach().float(),
        "fused": "_GrayBlockBackward" in steps,
        **{name: p.grad.float() for name, p in block.named_parameters()},
        **{name: b.float() for name, b in block.named_buffers()},
    }


@pytest.mark.parametrize(
    ("shape", "padding"), [((8, 1, 10, 12), 1), ((6, 1, 12, 10), 0), ((64, 1, 28, 28), 1)]
)
def test_the_first_conv_block_trains_as_one_kernel_like_the_plain_layers(shape, padding):
    block = gray_block(5, padding)
    exact = copy.deepcopy(block).double()  # the plain layers (the kernels take float32)
    x = with_ties(shape)
    sides = [(side + 2 * padding - 2) // 2 for side in shape[2:]]
    grad = torch.randn(shape[0], 5, *sides)
    fused, plain = train_step(block, x, grad), train_step(exact, x.double(), grad)
    assert fused["fused"] and not plain["fused"]
    for name, value in plain.items():
        if name != "fused":
            # Relative to the largest value: the conv's weight gradient sums 10^5 terms that
            # nearly cancel (float32 oneDNN is off by 2e-4 here; the kernel by 4e-7).
            scale = value.abs().max().item() or 1.0
            torch.testing.assert_close(fused[name], value, rtol=0, atol=1e-5 * scale, msg=name)


def test_the_kernels_give_the_same_result_on_one_thread_and_on_two():
    before = torch.get_num_threads()
    x, grad = with_ties((32, 1, 28, 28)), torch.randn(32, 5, 14, 14)
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = kernels.Sequential(*gray_block(5, 1), kernels.BatchNormPoolReLU(5))
            results.append(train_step(model, x, grad[:, :, :7, :7]))
    finally:
        torch.set_num_threads(before)
    assert results[0]["fused"]  # and the second block's kernel runs too (its own test)
    for name, value in results[0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(results[1][name])), name


@pytest.mark.skipif(
    sys.platform != "linux" or not torch.backends.openmp.is_available(),
    reason="PyTorch's OpenMP runtime is looked up on Linux",
)
def test_the_kernels_find_pytorchs_own_openmp_threads():
    assert kernels.openmp() is not None


def test_the_first_conv_block_steps_aside_for_what_it_does_not_cover():
    x = with_ties((4, 1, 8, 8))
    assert train_step(gray_block(3, 1), x, torch.randn(4, 3, 4, 4))["fused"]
    needs_grad = x.clone().requires_grad_(True)  # a saliency map's input
    assert not train_step(gray_block(3, 1), needs_grad, torch.randn(4, 3, 4, 4))["fused"]
    strided = gray_block(3, 1)
    strided[0].stride = (2, 2)
    assert not train_step(strided, x, torch.randn(4, 3, 2, 2))["fused"]
    hooked = gray_block(3, 1)
    seen = []
    hooked[0].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    assert not train_step(hooked, x, torch.randn(4, 3, 4, 4))["fused"]
    assert seen == [torch.Size([4, 3, 8, 8])]
    with torch.no_grad():
        assert gray_block(3, 1).eval()(x).shape == (4, 3, 4, 4)


def test_a_nan_input_still_reaches_the_loss_through_the_first_block():
    x = with_ties((4, 1, 8, 8))
    x[1, 0, 3, 3] = float("nan")
    y = gray_block(3, 1)(x)
    assert type(y.grad_fn).__name__ == "_GrayBlockBackward"
    assert torch.isnan(y).all()  # every channel's batch mean is NaN
