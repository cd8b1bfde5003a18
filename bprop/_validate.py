"""Argument checks shared by the layers and functions.

The compiled kernels run without bounds checks, so everything they index is
checked here first; messages name the caller, the argument and the shapes.
"""
import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)


class StateError(ValueError, RuntimeError):
    """A layer method was called out of order (e.g. backward before forward)."""


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
    """The dtype NumPy's exp gives for ``dtype`` (ints become float64, or float16 for 8-bit)."""
    return np.exp(np.zeros(0, dtype)).dtype if dtype.kind != "f" else dtype
