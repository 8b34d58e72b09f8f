"""The fast stand-ins ``core.accel.accelerate`` swaps into a plain model, and their kernels.

Each is a subclass of the plain layer it replaces with no state of its own (``accelerate``
changes the layer's class in place), so its parameters, buffers, hooks and state-dict keys
are the plain layer's. Each gives the plain layer's result up to float32 rounding and falls
back to the plain layer's own forward for anything it does not cover: a GPU, bfloat16,
evaluation or no autograd where that is what it speeds up, odd sizes, forward hooks, or the
switch off (``core.accel.enabled``).

``FusedSequential``: ``nn.Sequential`` that trains BatchNorm2d -> MaxPool2d(2) -> ReLU as
one kernel. In cnn_bn's training step these three layers took a third of the time: run one
by one they read and write the full-size feature map about a dozen times (BatchNorm's
statistics, normalisation and backward; the pool's forward, winner masks and strided
gradient writes; the ReLU). Fused, each channel is read twice forward (statistics, then
normalise + pool + ReLU into the quarter-size output) and twice backward. Same as
``relu(max_pool2d(batch_norm(x), 2))`` in training mode: batch statistics with the biased
variance for normalising and the unbiased one for the running estimate, ties in a pooling
window going to the first element in row-major order (as PyTorch's pool), NaN passed
through (so a diverging run is still caught).

Preceded by a 3x3 conv on one input channel without bias (cnn_bn's first block), the four
layers train as one kernel: the conv's output (9.6 MB at batch 256, in memory-bound
kernels) is never stored: each channel is computed from the 0.9 MB padded input into a
buffer that stays in the core's cache, and the backward pass gets the conv's weight
gradient from the pooled gradient alone (see ``fused.gray_backward_channel``). Forward and
backward take about a quarter of the plain layers' time (figures: README, Benchmarks).

``GrayConv2d``: a conv on one input channel (the first layer on grayscale images), whose
weight gradient oneDNN computes slowly for cnn_bn's 22 M multiply-adds. It is one
matrix product: the output gradient, channels by (image, pixel), times the k x k shifted
copies of the padded input.

``MaxPool2x2``: on CPUs PyTorch's NCHW ``max_pool2d_with_indices`` forward took a third of
cnn_bn's training step; four strided views and three ``maximum`` calls take a tenth of
that, and the backward pass rebuilds the winner masks instead of storing int64 indices.

``Dropout``: the keep-mask drawn by ``torch.rand``: the same Bernoulli(1 - p) mask and
scaling, but on CPUs ``bernoulli_`` took three times as long (6% of cnn_bn's step).

``row_major``: a forward pre-hook on a model's body giving its input row-major (NCHW)
strides. A one-channel batch gathered by index comes back with strides like (784, 1, 28, 1):
also "channels last", so oneDNN picked NHWC kernels for every layer after it, and on CPUs
BatchNorm over 12 channels in NHWC ran six times slower (cnn_bn trained 35% slower).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core import accel


def _hooked(*modules: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _array(t: torch.Tensor, *shape: int) -> np.ndarray:
    """``t``'s memory as an array (of ``shape``: a view, never a copy, or RuntimeError)."""
    t = t.detach()
    return (t.view(*shape) if shape else t).numpy()


# -- the 2x2 max-pool -----------------------------------------------------------------------


class _MaxPool2x2(torch.autograd.Function):
    """2x2 max-pool, stride 2, on even-sized maps: same values and gradients as
    ``F.max_pool2d(x, 2)`` (ties go to the first element in row-major order)."""

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = (x[..., i::2, j::2] for i, j in _WINDOW)
        return torch.maximum(torch.maximum(a, b), torch.maximum(c, d))

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _MaxPool2x2.pool(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        out = _MaxPool2x2.pool(x)  # recomputed: cheap, and the output may be changed in place
        grad = torch.empty_like(x)
        free = torch.ones_like(out, dtype=torch.bool)  # windows whose winner is not yet found
        for i, j in _WINDOW:
            hit = (x[..., i::2, j::2] == out) & free
            grad[..., i::2, j::2] = grad_out * hit
            free &= ~hit
        return grad


_WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))  # row-major order inside each 2x2 window


def is_pool2x2(m: nn.Module) -> bool:
    """Whether ``m`` is ``nn.MaxPool2d(2)`` (or its stand-in): 2x2 windows, stride 2."""
    return (
        isinstance(m, nn.MaxPool2d)
        and nn.modules.utils._pair(m.kernel_size) == (2, 2)
        and nn.modules.utils._pair(m.stride or m.kernel_size) == (2, 2)
        and nn.modules.utils._pair(m.padding) == (0, 0)
        and nn.modules.utils._pair(m.dilation) == (1, 1)
        and not m.ceil_mode
        and not m.return_indices
    )


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` with a faster CPU pass on NCHW maps (odd trailing rows and
    columns dropped, as there); a channels-last map (a backbone's) keeps oneDNN's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            x.device.type == "cpu"
            and x.ndim == 4
            and x.is_contiguous()
            and x.dtype.is_floating_point
            and accel.enabled()
        ):
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        return _MaxPool2x2.apply(x[..., :h, :w])


# -- dropout --------------------------------------------------------------------------------


class Dropout(nn.Dropout):
    """``nn.Dropout`` with its keep-mask drawn by ``torch.rand`` on CPUs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.inplace or x.device.type != "cpu" or not accel.enabled():
            return super().forward(x)
        keep = torch.rand(x.shape, device=x.device) >= self.p  # float32 draws: exact p
        return x * keep * (1.0 / (1.0 - self.p))


# -- the gray conv --------------------------------------------------------------------------


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


def is_gray_conv(m: nn.Module) -> bool:
    """Whether ``m`` is a conv ``GrayConv2d`` speeds up: one input channel, stride 1, square
    kernel and zero padding, no dilation or groups. (With stride 2, fast's first conv, oneDNN's
    own gradient trained faster: figures in README, Benchmarks.)"""
    if not isinstance(m, nn.Conv2d) or isinstance(m.padding, str):
        return False
    k, s, p = m.kernel_size, m.stride, m.padding
    return (
        m.in_channels == 1
        and m.groups == 1
        and m.dilation == (1, 1)
        and m.padding_mode == "zeros"
        and k[0] == k[1]
        and s == (1, 1)
        and p[0] == p[1]
    )


class GrayConv2d(nn.Conv2d):
    """``nn.Conv2d(1, c_out, k, stride=s, padding=p)`` (square) with a faster weight gradient
    on CPUs (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            torch.is_grad_enabled()
            and self.weight.requires_grad
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype == torch.float32
            and x.ndim == 4
            and not torch.is_autocast_enabled(x.device.type)  # its backward is float32
            and accel.enabled()
        ):
            return super().forward(x)
        return _GrayConvWeightGrad.apply(x, self.weight, self.bias, self.stride[0], self.padding[0])


# -- the fused blocks -----------------------------------------------------------------------


def _update_running(bn: nn.BatchNorm2d, mean: np.ndarray, var: np.ndarray, count: int):
    """The running estimates, as nn.BatchNorm2d keeps them (unbiased variance)."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        bn.running_mean.lerp_(torch.from_numpy(mean).to(bn.running_mean), bn.momentum)
        unbiased = var * (count / max(count - 1, 1))
        bn.running_var.lerp_(torch.from_numpy(unbiased).to(bn.running_var), bn.momentum)


class _BatchNormPoolReLU(torch.autograd.Function):
    """BatchNorm (training) -> 2x2 max-pool -> ReLU by the fused kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, bn):
        n, c, hh, ww = x.shape
        mean, var = np.empty(c), np.empty(c)
        out = x.new_empty(n, c, hh // 2, ww // 2)
        code = torch.empty(out.shape, dtype=torch.uint8)
        accel.kernels().forward(
            (n, c, hh, ww), x=_array(x, n * c, hh, ww), weight=_array(weight),
            bias=_array(bias), eps=np.array([bn.eps]), mean=mean, var=var,
            out=_array(out, n * c, -1), code=_array(code, n * c, -1),
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
        accel.kernels().backward(
            (n, c, hh, ww), x=_array(x, n * c, hh, ww),
            dx=_array(dx, n * c, hh, ww),
            grad=_array(grad.contiguous(), n * c, -1),
            out=_array(out, n * c, -1), code=_array(code, n * c, -1),
            weight=_array(weight), eps=np.array([eps]), mean=mean, var=var,
            dweight=dweight.numpy(), dbias=dbias.numpy(),
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
        rows = (n * c, -1)
        accel.kernels().gray_forward(
            (n, c, hh, ww), xp=xp.numpy(), conv_weight=_array(conv_weight, c, 9),
            weight=_array(weight), bias=_array(bias), eps=np.array([bn.eps]), mean=mean,
            var=var, out=_array(out, *rows), code=_array(code, *rows),
            at_win=_array(at_win, *rows), gram=gram, tap=tap, mask=_row_mask(hh, ww),
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
        rows = (n * c, -1)
        accel.kernels().gray_backward(
            (n, c, 2 * h, 2 * w), xp=xp.numpy(), grad=_array(grad.contiguous(), *rows),
            out=_array(out, *rows), code=_array(code, *rows),
            at_win=_array(at_win, *rows),
            conv_weight=_array(conv_weight, c, 9), weight=_array(weight),
            eps=np.array([eps]), mean=mean, var=var, gram=gram, tap=tap,
            dconv_weight=dcw.numpy(), dweight=dweight.numpy(), dbias=dbias.numpy(),
        )  # fmt: skip
        return None, dcw.view_as(conv_weight), dweight, dbias, None, None


def bn_pool_relu(layers: list[nn.Module], i: int) -> bool:
    """Whether layers[i:i + 3] are BatchNorm2d -> MaxPool2d(2) -> ReLU, in their kinds."""
    return (
        i + 3 <= len(layers)
        and type(layers[i]) is nn.BatchNorm2d
        and is_pool2x2(layers[i + 1])
        and isinstance(layers[i + 2], nn.ReLU)
    )


def gray_block(layers: list[nn.Module], i: int) -> bool:
    """Whether layers[i:i + 4] are a 3x3 stride-1 gray conv without bias, then
    BatchNorm2d -> MaxPool2d(2) -> ReLU, in their kinds."""
    conv = layers[i]
    return (
        is_gray_conv(conv)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.bias is None
        and bn_pool_relu(layers, i + 1)
    )


def _fusable(bn: nn.BatchNorm2d, x: torch.Tensor, height: int, width: int) -> bool:
    """Whether the kernels take x into BatchNorm ``bn`` (training) with maps of this size."""
    return (
        bn.training
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
        and accel.enabled()
        and accel.kernels() is not None
    )


class FusedSequential(nn.Sequential):
    """``nn.Sequential`` that trains [gray conv ->] BatchNorm -> pool -> ReLU runs of its
    layers as one kernel on CPUs (see the module doc); same layers, names and results."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            if gray_block(layers, i) and self._gray_fusable(layers[i : i + 4], x):
                conv, bn = layers[i], layers[i + 1]
                x = _GrayBlock.apply(x, conv.weight, bn.weight, bn.bias, bn, conv.padding[0])
                i += 4
            elif (
                bn_pool_relu(layers, i)
                and not _hooked(*layers[i : i + 3])
                and _fusable(layers[i], x, *x.shape[-2:])
            ):
                bn = layers[i]
                x = _BatchNormPoolReLU.apply(x.contiguous(), bn.weight, bn.bias, bn)
                i += 3
            else:
                x = layers[i](x)
                i += 1
        return x

    @staticmethod
    def _gray_fusable(block: list[nn.Module], x: torch.Tensor) -> bool:
        conv, bn = block[0], block[1]
        pad = conv.padding[0]
        return (
            not x.requires_grad  # a saliency map's input: the plain layers give its gradient
            and x.ndim == 4
            and x.shape[-3] == 1
            and not _hooked(*block)
            and _fusable(bn, x, x.shape[-2] + 2 * pad - 2, x.shape[-1] + 2 * pad - 2)
        )


# -- the layout fix -------------------------------------------------------------------------


def row_major(_module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: the input with row-major (NCHW) strides, without a copy (see the
    module doc); a non-contiguous input (a backbone's channels-last batch) is left alone."""
    x = args[0]
    if not (isinstance(x, torch.Tensor) and x.is_contiguous() and accel.enabled()):
        return None
    return (x.view(-1).view(x.shape), *args[1:])
