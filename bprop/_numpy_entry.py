"""The NumPy twin behind the compiled kernels' entry checks: the NumPy backend's fast path.

The layers send a call whose arrays are plain ndarrays straight to the
active backend's ``checked`` kernels (``bprop.layers._fast``), which must
refuse, with :class:`bprop._errors.KernelArgumentError` and before touching
anything, every argument the compiled kernel would refuse; the layer then
takes its checked path. The NumPy twin itself accepts any dtype (it is also
the checked path's kernel for dtypes the compiled loops lack), so this
module puts the compiled entry checks in front of the kernels the fast path
calls: float32/float64 (int64 labels, bool masks) in native byte order,
C-contiguous and aligned, matching sizes and shapes, labels in range,
writeable outputs. What it accepts, the twin computes exactly as it does on
the checked path, so both paths give the same bits.

At the book's sizes a layer call on the NumPy backend is mostly overhead;
skipping the checked path's conversions and buffer bookkeeping is what keeps
the twin at least as fast as the book's own layers.
"""
import numpy as np

from . import _numpy_kernels as twin
from ._errors import KernelTypeError, KernelValueError

__all__ = ["relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward", "add_bias", "column_sum",
           "softmax_xent_labels_forward", "softmax_xent_labels_backward", "softmax_xent_onehot_backward",
           "small_product_loops"]

# Native float types only: a byte-swapped dtype compares unequal to these.
_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
_I64 = np.dtype(np.int64)
_BOOL = np.dtype(bool)


def _arg(fn, name, a, dtypes, out=False):
    """Refuse ``a`` unless it is C-contiguous, aligned, of one of ``dtypes`` (and writeable if ``out``)."""
    flags = a.flags
    if not (flags.c_contiguous and flags.aligned):
        raise KernelValueError(f"{fn}: {name} must be C-contiguous and aligned")
    if out and not flags.writeable:
        raise KernelValueError(f"{fn}: {name} is an output and must be writeable")
    if a.dtype not in dtypes:
        raise KernelTypeError(f"{fn}: {name} has dtype {a.dtype}; expected one of {', '.join(map(str, dtypes))}")


def _same_size(fn, a, b):
    if a.size != b.size:
        raise KernelValueError(f"{fn}: size mismatch ({a.size} vs {b.size} elements)")


def _labels(fn, t, n, c):
    _arg(fn, "t", t, (_I64,))
    if t.ndim != 1 or t.shape[0] != n:
        raise KernelValueError(f"{fn}: t must have shape ({n},), got {t.shape}")
    # Read as unsigned, a negative label is larger than any class count.
    if n and np.maximum.reduce(t.view(np.uint64), None) >= c:
        raise KernelValueError(f"{fn}: a label is out of range [0, {c})")


def relu_forward(x, out, mask):
    """As :func:`bprop._kernels.relu_forward`, on the NumPy twin."""
    _arg("relu_forward", "x", x, _FLOATS)
    if out is not None or mask is not None:
        raise KernelValueError("relu_forward: the fast path allocates its outputs")
    return twin.relu_forward(x, None, None)


def relu_backward(dout, mask, dx):
    """As :func:`bprop._kernels.relu_backward`, on the NumPy twin."""
    _arg("relu_backward", "dout", dout, _FLOATS)
    _arg("relu_backward", "mask", mask, (_BOOL,))
    _same_size("relu_backward", dout, mask)
    if dx is not None:
        raise KernelValueError("relu_backward: the fast path allocates its output")
    return twin.relu_backward(dout, mask.reshape(dout.shape), None)


def sigmoid_forward(x, out):
    """As :func:`bprop._kernels.sigmoid_forward`, on the NumPy twin."""
    _arg("sigmoid_forward", "x", x, _FLOATS)
    if out is not None:
        raise KernelValueError("sigmoid_forward: the fast path allocates its output")
    return twin.sigmoid_forward(x, None)


def sigmoid_backward(dout, out, dx):
    """As :func:`bprop._kernels.sigmoid_backward`, on the NumPy twin."""
    _arg("sigmoid_backward", "dout", dout, _FLOATS)
    _arg("sigmoid_backward", "out", out, (dout.dtype,))
    _same_size("sigmoid_backward", dout, out)
    if dx is not None:
        raise KernelValueError("sigmoid_backward: the fast path allocates its output")
    return twin.sigmoid_backward(dout, out.reshape(dout.shape), None)


def _rows_and_vector(fn, a_name, a, a_out, v_name, v, v_out):
    _arg(fn, a_name, a, _FLOATS, out=a_out)
    _arg(fn, v_name, v, (a.dtype,), out=v_out)
    if a.ndim != 2 or v.shape != (a.shape[1],):
        raise KernelValueError(f"{fn}: {a_name} must be 2-D and {v_name} of shape ({a.shape[-1]},), "
                               f"got {a.shape} and {v.shape}")


def add_bias(y, b):
    """As :func:`bprop._kernels.add_bias`, on the NumPy twin."""
    _rows_and_vector("add_bias", "y", y, True, "b", b, False)
    twin.add_bias(y, b)


def column_sum(a, out):
    """As :func:`bprop._kernels.column_sum`, on the NumPy twin."""
    _rows_and_vector("column_sum", "a", a, False, "out", out, True)
    twin.column_sum(a, out)


def softmax_xent_labels_forward(x, t, y):
    """As :func:`bprop._kernels.softmax_xent_labels_forward`, on the NumPy twin."""
    fn = "softmax_xent_labels_forward"
    _arg(fn, "x", x, _FLOATS)
    _arg(fn, "y", y, (x.dtype,), out=True)
    if x.ndim != 2 or y.shape != x.shape:
        raise KernelValueError(f"{fn}: x must be 2-D and y of its shape, got {x.shape} and {y.shape}")
    _labels(fn, t, x.shape[0], x.shape[1])
    if x.shape[0] == 0:
        return float("nan")
    return twin._xent_labels_forward_checked(x, t, y)


def softmax_xent_labels_backward(y, t, dx):
    """As :func:`bprop._kernels.softmax_xent_labels_backward`, on the NumPy twin."""
    fn = "softmax_xent_labels_backward"
    _arg(fn, "y", y, _FLOATS)
    if y.ndim != 2 or dx is not None:
        raise KernelValueError(f"{fn}: y must be 2-D and dx allocated here, got y.shape={y.shape}")
    _labels(fn, t, y.shape[0], y.shape[1])
    dx = np.empty(y.shape, y.dtype)
    if y.size == 0:
        return dx
    return twin._xent_labels_backward_checked(y, t, dx)


def softmax_xent_onehot_backward(y, t, dx):
    """As :func:`bprop._kernels.softmax_xent_onehot_backward`, on the NumPy twin."""
    fn = "softmax_xent_onehot_backward"
    _arg(fn, "y", y, _FLOATS)
    _arg(fn, "t", t, (y.dtype,))
    if y.ndim != 2 or t.shape != y.shape or dx is not None:
        raise KernelValueError(f"{fn}: y must be 2-D, t of its shape and dx allocated here, "
                               f"got {y.shape} and {t.shape}")
    return twin.softmax_xent_onehot_backward(y, t, None)


#: The layers ask it whether small products have their own loops (the twin has none: BLAS).
small_product_loops = twin.small_product_loops
