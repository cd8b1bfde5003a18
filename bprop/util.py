"""The book's ``common/util.py`` image helpers: ``im2col`` and ``col2im``.

Same signatures and results as the book (``col2im`` bit for bit: each input
cell's contributions are added in the book's order), except that float32
input gives float32 (the book always returns float64) and ``col2im`` returns
a C-contiguous array rather than a view of a larger one.
"""
import numbers

import numpy as np

from . import _backend
from ._validate import F32, F64, array

__all__ = ["im2col", "col2im"]


def _int(where, name, value, least):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < least:
        raise ValueError(f"{where}: {name} must be >= {least}, got {value}")
    return value


def geometry(where, shape, fh, fw, stride, pad, window="filter"):
    """Check a window geometry on an input of ``shape`` (N, C, H, W); return the output (oh, ow).

    Raises ValueError (TypeError for a non-integer) naming ``where`` and the shapes.
    """
    fh = _int(where, f"{window} height", fh, 1)
    fw = _int(where, f"{window} width", fw, 1)
    stride = _int(where, "stride", stride, 1)
    pad = _int(where, "pad", pad, 0)
    if len(shape) != 4:
        raise ValueError(f"{where}: the input must be 4-D (N, C, H, W); got shape {tuple(shape)}")
    h, w = shape[2], shape[3]
    if fh > h + 2 * pad or fw > w + 2 * pad:
        raise ValueError(
            f"{where}: the {fh} x {fw} {window} is larger than the input padded by {pad} "
            f"({h + 2 * pad} x {w + 2 * pad}; input shape {tuple(shape)})"
        )
    return (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1


def float_dtype(*arrays):
    """float32 when every array is float32, else float64 (the book computes in float64)."""
    dt = np.result_type(*arrays)
    return F32 if dt == F32 else F64


def as_kernel(a, dt):
    """``a`` as a C-contiguous, aligned, native array of ``dt`` (``a`` itself when it is one)."""
    if a.dtype == dt and a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative:
        return a
    return np.ascontiguousarray(a, dtype=dt)


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Unfold the windows of a batch of images into rows (the book's ``im2col``).

    Parameters
    ----------
    input_data : ndarray, shape (N, C, H, W)
        Any real dtype; not modified.
    filter_h, filter_w : int
        Window size, at most the padded input's.
    stride : int, >= 1
    pad : int, >= 0
        Zeros added on every side.

    Returns
    -------
    col : ndarray, shape (N * out_h * out_w, C * filter_h * filter_w)
        Row ``(n * out_h + i) * out_w + j`` holds window (i, j) of image n,
        channel-major. float32 for float32 input, else float64. New, C-ordered.
    """
    where = "im2col"
    x = array(where, "input_data", input_data)
    geometry(where, x.shape, filter_h, filter_w, stride, pad)
    x = as_kernel(x, float_dtype(x))
    return _backend.kernels.im2col_rows(x, int(filter_h), int(filter_w), int(stride), int(pad), None)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Fold rows back into images, adding where windows overlap (the book's ``col2im``).

    Parameters
    ----------
    col : ndarray, shape (N * out_h * out_w, C * filter_h * filter_w)
        As :func:`im2col` returns for ``input_shape`` (any shape of that size).
    input_shape : tuple of 4 ints
        (N, C, H, W) of the images.
    filter_h, filter_w, stride, pad : int
        As for :func:`im2col`.

    Returns
    -------
    img : ndarray, shape input_shape
        float32 for float32 ``col``, else float64. New, C-ordered.
    """
    where = "col2im"
    col = array(where, "col", col)
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: input_shape must be 4 integers (N, C, H, W), got {input_shape!r}") from None
    if len(shape) != 4 or min(shape) < 0:
        raise ValueError(f"{where}: input_shape must be 4 non-negative integers (N, C, H, W), got {input_shape!r}")
    oh, ow = geometry(where, shape, filter_h, filter_w, stride, pad)
    n, c = shape[0], shape[1]
    rows, cols = n * oh * ow, c * int(filter_h) * int(filter_w)
    if col.size != rows * cols:
        raise ValueError(
            f"{where}: col.shape={col.shape} does not tile input_shape {shape} with {filter_h} x {filter_w} "
            f"windows, stride {stride}, pad {pad}: expected ({rows}, {cols})"
        )
    dt = float_dtype(col)
    c2 = as_kernel(col, dt).reshape(rows, cols)
    img = np.empty(shape, dt)
    return _backend.kernels.col2im_rows(c2, int(filter_h), int(filter_w), int(stride), int(pad), img)
