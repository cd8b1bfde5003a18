"""NumPy twin of ``bprop._kernels``: same names, same signatures, same results.

Each function writes into the caller's output arrays exactly as its compiled
twin does and computes the same formula, so the two differ only by rounding
(different ``exp`` implementations, summation order). This module is also the
path for dtypes the compiled kernels do not take (ints, float16, big-endian),
so it works for any real dtype, not only float32/float64.
"""
import numpy as np

from ._numpy_batchnorm import batchnorm_backward, batchnorm_forward  # noqa: F401 (twins of the compiled kernels)
from ._numpy_optimizer import (  # noqa: F401
    adagrad_update, adam_update, momentum_update, nesterov_update, rmsprop_update, sgd_update,
)

_num_threads = 1


# The compiled kernels follow IEEE arithmetic silently (inf - inf is NaN, no
# warning); NumPy would warn, so the twin silences the same cases. As a
# decorator np.errstate costs half of what a `with` block does (1.3 against
# 2.7 us a call measured here), which matters at the book's sizes.
_ieee = np.errstate(all="ignore")


SIMD_PATHS = ("auto", "avx512", "portable", "x86-64-v4", "x86-64-v3", "baseline")


def set_simd(name):
    """Accepted for symmetry with the compiled kernels; NumPy picks its own SIMD loops."""
    if name not in SIMD_PATHS:
        raise ValueError(f"set_simd: unknown path {name!r}; choose one of {', '.join(SIMD_PATHS)}")


def get_simd():
    """The loops in use: always "numpy" (NumPy's own ufunc loops)."""
    return "numpy"


def small_product_loops():
    """The loops under affine_forward and affine_backward: always "numpy" (np.matmul)."""
    return "numpy"


def simd_level():
    """The level of the loops in use: always "numpy" (NumPy picks its own per CPU)."""
    return "numpy"


def per_cpu_versions():
    """False: the twin has no loops of its own compiled per CPU level."""
    return False


def exp_source():
    """Where exp comes from: always "numpy" (NumPy's own loops)."""
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


def _zero_where(src, mask, dst):
    """dst = 0 where mask else src, bit for bit (NaN and inf pass unchanged where mask is False).

    Branch-free: the mask becomes an all-zeros / all-ones word per element and
    is ANDed with src's bits. Boolean indexing (the book's ``a[mask] = 0``)
    branches on every element and ran 5-10x slower on random signs.
    """
    size = src.dtype.itemsize
    if size not in (1, 2, 4, 8) or dst.dtype != src.dtype:
        np.copyto(dst, src)
        dst[mask] = 0
        return dst
    bits = np.dtype(f"i{size}")
    # One byte per element: True -> 0, False -> -1 (all ones). The AND widens
    # it with sign extension in NumPy's small cast buffers, so no temporary
    # of src's size is made (a full-width one page-faulted on every call).
    keep = np.subtract(mask.view(np.int8), np.int8(1))
    np.bitwise_and(src.view(bits), keep, out=dst.view(bits))
    return dst


# Comparisons and bit operations raise no floating-point flags: no errstate needed.
def relu_forward(x, out, mask):
    """mask = x <= 0; out = 0 where mask else x. Returns (out, mask); None outputs are allocated."""
    out = np.empty(x.shape, x.dtype) if out is None else out
    mask = np.empty(x.shape, bool) if mask is None else mask
    np.less_equal(x, 0, out=mask)
    _zero_where(x, mask, out)
    return out, mask


def relu_backward(dout, mask, dx):
    """dx = 0 where mask else dout. Returns dx; None is allocated."""
    dx = np.empty(dout.shape, dout.dtype) if dx is None else dx
    return _zero_where(dout, mask, dx)


@np.errstate(over="raise", under="ignore", invalid="ignore", divide="ignore")
def _sigmoid_book_form(x, y):
    np.negative(x, y)
    np.exp(y, y)
    np.add(y, 1, y)
    np.divide(1, y, y)  # np.reciprocal has no SIMD loop here: twice as slow


@_ieee
def _sigmoid_overflow_free(x, y):
    # e = exp(-|x|) never overflows; sigmoid is 1 / (1 + e) for x >= 0 and e / (1 + e) below.
    e = np.exp(-np.abs(x))
    r = 1 / (1 + e)
    np.copyto(y, np.where(x >= 0, r, e * r))


def sigmoid_forward(x, out):
    """out = 1 / (1 + exp(-x)), overflow-free. Returns out; None is allocated."""
    if x.dtype.kind != "f":
        # exp's result type; converted before the negation, so unsigned integers do not wrap
        x = x.astype(np.result_type(x.dtype, np.float16))
    y = np.empty(x.shape, x.dtype) if out is None else out
    # The book's formula, in place (four passes, no temporaries), is exact to
    # a few ulp wherever exp(-x) is finite. Only below about -709 (float64)
    # or -88 (float32) does exp(-x) overflow; the overflow flag then sends the
    # whole array through the overflow-free form, so no result ever comes
    # from an overflowed intermediate.
    try:
        _sigmoid_book_form(x, y)
    except FloatingPointError:
        _sigmoid_overflow_free(x, y)
    return y


@_ieee
def sigmoid_backward(dout, out, dx):
    """dx = dout * (1 - out) * out. Returns dx; None is allocated."""
    dx = np.empty(dout.shape, np.result_type(dout, out)) if dx is None else dx
    # In place, in the book's order: (dout * (1 - out)) * out. Outputs are
    # passed positionally: the out= keyword costs more to parse at small sizes.
    np.subtract(1, out, dx)
    np.multiply(dout, dx, dx)
    np.multiply(dx, out, dx)
    return dx


@_ieee
def add_bias(y, b):
    """y += b, row by row (in place, after y = x @ W)."""
    np.add(y, b, y)


@_ieee
def column_sum(a, out):
    """out[j] = sum_i a[i, j], rows added in order (as NumPy's axis-0 sum)."""
    np.add.reduce(a, 0, None, out)  # np.sum's own reduction, without its Python wrapper


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
    if x.dtype != y.dtype or x.dtype.kind != "f":
        return _softmax_rows_mixed(x, y)
    # In y, in place: four passes and no (N, C) temporaries. NaN in a row
    # makes its maximum NaN, so the whole row ends NaN, as in the kernel.
    mx = np.maximum.reduce(x, 1, None, None, True)
    np.subtract(x, mx, y)
    np.exp(y, y)
    s = np.add.reduce(y, 1, np.float64, None, True)
    # Multiply by the reciprocal, as the compiled kernel does.
    r = np.reciprocal(s)
    np.multiply(y, r if y.dtype == np.float64 else r.astype(y.dtype), y)
    return np.log(s[:, 0]), mx[:, 0].astype(np.float64, copy=False)


def _softmax_rows_mixed(x, y):
    """_softmax_rows for x of another dtype than y (the results are cast to y's)."""
    mx = np.max(x, axis=1, keepdims=True)
    e = np.exp(x - mx)
    s = np.sum(e, axis=1, keepdims=True, dtype=np.float64)
    np.copyto(y, e * (1.0 / s), casting="same_kind")
    return np.log(s[:, 0]), mx[:, 0].astype(np.float64)


@_ieee
def softmax_forward(x, y):
    """y = softmax(x) row-wise, with the row max subtracted first."""
    if x.size:
        _softmax_rows(x, y)


def _check_labels(name, t, c):
    # One reduction: read as unsigned, a negative label is larger than any
    # class count. The first bad label is looked for only when there is one.
    if not t.size:
        return
    if t.dtype.kind == "i" and t.dtype.isnative:
        bad = np.maximum.reduce(t.view(f"u{t.itemsize}"), None) >= c
    else:
        bad = np.minimum.reduce(t, None) < 0 or np.maximum.reduce(t, None) >= c
    if bad:
        bad = np.flatnonzero((t < 0) | (t >= c))
        raise ValueError(f"{name}: label {t[bad[0]]} out of range [0, {c})")


@_ieee
def softmax_xent_labels_forward(x, t, y):
    """y = softmax(x); returns mean_i (logsumexp(x_i) - x_i[t_i]) as a float."""
    n = x.shape[0]
    if n == 0:
        return float("nan")
    _check_labels("softmax_xent_labels_forward", t, x.shape[1])
    return _xent_labels_forward_checked(x, t, y)


@_ieee
def _xent_labels_forward_checked(x, t, y):
    """softmax_xent_labels_forward for N >= 1 labels already checked to lie in [0, C)."""
    n = x.shape[0]
    ls, mx = _softmax_rows(x, y)
    picked = x[np.arange(n), t].astype(np.float64, copy=False)
    # (max - x_t) + log(sum), in this order: see the compiled kernel.
    terms = np.subtract(mx, picked)
    terms += ls
    return float(np.add.reduce(terms) / n)


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


# No errstate: y - 1 at the labels and the scaling by 1/N <= 1 raise no
# floating-point flag (inf - 1 is inf, NaN is quiet); 1/N is a Python float,
# which cannot overflow when cast to y's dtype.
def softmax_xent_labels_backward(y, t, dx):
    """dx = (y - onehot(t)) / N. Returns dx; None is allocated."""
    dx = np.empty(y.shape, y.dtype) if dx is None else dx
    n = y.shape[0]
    if n == 0 or y.shape[1] == 0:
        return dx
    _check_labels("softmax_xent_labels_backward", t, y.shape[1])
    return _xent_labels_backward_checked(y, t, dx)


def _xent_labels_backward_checked(y, t, dx):
    """softmax_xent_labels_backward into dx for N, C >= 1 and labels already checked to lie in [0, C)."""
    n = y.shape[0]
    np.copyto(dx, y)
    rows = np.arange(n)
    dx[rows, t] -= 1
    # Multiply by 1/N, as the compiled kernel does (a divide there was the bottleneck).
    np.multiply(dx, 1.0 / n, dx)
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
