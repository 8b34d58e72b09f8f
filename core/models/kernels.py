"""CPU training kernels for the layers where PyTorch's own CPU kernels are slow.

They give the plain layers' results up to float32 rounding, keep the plain layers' weights
and names, and step aside (to the plain layers) for anything they do not cover: a GPU,
bfloat16, evaluation, odd sizes, forward hooks, or ``CNN_CLASSROOM_KERNELS=off``.

``BatchNormPoolReLU``: BatchNorm -> 2x2 max-pool -> ReLU as one kernel. In cnn_bn's
training step these three layers took a third of the time: run one by one they read and
write the full-size feature map about a dozen times (BatchNorm's statistics, normalisation
and backward; the pool's forward, winner masks and strided gradient writes; the ReLU).
Fused, each channel is read twice forward (statistics, then normalise + pool + ReLU into the
quarter-size output) and twice backward. Same as ``relu(max_pool2d(batch_norm(x), 2))`` in
training mode: batch statistics with the biased variance for normalising and the unbiased
one for the running estimate, ties in a pooling window going to the first element in
row-major order (as PyTorch's pool), NaN passed through (so a diverging run is still caught).

``Sequential``: ``nn.Sequential`` that trains a 3x3 ``GrayConv2d`` (one input channel, no
bias) followed by a ``BatchNormPoolReLU`` as one kernel: cnn_bn's first block. The conv's
output (9.6 MB at batch 256, in memory-bound kernels) is never stored: each channel is
computed from the 0.9 MB padded input into a buffer that stays in the core's cache, and the
backward pass gets the conv's weight gradient from the pooled gradient alone (see
``gray_backward_channel``). Forward and backward take 3.5-3.7 ms at batch 256 on 2 cores,
against 12.4-13.7 ms for the plain layers.

``GrayConv2d``: a conv on one input channel (the first layer on grayscale images), whose
weight gradient oneDNN computes slowly (5-6 ms for cnn_bn's 22 M multiply-adds). It is one
matrix product: the output gradient, channels by (image, pixel), times the k x k shifted
copies of the padded input.

The fused kernels (``core/models/fused.py``) are compiled by Numba on first use (about 9 s,
once) and cached next to that file. Channels are independent (BatchNorm's statistics are per
channel): they are shared out among PyTorch's own OpenMP threads (see ``openmp``), and each
channel's result is the same on any number of threads.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.models.base import MaxPool2x2

SWITCH = "CNN_CLASSROOM_KERNELS"  # "off": always the plain layers (to compare, or debug)


def enabled() -> bool:
    return os.environ.get(SWITCH, "").lower() not in {"off", "0", "no"}


@functools.cache
def _kernels() -> ModuleType | None:
    """The compiled kernels (``core.models.fused``), or None when Numba is missing (the
    switch is read per call, in ``fusable``, so that it is not cached here)."""
    try:
        from core.models import fused
    except ImportError:
        return None
    return fused


@functools.cache
def openmp():
    """``GOMP_parallel`` of the OpenMP runtime PyTorch's CPU ops run on, or None.

    The kernels run on PyTorch's own worker threads: a second pool (Numba's, or Python
    threads) gained nothing, because PyTorch's OpenMP worker keeps spinning on the other
    core for a while after each of its parallel ops, waiting for the next. Only a runtime
    PyTorch has already loaded is used (RTLD_NOLOAD); LLVM's and Intel's OpenMP runtimes
    export the same entry point as GNU's.
    """
    if not torch.backends.openmp.is_available():
        return None
    found = sorted(Path(torch.__file__).parent.joinpath("lib").glob("lib*omp*"))
    try:
        with open("/proc/self/maps") as maps:  # Linux: a runtime found outside torch/lib
            found += sorted({Path(line.split()[-1]) for line in maps if "omp" in line})
    except OSError:
        pass
    for path in found:
        try:
            run = ctypes.CDLL(str(path), mode=os.RTLD_NOLOAD).GOMP_parallel
        except (OSError, AttributeError):
            continue
        run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        run.restype = None
        return run
    return None


def _run(task, channels: int, sizes: list[int], arrays: list[np.ndarray]) -> None:
    """Run a task over ``channels`` channels, its argument block made of a counter,
    ``sizes`` and the arrays' addresses (the arrays stay referenced here while it runs)."""
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("the kernels take contiguous arrays")
    block = np.array([0, *sizes, *(a.ctypes.data for a in arrays)], np.int64)
    threads = min(torch.get_num_threads(), channels)
    parallel = openmp() if threads > 1 else None
    if parallel is not None:
        parallel(task.address, block.ctypes.data, threads, 0)
    else:
        task.ctypes(block.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)))


def _update_running(bn: nn.BatchNorm2d, mean: np.ndarray, var: np.ndarray, count: int):
    """The running estimates, as nn.BatchNorm2d keeps them (unbiased variance)."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        bn.running_mean.lerp_(torch.from_numpy(mean).to(bn.running_mean), bn.momentum)
        unbiased = var * (count / max(count - 1, 1))
        bn.running_var.lerp_(torch.from_numpy(unbiased).to(bn.running_var), bn.momentum)


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class _BatchNormPoolReLU(torch.autograd.Function):
    """BatchNorm (training) -> 2x2 max-pool -> ReLU by the kernels above."""

    @staticmethod
    def forward(ctx, x, weight, bias, bn):
        n, c, hh, ww = x.shape
        mean, var = np.empty(c), np.empty(c)
        out = x.new_empty(n, c, hh // 2, ww // 2)
        code = torch.empty(out.shape, dtype=torch.uint8)
        _run(
            _kernels().forward_task, c, [n, c, hh, ww],
            [_array(x), _array(weight), _array(bias), np.array([bn.eps]), mean, var,
             out.numpy(), code.numpy()],
        )  # fmt: skip
        _update_running(bn, mean, var, n * hh * ww)
        ctx.save_for_backward(x, weight, out, code)
        ctx.stats = mean, var, bn.eps
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight, out, code = ctx.saved_tensors
        mean, var, eps = ctx.stats
        n, c, hh, ww = x.shape
        dx, dweight, dbias = torch.empty_like(x), torch.empty(c), torch.empty(c)
        _run(
            _kernels().backward_task, c, [n, c, hh, ww],
            [_array(x), dx.numpy(), grad.contiguous().numpy(), out.numpy(), code.numpy(),
             _array(weight), np.array([eps]), mean, var, dweight.numpy(), dbias.numpy()],
        )  # fmt: skip
        return dx, dweight.to(weight), dbias.to(weight), None


@functools.cache
def _row_mask(hh: int, ww: int) -> np.ndarray:
    """1 for the real columns of output rows laid at the padded width, 0 for the two extra
    ones, the last row's left out (see ``fused.tap_products``); one per map size."""
    mask = np.tile(np.arange(ww + 2) < ww, hh)[:-2].astype(np.float32)
    mask.flags.writeable = False
    return mask


class _GrayBlock(torch.autograd.Function):
    """conv 3x3 (one input channel, no bias) -> BatchNorm -> pool -> ReLU, training."""

    @staticmethod
    def forward(ctx, x, conv_weight, weight, bias, bn, padding):
        xp = F.pad(x[:, 0], (padding,) * 4).contiguous()
        n, c = x.shape[0], conv_weight.shape[0]
        hh, ww = xp.shape[1] - 2, xp.shape[2] - 2
        mean, var = np.empty(c), np.empty(c)
        out = x.new_empty(n, c, hh // 2, ww // 2)
        code = torch.empty(out.shape, dtype=torch.uint8)
        at_win = torch.empty_like(out)  # the conv's output at each window's winner
        gram, tap = np.zeros((c, 9, 9)), np.zeros((c, 9))
        cw = _array(conv_weight).reshape(c, 9)
        _run(
            _kernels().gray_forward_task, c, [n, c, hh, ww],
            [xp.numpy(), cw, _array(weight), _array(bias), np.array([bn.eps]), mean, var,
             out.numpy(), code.numpy(), at_win.numpy(), gram, tap, _row_mask(hh, ww)],
        )  # fmt: skip
        _update_running(bn, mean, var, n * hh * ww)
        ctx.save_for_backward(xp, conv_weight, weight, out, code, at_win)
        ctx.stats = mean, var, bn.eps, gram, tap
        return out

    @staticmethod
    def backward(ctx, grad):
        xp, conv_weight, weight, out, code, at_win = ctx.saved_tensors
        mean, var, eps, gram, tap = ctx.stats
        n, c, h, w = out.shape
        dcw, dweight, dbias = torch.empty(c, 9), torch.empty(c), torch.empty(c)
        _run(
            _kernels().gray_backward_task, c, [n, c, 2 * h, 2 * w],
            [xp.numpy(), grad.contiguous().numpy(), out.numpy(), code.numpy(),
             at_win.numpy(), _array(conv_weight).reshape(c, 9), _array(weight),
             np.array([eps]), mean, var, gram, tap, dcw.numpy(), dweight.numpy(),
             dbias.numpy()],
        )  # fmt: skip
        return None, dcw.view_as(conv_weight), dweight, dbias, None, None


def _hooked(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


class BatchNormPoolReLU(nn.Module):
    """BatchNorm2d -> MaxPool2x2 -> ReLU, fused on CPUs while training (see the module doc).

    The three layers stay children (``bn``, ``pool``, ``relu``), so the weights, the
    running statistics and the forward hooks are those of the plain layers.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.pool = MaxPool2x2()
        self.relu = nn.ReLU(inplace=True)

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.pool(self.bn(x)))

    def fusable(self, x: torch.Tensor, sides: tuple[int, int] | None = None) -> bool:
        """Whether the kernels take x; ``sides``: the height and width of the maps this
        block gets, when x is the input of a conv before it (see ``Sequential``)."""
        bn = self.bn
        height, width = x.shape[-2:] if sides is None else sides
        return (
            self.training
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == bn.weight.dtype == torch.float32
            and x.ndim == 4
            and height % 2 == width % 2 == 0
            and height > 0
            and width > 0
            and bn.affine
            and bn.track_running_stats
            and bn.momentum is not None
            and not _hooked(self)
            and enabled()
            and _kernels() is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fusable(x):
            return self.plain(x)
        bn = self.bn
        return _BatchNormPoolReLU.apply(x.contiguous(), bn.weight, bn.bias, bn)


class Sequential(nn.Sequential):
    """``nn.Sequential`` that trains a GrayConv2d (3x3, stride 1, no bias) followed by a
    BatchNormPoolReLU as one kernel on CPUs (see the module doc); same layers, names and
    results."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _gray_block(layers[i], layers[i + 1], x):
                conv, block = layers[i], layers[i + 1]
                bn = block.bn
                x = _GrayBlock.apply(x, conv.weight, bn.weight, bn.bias, bn, conv.padding[0])
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x


def _gray_block(conv: nn.Module, block: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``conv`` then ``block`` train as one kernel on x."""
    if not (isinstance(conv, GrayConv2d) and isinstance(block, BatchNormPoolReLU)):
        return False
    pad = conv.padding[0]
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding == (pad, pad)
        and conv.padding_mode == "zeros"
        and conv.bias is None
        and not x.requires_grad
        and not _hooked(conv)
        and x.shape[-3] == 1
        and block.fusable(x, (x.shape[-2] + 2 * pad - 2, x.shape[-1] + 2 * pad - 2))
    )


def taps(x: torch.Tensor, k: int, stride: int, padding: int) -> torch.Tensor:
    """The k*k shifted copies of a one-channel batch that a k x k conv weighs: (k*k,
    N*Ho*Wo), tap (i, j) holding each output pixel's input at offset (i, j)."""
    padded = F.pad(x, (padding,) * 4)[:, 0]
    ho = (padded.shape[1] - k) // stride + 1
    wo = (padded.shape[2] - k) // stride + 1
    rows, cols = stride * (ho - 1) + 1, stride * (wo - 1) + 1  # the span one tap sweeps
    return torch.stack(
        [
            padded[:, i : i + rows : stride, j : j + cols : stride]
            for i in range(k)
            for j in range(k)
        ]
    ).view(k * k, -1)


class _GrayConvWeightGrad(torch.autograd.Function):
    """conv2d(x, weight, bias) with x of one channel; the weight gradient one (C, N*Ho*Wo)
    x (N*Ho*Wo, k*k) matrix product with the taps."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        c, s, pad = weight.shape[0], ctx.stride, ctx.padding
        dx = dbias = None
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [s, s], [pad, pad], [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]  # fmt: skip
        per_channel = grad.transpose(0, 1).reshape(c, -1)  # (C, N*Ho*Wo)
        dweight = (per_channel @ taps(x, weight.shape[-1], s, pad).T).view_as(weight)
        if ctx.needs_input_grad[2]:
            dbias = per_channel.sum(1)
        return dx, dweight, dbias, None, None


class GrayConv2d(nn.Conv2d):
    """``nn.Conv2d(1, c_out, k, stride=s, padding=p)`` (square kernel) with a faster weight
    gradient on CPUs (see the module doc)."""

    def __init__(
        self, c_out: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True
    ):
        super().__init__(1, c_out, kernel, stride=stride, padding=padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            torch.is_grad_enabled()
            and self.weight.requires_grad
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and x.ndim == 4
            and not torch.is_autocast_enabled(x.device.type)  # its backward is float32
            and enabled()
        ):
            return super().forward(x)
        return _GrayConvWeightGrad.apply(x, self.weight, self.bias, self.stride[0], self.padding[0])


def conv2d(
    c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True
) -> nn.Conv2d:
    """``nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=bias)``; a ``GrayConv2d`` when
    the input has one channel (the first layer on grayscale images)."""
    if c_in == 1:
        return GrayConv2d(c_out, kernel, stride=stride, padding=padding, bias=bias)
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias)
