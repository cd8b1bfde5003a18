"""The book's activation and loss functions (``common/functions.py``).

``softmax`` runs on the active backend's kernels; ``cross_entropy_error``
keeps the book's formula exactly, 1e-7 inside the log included, because it
takes probabilities, not scores.
"""
import numpy as np

from ._backend import kernels_for
from ._validate import array, array_like, contiguous, floating_result

__all__ = ["sigmoid", "relu", "softmax", "cross_entropy_error"]


def sigmoid(x):
    """Return ``1 / (1 + exp(-x))`` elementwise, without overflow for large ``|x|``."""
    x = array_like("sigmoid", "x", x)
    dt = floating_result(x.dtype)
    x = contiguous(x.astype(dt) if x.dtype != dt else x)
    return kernels_for(x).sigmoid_forward(x, None)


def relu(x):
    """Return ``max(x, 0)`` elementwise (NaN passes through)."""
    x = array_like("relu", "x", x)
    out, _ = kernels_for(x).relu_forward(contiguous(x), None, None)
    return out


def softmax(x):
    """Return the softmax of ``x`` along its last axis (rows of a batch).

    Parameters
    ----------
    x : array_like, real
        1-D scores, or (N, C) and higher, normalised over the last axis. The
        row maximum is subtracted first, so large scores do not overflow.
    """
    x = array_like("softmax", "x", x)
    if x.ndim == 0:
        raise ValueError("softmax: x must have at least one axis; got a 0-d array")
    dt = floating_result(x.dtype)
    x2 = contiguous(x.astype(dt) if x.dtype != dt else x).reshape(-1, x.shape[-1]) if x.size else x.astype(dt)
    y = np.empty(x.shape, dtype=dt)
    if x.size:
        kernels_for(x2).softmax_forward(x2, y.reshape(x2.shape))
    return y


def cross_entropy_error(y, t):
    """The book's mean cross-entropy of probabilities ``y`` against ``t``.

    ``-sum(log(y[range(N), t] + 1e-7)) / N``; one-hot ``t`` (``t.size ==
    y.size``) is turned into labels with ``argmax``; 1-D ``y`` is one sample.

    Unlike the book, labels are checked: a negative label raises instead of
    picking a class from the end, and ``t`` must be ``(N,)`` labels or
    one-hot of ``y``'s shape (no silent broadcasting).
    """
    where = "cross_entropy_error"
    y = array(where, "y", y)
    t = array(where, "t", t)
    if y.ndim not in (1, 2) or y.size == 0:
        raise ValueError(f"{where}: y must be (C,) or (N, C) with N, C >= 1; got y.shape={y.shape}")
    y_shape, t_shape = y.shape, t.shape
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    batch_size, c = y.shape
    if t.size == y.size and t.shape == y.shape:
        t = t.argmax(axis=1)
    elif t.size == batch_size and t.ndim == (2 if t.shape == (1, 1) else 1):
        if t.dtype.kind not in "iu":
            raise TypeError(
                f"{where}: t of shape {t_shape} holds class labels and must be integers; got dtype {t.dtype}"
            )
        bad = (t < 0) | (t >= c)
        if bad.any():
            raise ValueError(
                f"{where}: labels must lie in [0, {c}) for y.shape={y_shape}; got {t[bad][0]} "
                f"at index {int(np.flatnonzero(bad)[0])}"
            )
    else:
        raise ValueError(
            f"{where}: t must be {batch_size} class labels or one-hot of y's shape; "
            f"got t.shape={t_shape}, y.shape={y_shape}"
        )
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size
