"""The Numba side of ``core.accel``: the fused kernels, compiled on first use and cached in
the user's cache folder (``core.accel.cache_dir``; module-level functions: Numba's cache
misses closures that call other compiled functions). Imported only by
``core.accel.kernels()``, which installs that cache first, as Numba is optional.

Each task's arrays are declared beside it (``Signature``, see ``calls.py``), in the order its
body reads the slots; Python calls it through ``Task``, which checks every array first.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import carray, types
from numba.extending import intrinsic

from core.accel.calls import HEADER, Arg, Signature, Task

# Reassociation lets the sums vectorise; no "fast" flags that assume away NaN or infinity.
jit = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz"})

# Feature maps come as planes, (N*C, H, W) in (image, channel) order; the pooled maps
# (out; code, each window's winner, 0-3 in row-major order; grad) as rows of h*w in the
# same order. Loops are written for the vectoriser: long unit-stride inner loops,
# selects and products instead of branches on data. Each kernel does one channel.


@jit
def channel_stats(planes, first, step, n):
    """Mean and biased variance of planes[first + i * step] for i < n, in two passes."""
    size = planes.shape[1]
    total = 0.0
    for i in range(n):
        plane = planes[first + i * step]
        acc = np.float32(0.0)
        for j in range(size):
            acc += plane[j]
        total += acc
    mu = total / (n * size)
    mu32 = np.float32(mu)
    total = 0.0
    for i in range(n):
        plane = planes[first + i * step]
        acc = np.float32(0.0)
        for j in range(size):
            d = plane[j] - mu32
            acc += d * d
        total += acc
    return mu, total / (n * size)


@jit
def pool_plane(plane, scale, shift, o, k, vmax, vbit):
    """o = relu(max_pool(plane * scale + shift)) and k = the winners, in two sweeps:
    rows 2r and 2r+1 into their column maxima (vmax; vbit = the lower row won), then
    neighbouring columns. The first of equal maxima in row-major order wins, as in
    PyTorch's pool: the right column takes a tie only when its winner is in the upper
    row and the left one's in the lower."""
    hh, ww = plane.shape
    for r in range(hh // 2):
        top, bottom, at = plane[2 * r], plane[2 * r + 1], r * ww
        for col in range(ww):
            a, b = top[col] * scale + shift, bottom[col] * scale + shift
            vmax[at + col] = max(a, b)
            vbit[at + col] = b > a
    zero = np.float32(0.0)
    for j in range(o.shape[0]):
        left, right = vmax[2 * j], vmax[2 * j + 1]
        low_l, low_r = vbit[2 * j], vbit[2 * j + 1]
        take = np.uint8((right > left) | ((right == left) & (low_r < low_l)))
        best = max(left, right)
        k[j] = 2 * (low_l ^ ((low_l ^ low_r) & take)) + take
        o[j] = zero if best <= 0 else best  # ReLU; a NaN passes (NaN <= 0 is false)


@jit
def affine(weight, bias, eps, mean, var):
    """BatchNorm's normalisation as one scale and shift, in float32."""
    inv = 1.0 / math.sqrt(var + eps)
    return np.float32(weight * inv), np.float32(bias - mean * weight * inv)


@jit
def winner(r, q, win, width):
    """Where in its plane (flat, row width ``width``) window (r, q)'s winner is. Unsigned:
    Numba checks signed indices for negative values on every read (that halved the
    speed of the gathers)."""
    return np.uint64((2 * r + (win >> 1)) * width + 2 * q + (win & 1))


@jit
def forward_channel(x, n, ch, c, weight, bias, eps, mean, var, out, code, vmax, vbit):
    """Channel ch of BatchNorm -> pool -> ReLU; x (N*C, H, W)."""
    mean[ch], var[ch] = channel_stats(x.reshape(x.shape[0], -1), ch, c, n)
    scale, shift = affine(weight[ch], bias[ch], eps, mean[ch], var[ch])
    for i in range(n):
        pool_plane(x[i * c + ch], scale, shift, out[i * c + ch], code[i * c + ch], vmax, vbit)


@jit
def bn_backward(weight, eps, mean, var, sum_dy, sum_dy_x, count):
    """BatchNorm's backward pass from the two sums over the gradient dy (of the
    normalised output): its weight and bias gradients, and dx = gain * dy + base +
    (x - mean) * slope, that is weight * inv * (dy - mean(dy) - x_hat * mean(dy *
    x_hat)); the last two terms touch every element, dy only the pool's winners."""
    inv = 1.0 / math.sqrt(var + eps)
    gain = weight * inv
    base = -gain * sum_dy / count
    slope = -gain * sum_dy_x * inv * inv / count
    return sum_dy_x * inv, sum_dy, gain, base, slope


@jit
def backward_channel(x, n, ch, c, grad, out, code, weight, eps, mean, var, dx, dw, db):
    hh, ww = x.shape[1], x.shape[2]
    h, w = hh // 2, ww // 2
    zero = np.float32(0.0)
    mu = np.float32(mean[ch])
    # Only each window's winner with a positive output gets a gradient: sum it (for the
    # bias) and times its centred input (for the weight). Products with the ReLU's mask
    # instead of branches: its sign is a coin flip to the branch predictor.
    sum_dy, sum_dy_x = 0.0, 0.0
    for i in range(n):
        plane = x[i * c + ch].ravel()
        g, o, k = grad[i * c + ch], out[i * c + ch], code[i * c + ch]
        acc, acc_x = zero, zero
        for r in range(h):
            for q in range(w):
                j = r * w + q
                win = k[j]
                dy = g[j] * np.float32(o[j] > 0)
                acc += dy
                acc_x += dy * (plane[winner(r, q, win, ww)] - mu)
        sum_dy += acc
        sum_dy_x += acc_x
    dw[ch], db[ch], gain, base, slope = bn_backward(
        weight[ch], eps, mean[ch], var[ch], sum_dy, sum_dy_x, n * hh * ww
    )
    gain32, base32, slope32 = np.float32(gain), np.float32(base), np.float32(slope)
    for i in range(n):
        flat, dflat = x[i * c + ch].ravel(), dx[i * c + ch].ravel()
        for j in range(hh * ww):
            dflat[j] = base32 + (flat[j] - mu) * slope32
        g, o, k = grad[i * c + ch], out[i * c + ch], code[i * c + ch]
        for r in range(h):
            for q in range(w):
                j = r * w + q
                win = k[j]
                dy = gain32 * g[j] * np.float32(o[j] > 0)
                dflat[winner(r, q, win, ww)] += dy


@jit
def tap_products(xp, first, step, ww, mask, scratch, gram, tap):
    """Over images first, first + step, ...: gram[t, u] += the sum over output pixels of
    tap t times tap u, tap[t] += the sum of tap t (tap t: the input at offset (t // 3,
    t % 3) from the pixel). The padded image is read flat, the output rows at the padded
    width: long loops, whose two extra columns per row the mask zeroes (the last row's
    are left out, so that no tap reads past the image). Slices rather than offset
    indices, which Numba checks for negative values (no vectorising then)."""
    n, wide = xp.shape[0], xp.shape[2]
    span = mask.shape[0]
    for i in range(first, n, step):
        flat = xp[i].ravel()
        for t in range(9):
            start = (t // 3) * wide + t % 3
            src, masked = flat[start : start + span], scratch[t]
            total = np.float32(0.0)
            for p in range(span):
                v = src[p] * mask[p]
                masked[p] = v
                total += v
            tap[t] += total
        for t in range(9):
            masked = scratch[t]
            for u in range(t, 9):
                start = (u // 3) * wide + u % 3
                other = flat[start : start + span]
                total = np.float32(0.0)
                for p in range(span):
                    total += masked[p] * other[p]
                gram[t, u] += total


@jit
def gray_forward_channel(
    xp, n, ch, c, cw, weight, bias, eps, mean, var, out, code, xw, gram, tap, y, vmax, vbit,
    mask, scratch,
):  # fmt: skip
    """Channel ch of conv 3x3 (one input channel, stride 1, no bias) -> BatchNorm ->
    pool -> ReLU; xp: the padded images (N, H+2, W+2). The conv's output goes to y
    (N, H, W, this channel only), and the pool's winners' values to xw. Also this
    channel's share (images ch, ch + C, ...) of what the backward pass needs of the
    input alone: gram[t, u] = sum of tap t times tap u, tap[t] = sum of tap t, over
    every output pixel (tap t = the input at offset (t // 3, t % 3))."""
    hh, ww = y.shape[1], y.shape[2]
    h, w = hh // 2, ww // 2
    k0, k1, k2, k3, k4, k5, k6, k7, k8 = cw[ch]
    for i in range(n):
        for r in range(hh):
            s0, s1, s2, row = xp[i, r], xp[i, r + 1], xp[i, r + 2], y[i, r]
            for col in range(ww):
                row[col] = (
                    k0 * s0[col] + k1 * s0[col + 1] + k2 * s0[col + 2]
                    + k3 * s1[col] + k4 * s1[col + 1] + k5 * s1[col + 2]
                    + k6 * s2[col] + k7 * s2[col + 1] + k8 * s2[col + 2]
                )  # fmt: skip
    mean[ch], var[ch] = channel_stats(y.reshape(n, -1), 0, 1, n)
    scale, shift = affine(weight[ch], bias[ch], eps, mean[ch], var[ch])
    for i in range(n):
        plane, o, k, v = y[i], out[i * c + ch], code[i * c + ch], xw[i * c + ch]
        pool_plane(plane, scale, shift, o, k, vmax, vbit)
        flat = plane.ravel()
        for r in range(h):
            for q in range(w):
                v[r * w + q] = flat[winner(r, q, k[r * w + q], ww)]
    tap_products(xp, ch, c, ww, mask, scratch, gram[ch], tap[ch])


@jit
def gray_backward_channel(
    xp, n, ch, c, grad, out, code, xw, cw, weight, eps, mean, var, gram, tap, dcw, dw, db
):
    """Gradients of channel ch of the gray block: BatchNorm's weight and bias, and the
    conv's 3x3 weights, dcw[t] = sum over pixels of dx * tap t, with dx the conv
    output's gradient (``bn_backward``). Its three terms: gain * dy lives on the
    winners only (9 taps gathered there); base * (sum of tap t); and slope * (sum of
    (y - mean) * tap t), where y = sum over u of cw[u] * tap u makes that sum
    sum_u cw[u] * gram[u, t] - mean * tap[t]. So dx is never formed."""
    hh, ww = xp.shape[1] - 2, xp.shape[2] - 2
    h, w = hh // 2, ww // 2
    zero = np.float32(0.0)
    mu = np.float32(mean[ch])
    sum_dy, sum_dy_x = 0.0, 0.0
    at_win = np.zeros(9)  # sum over the winners of dy * tap t
    wide, one, two = np.uint64(xp.shape[2]), np.uint64(1), np.uint64(2)  # see winner
    for i in range(n):
        g, o, k, v = grad[i * c + ch], out[i * c + ch], code[i * c + ch], xw[i * c + ch]
        plane = xp[i].ravel()
        acc, acc_x = zero, zero
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = zero
        for r in range(h):
            for q in range(w):
                j = r * w + q
                dy = g[j] * np.float32(o[j] > 0)
                acc += dy
                acc_x += dy * (v[j] - mu)
                p0 = winner(r, q, k[j], xp.shape[2])
                p1 = p0 + wide
                p2 = p1 + wide
                a0 += dy * plane[p0]
                a1 += dy * plane[p0 + one]
                a2 += dy * plane[p0 + two]
                a3 += dy * plane[p1]
                a4 += dy * plane[p1 + one]
                a5 += dy * plane[p1 + two]
                a6 += dy * plane[p2]
                a7 += dy * plane[p2 + one]
                a8 += dy * plane[p2 + two]
        sum_dy += acc
        sum_dy_x += acc_x
        for t, value in enumerate((a0, a1, a2, a3, a4, a5, a6, a7, a8)):
            at_win[t] += value
    dw[ch], db[ch], gain, base, slope = bn_backward(
        weight[ch], eps, mean[ch], var[ch], sum_dy, sum_dy_x, n * hh * ww
    )
    taps_sum = np.zeros(9)
    pairs = np.zeros((9, 9))
    for other in range(c):
        for t in range(9):
            taps_sum[t] += tap[other, t]
            for u in range(t, 9):
                pairs[t, u] += gram[other, t, u]
    for t in range(9):
        with_y = 0.0
        for u in range(9):
            with_y += cw[ch, u] * (pairs[u, t] if u <= t else pairs[t, u])
        centred = with_y - mean[ch] * taps_sum[t]
        dcw[ch, t] = gain * at_win[t] + base * taps_sum[t] + slope * centred


# Each kernel runs as a task: a C function of one argument block (int64: a channel
# counter, the sizes n, c, hh, ww, then the arrays' addresses in their Signature's order)
# that takes channels off the counter until none are left (calls.py). PyTorch's OpenMP
# threads run it, or the calling thread.
def pointer(dtype):
    @intrinsic
    def at(typingctx, address):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return types.CPointer(dtype)(types.int64), codegen

    return at


f32, f64, u8 = pointer(types.float32), pointer(types.float64), pointer(types.uint8)
F32, F64, U8 = np.float32, np.float64, np.uint8
PLANES, ROWS = "n*c, hh, ww", "n*c, hh//2*(ww//2)"  # full-size maps; pooled maps as rows


@intrinsic
def take_channel(typingctx, counter):
    def codegen(context, builder, signature, args):
        one = context.get_constant(types.int64, 1)
        return builder.atomic_rmw("add", args[0], one, "monotonic")

    return types.int64(types.CPointer(types.int64)), codegen


task = numba.cfunc(types.void(types.CPointer(types.int64)), cache=True)


@jit
def opened(a):
    """A block's four sizes (n, c, hh, ww), from its slots ``a``, and the shape of the pooled
    maps laid as rows (one row per image and channel)."""
    n, c, hh, ww = a[1], a[2], a[3], a[4]
    return n, c, hh, ww, (n * c, (hh // 2) * (ww // 2))


# Argument runs the tasks share. Forward: BatchNorm's affine weights and eps, then the batch
# statistics, the pooled output and its winners it writes. Backward: the pooled gradient with
# the forward pass's output and winners, BatchNorm's saved eps and statistics, and the
# gradients of its weights it writes last.
BN_AFFINE = (Arg("weight", F32, "c"), Arg("bias", F32, "c"), Arg("eps", F64, "1"))
BN_POOLED = (Arg("mean", F64, "c", out=True), Arg("var", F64, "c", out=True),
             Arg("out", F32, ROWS, out=True), Arg("code", U8, ROWS, out=True))  # fmt: skip
POOLED_GRAD = (Arg("grad", F32, ROWS), Arg("out", F32, ROWS), Arg("code", U8, ROWS))
BN_SAVED = (Arg("eps", F64, "1"), Arg("mean", F64, "c"), Arg("var", F64, "c"))
BN_GRADS = (Arg("dweight", F32, "c", out=True), Arg("dbias", F32, "c", out=True))

FORWARD = Signature("forward", Arg("x", F32, PLANES), *BN_AFFINE, *BN_POOLED)
_FORWARD_SLOTS = FORWARD.slots  # a global int: a constant to Numba


@task
def forward_task(block):
    a = carray(block, (_FORWARD_SLOTS,))
    n, c, hh, ww, rows = opened(a)
    x = carray(f32(a[5]), (n * c, hh, ww))
    weight, bias = carray(f32(a[6]), (c,)), carray(f32(a[7]), (c,))
    eps = carray(f64(a[8]), (1,))[0]
    mean, var = carray(f64(a[9]), (c,)), carray(f64(a[10]), (c,))
    out, code = carray(f32(a[11]), rows), carray(u8(a[12]), rows)
    vmax, vbit = np.empty((hh // 2) * ww, np.float32), np.empty((hh // 2) * ww, np.uint8)
    ch = take_channel(block)
    while ch < c:
        forward_channel(x, n, ch, c, weight, bias, eps, mean, var, out, code, vmax, vbit)
        ch = take_channel(block)


BACKWARD = Signature(
    "backward",
    Arg("x", F32, PLANES),
    Arg("dx", F32, PLANES, out=True),
    *POOLED_GRAD,
    Arg("weight", F32, "c"),
    *BN_SAVED,
    *BN_GRADS,
)
_BACKWARD_SLOTS = BACKWARD.slots


@task
def backward_task(block):
    a = carray(block, (_BACKWARD_SLOTS,))
    n, c, hh, ww, rows = opened(a)
    x, dx = carray(f32(a[5]), (n * c, hh, ww)), carray(f32(a[6]), (n * c, hh, ww))
    grad, out, code = carray(f32(a[7]), rows), carray(f32(a[8]), rows), carray(u8(a[9]), rows)
    weight = carray(f32(a[10]), (c,))
    eps = carray(f64(a[11]), (1,))[0]
    mean, var = carray(f64(a[12]), (c,)), carray(f64(a[13]), (c,))
    dw, db = carray(f32(a[14]), (c,)), carray(f32(a[15]), (c,))
    ch = take_channel(block)
    while ch < c:
        backward_channel(x, n, ch, c, grad, out, code, weight, eps, mean, var, dx, dw, db)
        ch = take_channel(block)


PADDED = "n, hh + 2, ww + 2"  # the gray block's input, padded to give an hh x ww conv output
GRAY_FORWARD = Signature(
    "gray_forward",
    Arg("xp", F32, PADDED),
    Arg("conv_weight", F32, "c, 9"),
    *BN_AFFINE,
    *BN_POOLED,
    Arg("at_win", F32, ROWS, out=True),
    Arg("gram", F64, "c, 9, 9", out=True),
    Arg("tap", F64, "c, 9", out=True),
    Arg("mask", F32, "hh * (ww + 2) - 2"),  # see tap_products
)
_GRAY_FORWARD_SLOTS = GRAY_FORWARD.slots


@task
def gray_forward_task(block):
    a = carray(block, (_GRAY_FORWARD_SLOTS,))
    n, c, hh, ww, rows = opened(a)
    xp = carray(f32(a[5]), (n, hh + 2, ww + 2))
    cw = carray(f32(a[6]), (c, 9))
    weight, bias = carray(f32(a[7]), (c,)), carray(f32(a[8]), (c,))
    eps = carray(f64(a[9]), (1,))[0]
    mean, var = carray(f64(a[10]), (c,)), carray(f64(a[11]), (c,))
    out, code, xw = carray(f32(a[12]), rows), carray(u8(a[13]), rows), carray(f32(a[14]), rows)
    gram, tap = carray(f64(a[15]), (c, 9, 9)), carray(f64(a[16]), (c, 9))
    span = hh * (ww + 2) - 2  # see tap_products
    mask = carray(f32(a[17]), (span,))
    y = np.empty((n, hh, ww), np.float32)
    vmax, vbit = np.empty((hh // 2) * ww, np.float32), np.empty((hh // 2) * ww, np.uint8)
    scratch = np.empty((9, span), np.float32)
    ch = take_channel(block)
    while ch < c:
        gray_forward_channel(
            xp, n, ch, c, cw, weight, bias, eps, mean, var, out, code, xw, gram, tap, y,
            vmax, vbit, mask, scratch,
        )  # fmt: skip
        ch = take_channel(block)


GRAY_BACKWARD = Signature(
    "gray_backward",
    Arg("xp", F32, PADDED),
    *POOLED_GRAD,
    Arg("at_win", F32, ROWS),
    Arg("conv_weight", F32, "c, 9"),
    Arg("weight", F32, "c"),
    *BN_SAVED,
    Arg("gram", F64, "c, 9, 9"),
    Arg("tap", F64, "c, 9"),
    Arg("dconv_weight", F32, "c, 9", out=True),
    *BN_GRADS,
)
_GRAY_BACKWARD_SLOTS = GRAY_BACKWARD.slots


@task
def gray_backward_task(block):
    a = carray(block, (_GRAY_BACKWARD_SLOTS,))
    n, c, hh, ww, rows = opened(a)
    grad, out = carray(f32(a[6]), rows), carray(f32(a[7]), rows)
    xp = carray(f32(a[5]), (n, hh + 2, ww + 2))
    code, xw = carray(u8(a[8]), rows), carray(f32(a[9]), rows)
    cw, weight = carray(f32(a[10]), (c, 9)), carray(f32(a[11]), (c,))
    eps = carray(f64(a[12]), (1,))[0]
    mean, var = carray(f64(a[13]), (c,)), carray(f64(a[14]), (c,))
    gram, tap = carray(f64(a[15]), (c, 9, 9)), carray(f64(a[16]), (c, 9))
    dcw = carray(f32(a[17]), (c, 9))
    dw, db = carray(f32(a[18]), (c,)), carray(f32(a[19]), (c,))
    ch = take_channel(block)
    while ch < c:
        gray_backward_channel(
            xp, n, ch, c, grad, out, code, xw, cw, weight, eps, mean, var, gram, tap, dcw,
            dw, db,
        )  # fmt: skip
        ch = take_channel(block)


assert HEADER == 5  # the tasks read the sizes from a[1:5] and the first address from a[5]
forward = Task(forward_task, FORWARD)
backward = Task(backward_task, BACKWARD)
gray_forward = Task(gray_forward_task, GRAY_FORWARD)
gray_backward = Task(gray_backward_task, GRAY_BACKWARD)
TASKS = (forward, backward, gray_forward, gray_backward)
