"""The book's activation and loss functions (``common/functions.py``).

``softmax`` runs on the active backend's kernels; ``cross_entropy_error``
keeps the book's formula exactly, 1e-7 inside the log included, because it
takes probabilities, not scores.
"""
import numpy as np

from . import _backend, _numpy_kernels
from ._validate import array, contiguous, floating_result, kernel_dtype

__all__ = ["sigmoid", "relu", "softmax", "cross_entropy_error"]


def sigmoid(x):
    """Return ``1 / (1 + exp(-x))`` elementwise, without overflow for large ``|x|``."""
    x = array("sigmoid", "x", np.asarray(x))
    dt = floating_result(x.dtype)
    x = contiguous(x.astype(dt) if x.dtype != dt else x)
    out = np.empty(x.shape, dtype=dt)
    k = _backend.kernels if kernel_dtype(x) is not None else _numpy_kernels
    k.sigmoid_forward(x.reshape(-1), out.reshape(-1))
    return out


def relu(x):
    """Return ``max(x, 0)`` elementwise (NaN passes through)."""
    x = array("relu", "x", np.asarray(x))
    out = np.empty(x.shape, dtype=x.dtype)
    mask = np.empty(x.shape, dtype=bool)
    k = _backend.kernels if kernel_dtype(x) is not None else _numpy_kernels
    k.relu_forward(contiguous(x).reshape(-1), out.reshape(-1), mask.reshape(-1))
    return out


def softmax(x):
    """Return the softmax of ``x`` along its last axis (rows of a batch).

    Parameters
    ----------
    x : array_like, real
        1-D scores, or (N, C) and higher, normalised over the last axis. The
        row maximum is subtracted first, so large scores do not overflow.
    """
    x = array("softmax", "x", np.asarray(x))
    if x.ndim == 0:
        raise ValueError("softmax: x must have at least one axis; got a 0-d array")
    dt = floating_result(x.dtype)
    x2 = contiguous(x.astype(dt) if x.dtype != dt else x).reshape(-1, x.shape[-1]) if x.size else x.astype(dt)
    y = np.empty(x.shape, dtype=dt)
    if x.size:
        k = _backend.kernels if kernel_dtype(x2) is not None else _numpy_kernels
        k.softmax_forward(x2, y.reshape(x2.shape))
    return y


def cross_entropy_error(y, t):
    """The book's mean cross-entropy of probabilities ``y`` against ``t``.

    ``-sum(log(y[range(N), t] + 1e-7)) / N``; one-hot ``t`` (``t.size ==
    y.size``) is turned into labels with ``argmax``; 1-D ``y`` is one sample.
    """
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size
