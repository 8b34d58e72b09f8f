"""Two CPU training paths for layers where PyTorch's own CPU kernels are slow.

Both give the plain layers' results up to float32 rounding, keep the plain layers' weights
and names, and step aside (to the plain layers) for anything they do not cover: a GPU,
bfloat16, evaluation, odd sizes, forward hooks, or ``CNN_CLASSROOM_KERNELS=off``.

``BatchNormPoolReLU``: BatchNorm -> 2x2 max-pool -> ReLU as one kernel. In cnn_bn's
training step these three layers took a third of the time: run one by one they read and
write the full-size feature map about a dozen times (BatchNorm's statistics, normalisation
and backward; the pool's forward, winner masks and strided gradient writes; the ReLU).
Fused, each channel is read twice forward (statistics, then normalise + pool + ReLU into the
quarter-size output) and twice backward, while the channel's 0.8 MB of a 256-image batch
stays in the core's L2 cache. Same as ``relu(max_pool2d(batch_norm(x), 2))`` in training
mode: batch statistics with the biased variance for normalising and the unbiased one for the
running estimate, ties in a pooling window going to the first element in row-major order
(as PyTorch's pool), NaN passed through (so a diverging run is still caught).
The kernels are compiled by Numba (installed with umap-learn) on first use and cached next
to this file. They run on the calling thread: splitting the channels between two threads
gained nothing measurable, as PyTorch's OpenMP worker still spins on the other core for a
while after each of its own parallel ops.

``GrayConv2d``: a conv on one input channel (the first layer on grayscale images), whose
weight gradient oneDNN computes slowly (5-6 ms for cnn_bn's 22 M multiply-adds). It is one
matrix product: the output gradient, channels by (image, pixel), times the k x k shifted
copies of the padded input.
"""

from __future__ import annotations

import functools
import math
import os
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.models.base import MaxPool2x2

# Reassociation lets the sums vectorise; no "fast" flags that assume away NaN or infinity.
_FASTMATH = {"reassoc", "contract", "nsz"}


SWITCH = "CNN_CLASSROOM_KERNELS"  # "off": always the plain layers (to compare, or debug)


def enabled() -> bool:
    return os.environ.get(SWITCH, "").lower() not in {"off", "0", "no"}


@functools.cache
def _kernels() -> SimpleNamespace | None:
    """The compiled kernels, or None when Numba is missing (the switch is read per call,
    in ``fusable``, so that it is not cached here)."""
    try:
        import numba
    except ImportError:
        return None
    jit = numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)

    @jit
    def batch_stats(x, mean, var):
        """Per channel of x (N, C, H, W): mean and biased variance, in two passes."""
        n, c, hh, ww = x.shape
        size = hh * ww
        flat = x.reshape(n, c, size)
        for ch in range(c):
            total = 0.0
            for i in range(n):
                plane = flat[i, ch]
                acc = np.float32(0.0)
                for j in range(size):
                    acc += plane[j]
                total += acc
            mu = total / (n * size)
            mu32 = np.float32(mu)
            total = 0.0
            for i in range(n):
                plane = flat[i, ch]
                acc = np.float32(0.0)
                for j in range(size):
                    d = plane[j] - mu32
                    acc += d * d
                total += acc
            mean[ch] = mu
            var[ch] = total / (n * size)

    @jit
    def pool_forward(x, weight, bias, eps, mean, var, out, code):
        """out = relu(max_pool(normalised x)); code = each window's winner, 0-3."""
        n, c, hh, ww = x.shape
        for ch in range(c):
            inv = 1.0 / math.sqrt(var[ch] + eps)
            scale = np.float32(weight[ch] * inv)
            shift = np.float32(bias[ch] - mean[ch] * weight[ch] * inv)
            for i in range(n):
                o, k = out[i, ch], code[i, ch]
                for r in range(hh // 2):
                    top, bottom = x[i, ch, 2 * r], x[i, ch, 2 * r + 1]
                    for q in range(ww // 2):
                        a = top[2 * q] * scale + shift
                        b = top[2 * q + 1] * scale + shift
                        c_ = bottom[2 * q] * scale + shift
                        d = bottom[2 * q + 1] * scale + shift
                        # The first of equal maxima wins, as in PyTorch's pool.
                        best, win = a, 0
                        if b > best:
                            best, win = b, 1
                        if c_ > best:
                            best, win = c_, 2
                        if d > best:
                            best, win = d, 3
                        k[r, q] = win
                        # ReLU; a NaN passes (a comparison with NaN is false).
                        o[r, q] = np.float32(0.0) if best <= 0 else best

    @jit
    def pool_backward(x, grad, out, code, weight, mean, var, eps, dx, dweight, dbias):
        n, c, hh, ww = x.shape
        size = hh * ww
        count = n * size
        flat = x.reshape(n, c, size)
        dflat = dx.reshape(n, c, size)
        for ch in range(c):
            mu = np.float32(mean[ch])
            inv = 1.0 / math.sqrt(var[ch] + eps)
            # Only each window's winner with a positive output gets a gradient: sum it
            # (for the bias) and times its normalised input (for the weight). Selects
            # instead of branches: the ReLU's sign is a coin flip to the branch predictor.
            sum_dy, sum_dy_x = 0.0, 0.0
            for i in range(n):
                g, o, k = grad[i, ch], out[i, ch], code[i, ch]
                acc, acc_x = np.float32(0.0), np.float32(0.0)
                for r in range(hh // 2):
                    for q in range(ww // 2):
                        w = k[r, q]
                        dy = g[r, q] if o[r, q] > 0 else np.float32(0.0)
                        acc += dy
                        acc_x += dy * (x[i, ch, 2 * r + (w >> 1), 2 * q + (w & 1)] - mu)
                sum_dy += acc
                sum_dy_x += acc_x
            dbias[ch] = sum_dy
            dweight[ch] = sum_dy_x * inv
            # dx = weight * inv * (dy - mean(dy) - x_hat * mean(dy * x_hat)): the two mean
            # terms touch every element, dy only the winners.
            gain = weight[ch] * inv
            base = np.float32(-gain * sum_dy / count)
            slope = np.float32(-gain * sum_dy_x * inv * inv / count)
            gain32 = np.float32(gain)
            for i in range(n):
                plane, dplane = flat[i, ch], dflat[i, ch]
                for j in range(size):
                    dplane[j] = base + (plane[j] - mu) * slope
                g, o, k = grad[i, ch], out[i, ch], code[i, ch]
                for r in range(hh // 2):
                    for q in range(ww // 2):
                        w = k[r, q]
                        dy = gain32 * g[r, q] if o[r, q] > 0 else np.float32(0.0)
                        dx[i, ch, 2 * r + (w >> 1), 2 * q + (w & 1)] += dy

    return SimpleNamespace(
        batch_stats=batch_stats,
        pool_forward=pool_forward,
        pool_backward=pool_backward,
    )


class _BatchNormPoolReLU(torch.autograd.Function):
    """BatchNorm (training) -> 2x2 max-pool -> ReLU by the kernels above."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        kern = _kernels()
        n, c, hh, ww = x.shape
        xs, w, b = x.detach().numpy(), weight.detach().numpy(), bias.detach().numpy()
        mean, var = np.empty(c), np.empty(c)
        kern.batch_stats(xs, mean, var)
        out = x.new_empty(n, c, hh // 2, ww // 2)
        code = torch.empty(out.shape, dtype=torch.uint8)
        kern.pool_forward(xs, w, b, eps, mean, var, out.numpy(), code.numpy())
        count = n * hh * ww
        with torch.no_grad():  # the running estimates, as nn.BatchNorm2d keeps them
            running_mean.lerp_(torch.from_numpy(mean).to(running_mean), momentum)
            unbiased = var * (count / max(count - 1, 1))
            running_var.lerp_(torch.from_numpy(unbiased).to(running_var), momentum)
        ctx.save_for_backward(x, weight, out, code)
        ctx.stats = mean, var, eps
        return out

    @staticmethod
    def backward(ctx, grad):
        kern = _kernels()
        x, weight, out, code = ctx.saved_tensors
        mean, var, eps = ctx.stats
        dx = torch.empty_like(x)
        dweight, dbias = torch.empty(x.shape[1]), torch.empty(x.shape[1])
        xs, gs, w = x.detach().numpy(), grad.contiguous().numpy(), weight.detach().numpy()
        kern.pool_backward(
            xs, gs, out.numpy(), code.numpy(), w, mean, var, eps,
            dx.numpy(), dweight.numpy(), dbias.numpy(),
        )  # fmt: skip
        return dx, dweight.to(weight), dbias.to(weight), None, None, None, None


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

    def fusable(self, x: torch.Tensor) -> bool:
        bn = self.bn
        return (
            self.training
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype == bn.weight.dtype == torch.float32
            and x.ndim == 4
            and x.shape[-2] % 2 == 0
            and x.shape[-1] % 2 == 0
            and bn.affine
            and bn.track_running_stats
            and bn.momentum is not None
            and not (self._forward_hooks or self._forward_pre_hooks)
            and not any(m._forward_hooks or m._forward_pre_hooks for m in self.children())
            and enabled()
            and _kernels() is not None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fusable(x):
            return self.plain(x)
        bn = self.bn
        bn.num_batches_tracked.add_(1)
        return _BatchNormPoolReLU.apply(
            x.contiguous(), bn.weight, bn.bias, bn.running_mean, bn.running_var,
            bn.momentum, bn.eps,
        )  # fmt: skip


class _GrayConvWeightGrad(torch.autograd.Function):
    """conv2d(x, weight, bias) with x of one channel; the weight gradient by one GEMM."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        _, c, ho, wo = grad.shape
        k, s, pad = weight.shape[-1], ctx.stride, ctx.padding
        dx = dbias = None
        if ctx.needs_input_grad[0]:
            dx = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [s, s], [pad, pad], [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]  # fmt: skip
        padded = F.pad(x, (pad, pad, pad, pad))[:, 0]
        rows, cols = s * (ho - 1) + 1, s * (wo - 1) + 1  # the span one tap sweeps
        shifted = torch.stack(
            [padded[:, i : i + rows : s, j : j + cols : s] for i in range(k) for j in range(k)]
        ).view(k * k, -1)  # (k*k, N*Ho*Wo)
        per_channel = grad.transpose(0, 1).reshape(c, -1)  # (C, N*Ho*Wo)
        dweight = (per_channel @ shifted.T).view_as(weight)
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
