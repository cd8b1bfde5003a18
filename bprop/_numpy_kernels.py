"""NumPy twin of ``bprop._kernels``: same names, same signatures, same results.

Each function writes into the caller's output arrays exactly as its compiled
twin does and computes the same formula, so the two differ only by rounding
(different ``exp`` implementations, summation order). This module is also the
path for dtypes the compiled kernels do not take (ints, float16, big-endian),
so it works for any real dtype, not only float32/float64.
"""
import functools

import numpy as np

from ._numpy_batchnorm import batchnorm_backward, batchnorm_forward  # noqa: F401 (twins of the compiled kernels)
from ._numpy_optimizer import (  # noqa: F401
    adagrad_update, adam_update, momentum_update, nesterov_update, rmsprop_update, sgd_update,
)

_num_threads = 1


def _ieee(func):
    # The compiled kernels follow IEEE arithmetic silently (inf - inf is NaN,
    # no warning); NumPy would warn, so the twin silences the same cases.
    @functools.wraps(func)
    def wrapper(*args):
        with np.errstate(all="ignore"):
            return func(*args)

    return wrapper


SIMD_PATHS = ("auto", "avx512", "portable")


def set_simd(name):
    """Accepted for symmetry with the compiled kernels; NumPy picks its own SIMD loops."""
    if name not in SIMD_PATHS:
        raise ValueError(f"set_simd: unknown path {name!r}; choose one of {', '.join(SIMD_PATHS)}")


def get_simd():
    """The loops in use: always "numpy" (NumPy's own ufunc loops)."""
    return "numpy"


def openmp_enabled():
    """True when the extension was compiled with OpenMP (never, here)."""
    return False


def get_num_threads():
    """Threads the kernels use (always 1: NumPy's ufuncs are serial)."""
    return _num_threads


def set_num_threads(n):
    """Accepted for symmetry with the compiled kernels; NumPy stays serial."""
    if int(n) < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")


def default_num_threads():
    """OpenMP's default thread count; 1 without OpenMP."""
    return 1


@_ieee
def relu_forward(x, out, mask):
    """mask = x <= 0; out = 0 where mask else x. Returns (out, mask); None outputs are allocated."""
    out = np.empty(x.shape, x.dtype) if out is None else out
    mask = np.empty(x.shape, bool) if mask is None else mask
    np.less_equal(x, 0, out=mask)
    np.copyto(out, x)
    out[mask] = 0
    return out, mask


@_ieee
def relu_backward(dout, mask, dx):
    """dx = 0 where mask else dout. Returns dx; None is allocated."""
    dx = np.empty(dout.shape, dout.dtype) if dx is None else dx
    np.copyto(dx, dout)
    dx[mask] = 0
    return dx


@_ieee
def sigmoid_forward(x, out):
    """out = 1 / (1 + exp(-x)), overflow-free. Returns out; None is allocated."""
    # Same formula as the compiled kernel: e = exp(-|x|) never overflows.
    e = np.exp(-np.abs(x))
    r = 1 / (1 + e)
    y = np.where(x >= 0, r, e * r)
    if out is None:
        return y
    np.copyto(out, y)
    return out


@_ieee
def sigmoid_backward(dout, out, dx):
    """dx = dout * (1 - out) * out. Returns dx; None is allocated."""
    y = dout * (1 - out) * out
    if dx is None:
        return y
    np.copyto(dx, y)
    return dx


@_ieee
def add_bias(y, b):
    """y += b, row by row (in place, after y = x @ W)."""
    np.add(y, b, out=y)


@_ieee
def column_sum(a, out):
    """out[j] = sum_i a[i, j], rows added in order (as NumPy's axis-0 sum)."""
    np.sum(a, axis=0, out=out)


@_ieee
def affine_forward(x, W, b, out):
    """out = x @ W + b for x (N, D), W (D, M), b (M,). Returns out; None is allocated."""
    if out is None:
        out = np.empty((x.shape[0], W.shape[1]), np.result_type(x, W, b))
    np.matmul(x, W, out=out)
    out += b
    return out


@_ieee
def affine_backward(dout, x, W, input_grad):
    """Returns (dout @ W.T or None unless input_grad, x.T @ dout, dout summed over rows)."""
    dx = np.matmul(dout, W.T) if input_grad else None
    return dx, np.matmul(x.T, dout), np.sum(dout, axis=0)


def _softmax_rows(x, y):
    """y = softmax(x) row-wise; returns (log(sum(exp(x - max))), max), both float64 (N,)."""
    if x.shape[1] == 0:
        return np.zeros(x.shape[0]), np.zeros(x.shape[0])
    # np.max does not propagate NaN into the shift the way a comparison loop
    # would, but exp(NaN - m) is NaN either way, so the row still ends NaN.
    mx = np.max(x, axis=1, keepdims=True)
    e = np.exp(x - mx)
    s = np.sum(e, axis=1, keepdims=True, dtype=np.float64)
    # Multiply by the reciprocal, as the compiled kernel does.
    np.copyto(y, e * (1.0 / s), casting="same_kind")
    return np.log(s[:, 0]), mx[:, 0].astype(np.float64)


@_ieee
def softmax_forward(x, y):
    """y = softmax(x) row-wise, with the row max subtracted first."""
    if x.size:
        _softmax_rows(x, y)


def _check_labels(name, t, c):
    bad = np.flatnonzero((t < 0) | (t >= c))
    if bad.size:
        raise ValueError(f"{name}: label {t[bad[0]]} out of range [0, {c})")


@_ieee
def softmax_xent_labels_forward(x, t, y):
    """y = softmax(x); returns mean_i (logsumexp(x_i) - x_i[t_i]) as a float."""
    n = x.shape[0]
    if n == 0:
        return float("nan")
    _check_labels("softmax_xent_labels_forward", t, x.shape[1])
    ls, mx = _softmax_rows(x, y)
    picked = x[np.arange(n), t].astype(np.float64)
    # (max - x_t) + log(sum), in this order: see the compiled kernel.
    return float(np.sum((mx - picked) + ls) / n)


@_ieee
def softmax_xent_onehot_forward(x, t, y):
    """y = softmax(x); returns mean_i sum_j t_ij (logsumexp(x_i) - x_ij)."""
    n = x.shape[0]
    if n == 0:
        return float("nan")
    ls, mx = _softmax_rows(x, y)
    gap = (mx[:, None] - x.astype(np.float64)) + ls[:, None]
    # Zero targets contribute nothing, even where x is -inf (0 * inf is NaN).
    terms = np.where(t != 0, t * gap, 0.0)
    return float(np.sum(terms) / n)


@_ieee
def softmax_xent_labels_backward(y, t, dx):
    """dx = (y - onehot(t)) / N. Returns dx; None is allocated."""
    dx = np.empty(y.shape, y.dtype) if dx is None else dx
    n = y.shape[0]
    if n == 0 or y.shape[1] == 0:
        return dx
    _check_labels("softmax_xent_labels_backward", t, y.shape[1])
    np.copyto(dx, y)
    rows = np.arange(n)
    dx[rows, t] -= 1
    # Multiply by 1/N, as the compiled kernel does (a divide there was the bottleneck).
    np.multiply(dx, dx.dtype.type(1) / dx.dtype.type(n), out=dx)
    return dx


@_ieee
def softmax_xent_onehot_backward(y, t, dx):
    """dx = (y - t) / N. Returns dx; None is allocated."""
    dx = np.empty(y.shape, np.result_type(y, t)) if dx is None else dx
    n = y.shape[0]
    if n == 0:
        return dx
    np.multiply(y - t, dx.dtype.type(1) / dx.dtype.type(n), out=dx, casting="same_kind")
    return dx


# Convolution and pooling (bprop/_numpy_conv.py holds them, as the compiled ones live in their own .pxi).
from ._numpy_conv import (  # noqa: E402,F401
    POOL_MAX_WINDOW, col2im_kp, col2im_rows, conv_backward_data, conv_bias_add, conv_bias_grad, conv_forward,
    im2col_kp, im2col_rows, pool_backward, pool_forward,
)
