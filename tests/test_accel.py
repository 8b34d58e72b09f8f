"""core.accel against the plain layers: values, gradients, buffers, where it steps aside, the
switch, state-dict keys, and the checked calling convention of the Numba tasks."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core import accel, models
from core.accel import calls
from core.accel import modules as fast
from core.config import ModelConfig
from core.models.base import InputSpec

needs_numba = pytest.mark.skipif(accel.kernels() is None, reason="Numba is not installed")


def with_ties(shape, seed=0) -> torch.Tensor:
    """Random maps with flat patches (equal values, as a conv gives on a blank background)."""
    torch.manual_seed(seed)
    x = torch.randn(shape) * 3 + 1
    x[:, :, : shape[2] // 2, : shape[3] // 3] = 0.25
    return x


def graph(y: torch.Tensor) -> list[str]:
    """The backward graph's chain of first inputs, by node name."""
    steps, node = [], y.grad_fn
    while node is not None:
        steps.append(type(node).__name__)
        node = next((fn for fn, _ in node.next_functions if fn is not None), None)
    return steps


def bn_block(channels: int) -> nn.Sequential:
    """BatchNorm -> pool -> ReLU as a plain model has it, with a negative scale (it turns the
    pool's winner around)."""
    torch.manual_seed(1)
    block = nn.Sequential(nn.BatchNorm2d(channels), nn.MaxPool2d(2), nn.ReLU(inplace=True))
    with torch.no_grad():
        block[0].weight.uniform_(0.5, 1.5)
        block[0].weight[0] = -0.7
        block[0].bias.uniform_(-0.5, 0.5)
    return block.train()


def fused_ran(block: nn.Module, x: torch.Tensor) -> bool:
    return "_BatchNormPoolReLUBackward" in graph(block(x))


# -- BatchNorm -> pool -> ReLU --------------------------------------------------------------


@needs_numba
@pytest.mark.parametrize("shape", [(6, 3, 8, 10), (16, 12, 28, 28)])
def test_fused_block_trains_like_the_plain_layers(shape):
    plain = bn_block(shape[1])
    fused = accel.accelerate(copy.deepcopy(plain))
    assert type(fused) is fast.FusedSequential
    x = with_ties(shape)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = fused(x1), plain(x2)
    assert "_BatchNormPoolReLUBackward" in graph(y1)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y2)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for p1, p2 in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-4)
    for (name, b1), (_, b2) in zip(fused.named_buffers(), plain.named_buffers(), strict=True):
        torch.testing.assert_close(b1, b2, rtol=1e-5, atol=1e-6, msg=name)
    assert int(fused[0].num_batches_tracked) == 1


@needs_numba
def test_a_nan_still_reaches_the_loss():
    # A diverging run must be caught: the fused ReLU may not turn NaN into 0.
    block = accel.accelerate(bn_block(2))
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 1, 1] = float("nan")
    y = block(x)
    assert "_BatchNormPoolReLUBackward" in graph(y)
    assert torch.isnan(y[:, 0]).all() and not torch.isnan(y[:, 1]).any()


@needs_numba
def test_what_the_kernel_does_not_cover_takes_the_plain_layers(monkeypatch):
    block = accel.accelerate(bn_block(3))
    x = torch.randn(2, 3, 8, 8)
    assert fused_ran(block, x)
    assert not fused_ran(block, torch.randn(2, 3, 9, 8))  # odd sides
    assert not fused_ran(block.double(), x.double())
    block.float()
    with torch.no_grad():
        assert block(x).grad_fn is None
    assert not fused_ran(block.eval(), x.requires_grad_(True))
    block.train()
    seen = []
    handle = block[2].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    assert not fused_ran(block, x)
    assert seen == [torch.Size([2, 3, 4, 4])]  # a hook sees the layer it is on
    handle.remove()
    assert fused_ran(block, x)
    monkeypatch.setenv(accel.SWITCH, "off")
    assert not fused_ran(block, x)
    monkeypatch.delenv(accel.SWITCH)
    monkeypatch.setenv(accel.OLD_SWITCH, "off")  # the switch's earlier name
    assert not fused_ran(block, x)


@needs_numba
def test_evaluation_uses_the_running_statistics():
    block = accel.accelerate(bn_block(4))
    for _ in range(3):
        block(with_ties((8, 4, 6, 6)).requires_grad_(True))
    block.eval()
    bn = block[0]
    x = torch.randn(2, 4, 6, 6)
    expected = F.relu(F.max_pool2d(F.batch_norm(
        x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps,
    ), 2))  # fmt: skip
    torch.testing.assert_close(block(x), expected)


# -- the gray conv, the pool, dropout -------------------------------------------------------


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (1, 1)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("input_grad", [False, True])
def test_gray_conv_gradients_match_conv2d(stride, padding, bias, input_grad):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 5, 3, stride=stride, padding=padding, bias=bias)
    gray = accel.accelerate(copy.deepcopy(conv))
    assert type(gray) is fast.GrayConv2d
    x = torch.rand(4, 1, 9, 9)
    x1, x2 = x.clone().requires_grad_(input_grad), x.clone().requires_grad_(input_grad)
    y1, y2 = gray(x1), conv(x2)
    assert "_GrayConvWeightGradBackward" in graph(y1)
    torch.testing.assert_close(y1, y2)
    grad = torch.randn_like(y2)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(gray.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-5)
    if bias:
        torch.testing.assert_close(gray.bias.grad, conv.bias.grad, rtol=1e-4, atol=1e-5)
    if input_grad:
        torch.testing.assert_close(x1.grad, x2.grad)


def test_only_the_layers_the_stand_ins_cover_are_swapped():
    model = accel.accelerate(nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(1, 4, (3, 1)), nn.Conv2d(1, 4, 3, 2),
        nn.MaxPool2d(2), nn.MaxPool2d(3), nn.MaxPool2d(2, ceil_mode=True), nn.Dropout(0.3),
    ))  # fmt: skip
    kinds = [type(m) for m in model]
    assert kinds == [fast.GrayConv2d, nn.Conv2d, nn.Conv2d, nn.Conv2d, fast.MaxPool2x2,
                     nn.MaxPool2d, nn.MaxPool2d, fast.Dropout]  # fmt: skip


@pytest.mark.parametrize("side", [8, 9])
@pytest.mark.parametrize("ties", [False, True])
def test_custom_max_pool_matches_torch_values_and_gradients(side, ties):
    torch.manual_seed(0)
    shape = (2, 3, side, side)
    data = torch.randint(0, 3, shape).float() if ties else torch.randn(shape)
    x1 = data.clone().requires_grad_(True)
    x2 = data.clone().requires_grad_(True)
    y1 = accel.accelerate(nn.MaxPool2d(2))(x1)
    y2 = F.max_pool2d(x2, 2)
    assert "_MaxPool2x2Backward" in graph(y1)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    grad = torch.randn_like(y2)
    y1.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=0)


def test_the_pool_keeps_onednns_kernel_for_channels_last_maps():
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y = accel.accelerate(nn.MaxPool2d(2))(x.requires_grad_(True))
    assert "_MaxPool2x2Backward" not in graph(y)
    torch.testing.assert_close(y, F.max_pool2d(x, 2))


def test_dropout_draws_the_same_mask_law():
    drop = accel.accelerate(nn.Dropout(0.25))
    assert type(drop) is fast.Dropout
    torch.manual_seed(0)
    y = drop(torch.ones(400_000))
    kept = y > 0
    assert abs(kept.float().mean().item() - 0.75) < 0.003
    assert torch.allclose(y[kept], torch.tensor(1 / 0.75))
    x = torch.randn(10)
    assert torch.equal(drop.eval()(x), x)


# -- whole models ---------------------------------------------------------------------------

TRAINED = ["cnn_bn", "fast", "cnn_small", "cnn_stages", "conv_autoencoder", "mlp"]


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if out.shape == x.shape:  # an autoencoder's reconstruction
        return F.mse_loss(out, x)
    return F.cross_entropy(out, y)


@pytest.mark.parametrize("name", TRAINED)
def test_models_take_the_same_training_step_with_and_without_accel(name):
    torch.manual_seed(0)
    plain = models.build(ModelConfig(name, dropout=0.0), InputSpec()).train()
    quick = accel.accelerate(copy.deepcopy(plain))
    assert list(quick.state_dict()) == list(plain.state_dict())  # the same keys
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    x[:, :, :5] = 0  # a blank border, as Fashion-MNIST's
    losses = []
    for model in (quick, plain):
        loss = loss_of(model, x, y)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for (pname, p1), (_, p2) in zip(quick.named_parameters(), plain.named_parameters(),
                                    strict=True):  # fmt: skip
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-3, atol=1e-5, msg=pname)
    for (bname, b1), (_, b2) in zip(quick.named_buffers(), plain.named_buffers(), strict=True):
        torch.testing.assert_close(b1, b2, msg=bname)


def test_weights_travel_between_plain_and_accelerated_models():
    torch.manual_seed(0)
    plain = models.build(ModelConfig("cnn_bn"), InputSpec())
    quick = accel.accelerate(models.build(ModelConfig("cnn_bn"), InputSpec()))
    quick.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(quick.state_dict(), strict=True)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(quick.eval()(x), plain.eval()(x), rtol=0, atol=0)


def test_accelerate_changes_nothing_when_switched_off_or_off_the_cpu(monkeypatch):
    def kinds(model):
        return [type(m) for m in model.modules()]

    plain = kinds(models.build(ModelConfig("cnn_bn"), InputSpec()))
    monkeypatch.setenv(accel.SWITCH, "off")
    assert kinds(accel.accelerate(models.build(ModelConfig("cnn_bn"), InputSpec()))) == plain
    monkeypatch.delenv(accel.SWITCH)
    with torch.device("meta"):  # any device but the CPU
        model = models.build(ModelConfig("cnn_bn"), InputSpec())
    assert kinds(accel.accelerate(model)) == plain and not model.body._forward_pre_hooks
    once = accel.accelerate(models.build(ModelConfig("cnn_bn"), InputSpec()))
    assert kinds(once) != plain
    hooks = len(once.body._forward_pre_hooks)
    assert kinds(accel.accelerate(once)) == kinds(once)  # a second call adds nothing
    assert len(once.body._forward_pre_hooks) == hooks == 1


def test_one_channel_batches_run_in_row_major_layout():
    # x[idx] on a one-channel batch can come back with strides (784, 1, 28, 1), which oneDNN
    # takes for channels-last; the accelerated body gets plain NCHW strides, same values.
    torch.manual_seed(0)
    model = accel.accelerate(models.build(ModelConfig("cnn_bn"), InputSpec())).eval()
    plain = torch.rand(8, 1, 28, 28)
    odd = plain.as_strided(plain.shape, (784, 1, 28, 1))
    assert torch.equal(odd, plain) and odd.is_contiguous(memory_format=torch.channels_last)
    seen = []
    model.body[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].stride()))
    assert torch.allclose(model(odd), model(plain))
    assert seen == [(784, 784, 28, 1)] * 2


# -- cnn_bn's first block: gray conv -> BatchNorm -> pool -> ReLU as one kernel ---------------


def gray_block(channels: int, padding: int) -> nn.Sequential:
    """cnn_bn's first block, plain: conv 3x3 (no bias) -> BatchNorm -> pool -> ReLU."""
    torch.manual_seed(2)
    block = nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=padding, bias=False),
        nn.BatchNorm2d(channels),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
    ).train()
    with torch.no_grad():
        block[1].weight.uniform_(0.5, 1.5)
        block[1].weight[0] = -0.7
        block[1].bias.uniform_(-0.5, 0.5)
    return block


def train_step(block: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> dict:
    """One forward and backward pass: the output, whether the fused kernel ran, the
    gradients and the buffers."""
    y = block(x)
    y.backward(grad.to(y))
    return {
        "out": y.detach().float(),
        "fused": "_GrayBlockBackward" in graph(y),
        **{name: p.grad.float() for name, p in block.named_parameters()},
        **{name: b.float() for name, b in block.named_buffers()},
    }


@needs_numba
@pytest.mark.parametrize(
    ("shape", "padding"), [((8, 1, 10, 12), 1), ((6, 1, 12, 10), 0), ((64, 1, 28, 28), 1)]
)
def test_the_first_conv_block_trains_as_one_kernel_like_the_plain_layers(shape, padding):
    block = gray_block(5, padding)
    exact = copy.deepcopy(block).double()  # the plain layers (the kernels take float32)
    accel.accelerate(block)
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


@needs_numba
def test_the_kernels_give_the_same_result_on_one_thread_and_on_two():
    before = torch.get_num_threads()
    x, grad = with_ties((32, 1, 28, 28)), torch.randn(32, 5, 7, 7)
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = accel.accelerate(nn.Sequential(
                *gray_block(5, 1), nn.BatchNorm2d(5), nn.MaxPool2d(2), nn.ReLU()
            ).train())  # fmt: skip
            results.append(train_step(model, x, grad))
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
    assert calls.openmp() is not None


@needs_numba
def test_the_first_conv_block_steps_aside_for_what_it_does_not_cover():
    def block(**change):
        b = accel.accelerate(gray_block(3, 1))
        for k, v in change.items():
            setattr(b[0], k, v)
        return b

    x = with_ties((4, 1, 8, 8))
    assert train_step(block(), x, torch.randn(4, 3, 4, 4))["fused"]
    needs_grad = x.clone().requires_grad_(True)  # a saliency map's input
    assert not train_step(block(), needs_grad, torch.randn(4, 3, 4, 4))["fused"]
    assert not train_step(block(stride=(2, 2)), x, torch.randn(4, 3, 2, 2))["fused"]
    hooked = block()
    seen = []
    hooked[0].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    assert not train_step(hooked, x, torch.randn(4, 3, 4, 4))["fused"]
    assert seen == [torch.Size([4, 3, 8, 8])]
    with torch.no_grad():
        assert block().eval()(x).shape == (4, 3, 4, 4)


@needs_numba
def test_a_nan_input_still_reaches_the_loss_through_the_first_block():
    x = with_ties((4, 1, 8, 8))
    x[1, 0, 3, 3] = float("nan")
    y = accel.accelerate(gray_block(3, 1))(x)
    assert "_GrayBlockBackward" in graph(y)
    assert torch.isnan(y).all()  # every channel's batch mean is NaN


# -- the calling convention -----------------------------------------------------------------


def forward_call(n=2, c=3, hh=4, ww=6) -> tuple[tuple, dict]:
    """A correct call of the forward task: its sizes and arrays."""
    rows = (n * c, hh // 2 * (ww // 2))
    return (n, c, hh, ww), {
        "x": np.random.default_rng(0).standard_normal((n * c, hh, ww)).astype(np.float32),
        "weight": np.ones(c, np.float32), "bias": np.zeros(c, np.float32),
        "eps": np.array([1e-5]), "mean": np.empty(c), "var": np.empty(c),
        "out": np.empty(rows, np.float32), "code": np.empty(rows, np.uint8),
    }  # fmt: skip


def misaligned(a: np.ndarray) -> np.ndarray:
    raw = np.zeros(a.nbytes + 1, np.uint8)
    view = raw[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


WRONG_CALLS = {
    "dtype": ("x", lambda a: a.astype(np.float64), "must be float32"),
    "shape": ("x", lambda a: a.reshape(2, 3, 24), r"must have shape \(n\*c, hh, ww\)"),
    "channels": ("weight", lambda a: a[:2].copy(), r"must have shape \(c\)"),
    "stride": ("x", lambda a: np.repeat(a, 2, axis=2)[:, :, ::2], "must be C-contiguous"),
    "alignment": ("mean", misaligned, "not aligned"),
    "read-only output": ("out", read_only, "must be writeable"),
    "not an array": ("eps", lambda a: [1e-5], "must be a NumPy array"),
    "missing": ("code", None, "takes the arrays"),
}


@needs_numba
@pytest.mark.parametrize("wrong", WRONG_CALLS)
def test_a_wrong_call_raises_before_any_memory_is_touched(wrong):
    fused = accel.kernels()
    sizes, arrays = forward_call()
    name, change, message = WRONG_CALLS[wrong]
    if change is None:
        del arrays[name]
    else:
        arrays[name] = change(arrays[name])
    before = {k: np.array(v, copy=True) for k, v in arrays.items() if k in ("out", "mean")}
    with pytest.raises(ValueError, match=message):
        fused.forward(sizes, **arrays)
    for k, v in before.items():
        assert np.array_equal(np.asarray(arrays[k]), v, equal_nan=True)  # untouched


@needs_numba
def test_wrong_sizes_and_extra_arrays_raise():
    fused = accel.kernels()
    sizes, arrays = forward_call()
    with pytest.raises(ValueError, match="even"):
        fused.forward((2, 3, 5, 6), **arrays)
    with pytest.raises(ValueError, match="positive ints"):
        fused.forward((2, 3, 4), **arrays)
    with pytest.raises(ValueError, match="takes the arrays"):
        fused.forward(sizes, **arrays, grad=arrays["out"])
    fused.forward(sizes, **arrays)  # the right call runs
    assert np.isfinite(arrays["mean"]).all() and (arrays["out"] >= 0).all()


@needs_numba
def test_every_task_declares_the_slots_it_reads():
    fused = accel.kernels()
    for task in fused.TASKS:
        sig = task.signature
        assert sig.slots == calls.HEADER + len(sig.args)
        assert len({a.name for a in sig.args}) == len(sig.args)


# -- Numba's cache ----------------------------------------------------------------------------


@needs_numba
def test_numbas_cache_is_in_the_user_cache_folder_not_the_package():
    accel.warm()
    fused = accel.kernels()
    folder = Path(fused.forward_task._cache._cache_path)
    assert folder.is_relative_to(accel.cache_dir())
    package = Path(accel.__file__).parent
    assert not list(package.rglob("*.nbi")) and not list(package.rglob("*.nbc"))
