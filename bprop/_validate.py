"""Argument checks shared by the layers and functions.

The compiled kernels run without bounds checks, so everything they index is
checked here first; messages name the caller, the argument and the shapes.
"""
import functools

import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)


class StateError(ValueError, RuntimeError):
    """A layer method was called out of order (e.g. backward before forward)."""


StateError.__module__ = "bprop"  # its public name, in reprs and tracebacks


def array(where, name, a):
    """Return ``a`` as a plain ndarray of a real dtype, or raise TypeError."""
    if type(a) is not np.ndarray:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{where}: {name} must be a numpy.ndarray, got {type(a).__name__}")
        a = np.asarray(a)  # subclasses such as np.matrix change reshape semantics
    if a.dtype.kind not in "iuf":
        raise TypeError(
            f"{where}: {name} has dtype {a.dtype}; expected a real (integer or floating-point) array"
        )
    return a


def array_like(where, name, a):
    """Like :func:`array`, but converts array-likes (lists, scalars) first, as NumPy would."""
    if type(a) is np.ndarray:
        return array(where, name, a)
    try:
        converted = np.asarray(a)
    except (TypeError, ValueError) as exc:  # ragged nesting, unconvertible objects
        raise ValueError(f"{where}: {name} ({type(a).__name__}) does not convert to an array: {exc}") from None
    if converted.dtype.kind not in "iuf":
        raise TypeError(
            f"{where}: {name} must be a real array or array-like, got {type(a).__name__} "
            f"(converts to dtype {converted.dtype})"
        )
    return converted


def kernel_dtype(*arrays):
    """The common dtype when all arrays share float32 or float64 (native, aligned), else None."""
    dt = arrays[0].dtype
    if not (dt is F64 or dt is F32 or dt == F64 or dt == F32):
        return None
    for a in arrays:
        if a.dtype != dt or not a.flags.aligned:
            return None
    return dt


def contiguous(a):
    """``a`` itself when C-contiguous, else a C-ordered copy (always aligned)."""
    return a if a.flags.c_contiguous and a.flags.aligned else np.array(a, order="C")


def require_forward(where, value):
    if value is None:
        raise StateError(f"{where}: called before forward; run forward first")


def same_shape(where, name, a, ref_name, shape):
    if a.shape != shape:
        raise ValueError(
            f"{where}: {name} must have the shape of {ref_name}; got {name}.shape={a.shape}, "
            f"{ref_name}.shape={shape}"
        )


def floating_result(dtype):
    """The dtype NumPy's exp gives for ``dtype``: native byte order; ints become float64 (float16 for 8-bit)."""
    if dtype.kind != "f":
        return np.exp(np.zeros(0, dtype)).dtype
    return dtype if dtype.isnative else dtype.newbyteorder("=")


@functools.lru_cache(maxsize=None)
def sum_result(dtype):
    """The dtype of ``np.sum(a, axis=0)`` for ``a`` of ``dtype`` (small ints widen)."""
    return np.sum(np.zeros((0, 1), dtype), axis=0).dtype
