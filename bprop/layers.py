"""The book's chapter-5 layers, with the same attributes, shapes and dtypes.

``MulLayer`` and ``AddLayer`` are plain Python, as in the book. ``Relu``,
``Sigmoid``, ``Affine`` and ``SoftmaxWithLoss`` validate their arguments,
allocate their results and hand the arithmetic to the active backend's
kernels (``bprop._backend.kernels``); float32/float64 arrays reach the
compiled kernels, other real dtypes take the NumPy twin, which follows the
book's dtype results. No method modifies an array the caller passed in.
"""
import functools
import math

import numpy as np

from . import _backend
from ._backend import kernels_for
from ._errors import KernelArgumentError
from ._buffers import REUSE_MIN_BYTES, Recycler
from ._validate import F32, F64, array, contiguous, floating_result, require_forward, same_shape, sum_result

__all__ = ["MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss"]


#: What the compiled kernels raise for arguments they do not take directly.
_REFUSED = KernelArgumentError

# The shortcuts below: at the book's sizes a layer call is mostly overhead
# (argument checks, np.empty, backend dispatch: ~1.2 us against ~1 us of
# work at (100, 50)). A plain ndarray smaller than the reuse threshold goes
# straight to the compiled kernel, whose entry checks are exact (dtype,
# layout, byte order, sizes) and which allocates its results in C; whatever
# it refuses takes the fully checked path, which gives the user-facing error
# or converts the input.


def _dot(a, b, recycler=None):
    """``a @ b`` in np.dot's dtype, on BLAS even for mixed dtypes; into a recycled buffer when given."""
    # Mixed dtypes are cast first, as np.dot does: given float32 data and
    # float64 weights np.matmul casts through a slow generic loop (15x slower
    # measured here).
    if a.dtype != b.dtype:
        dt = np.result_type(a, b)
        a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    # np.dot costs ~0.4 us less per call than np.matmul at the book's sizes,
    # but with an inner size of 1 it takes an outer-product path where
    # 0 * NaN gives 0; matmul gives IEEE's NaN there.
    product = np.dot if a.shape[1] != 1 else np.matmul
    if recycler is None or not (a.dtype == F64 or a.dtype == F32):  # out= takes native floats only
        return product(a, b)
    return product(a, b, out=recycler.empty((a.shape[0], b.shape[1]), a.dtype))


#: Products up to this many multiply-adds (N * D * M), with at least
#: _SMALL_GEMM_COLS output columns, go to the compiled affine kernels instead
#: of BLAS, on the AVX-512 loops only. Measured here: at the book's
#: (100, 50, 10) forward 2.5 us against np.dot's 2.9 (float64) and the
#: backward 5.8 us against 7.2 for its two np.dot calls, before the layer
#: overhead they also save (np.errstate, the bias and column-sum calls). By
#: (100, 784, 50) BLAS's packed loops are 1.4x faster; with one or two
#: columns, BLAS's dot-product loops are; the portable loops are 5-7x slower.
_SMALL_GEMM = 1 << 17
_SMALL_GEMM_COLS = 8


def _small_gemm(x, W):
    """The compiled module when ``x @ W`` (2-D plain arrays) is small enough for its affine kernels, else None."""
    fast = _backend.checked
    if (fast is None or type(x) is not np.ndarray or type(W) is not np.ndarray
            or x.ndim != 2 or W.ndim != 2):
        return None
    m = W.shape[1]
    if m < _SMALL_GEMM_COLS or x.shape[0] * x.shape[1] * m > _SMALL_GEMM or fast.get_simd() != "avx512":
        return None
    return fast


@functools.lru_cache(maxsize=None)
def _overflow_at(dtype):
    """The smallest magnitude that rounds to inf in ``dtype``: its max plus half an ulp."""
    big = np.finfo(dtype).max
    ulp = float(big) - float(np.nextafter(big, dtype.type(0)))  # np.spacing(max) itself overflows
    return float(big) + ulp / 2


def _scalar(value, dtype):
    """A float64 ``value`` as a ``dtype`` scalar; too large for ``dtype`` gives inf without
    NumPy's cast warning, as the kernels' IEEE arithmetic does (a float32 loss can overflow
    where its float64 sum did not)."""
    if dtype != F64 and abs(value) >= _overflow_at(dtype) and value == value:
        value = math.copysign(math.inf, value)
    return dtype.type(value)


_ABSENT = object()


def _shortcut(name, shape, first, second, third=_ABSENT):
    """The compiled kernel ``name``'s result, or None where the shortcut does not apply.

    Applies to a plain ndarray ``first`` under the reuse size (and of
    ``shape``, unless None) on the compiled backend, and only if the
    kernel's entry checks accept every argument. Fixed positional
    arguments: ``*args`` and keywords made this 0.3 us slower per call.
    """
    fast = _backend.checked
    if (fast is None or type(first) is not np.ndarray or first.nbytes >= REUSE_MIN_BYTES
            or (shape is not None and first.shape != shape)):
        return None
    try:
        if third is _ABSENT:
            return getattr(fast, name)(first, second)
        return getattr(fast, name)(first, second, third)
    except _REFUSED:
        return None


def _call(name, *arrays):
    """Run kernel ``name``: the compiled one when it takes the arrays as they are, else the
    backend's choice for their dtypes on C-ordered copies (outputs here are fresh C arrays,
    so they are passed through, not copied)."""
    fast = _backend.checked
    if fast is not None:
        try:
            return getattr(fast, name)(*arrays)
        except _REFUSED:
            pass
    return getattr(kernels_for(*arrays), name)(*[contiguous(a) for a in arrays])


class MulLayer:
    """Multiplication node ``out = x * y`` of a computational graph (book 5.4.1)."""

    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        """Return ``x * y`` and remember both factors."""
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        """Return ``(dout * y, dout * x)``: each factor's gradient."""
        require_forward("MulLayer.backward", self.x)
        dx = dout * self.y
        dy = dout * self.x
        return dx, dy


class AddLayer:
    """Addition node ``out = x + y`` of a computational graph (book 5.4.2)."""

    def __init__(self):
        pass

    def forward(self, x, y):
        """Return ``x + y``."""
        return x + y

    def backward(self, dout):
        """Return ``(dout, dout)``: addition passes the gradient through."""
        dx = dout * 1
        dy = dout * 1
        return dx, dy


class Relu:
    """ReLU layer: ``out = max(x, 0)``; ``mask`` is True where ``x <= 0``.

    Attributes
    ----------
    mask : ndarray of bool or None
        Set by :meth:`forward`, shape of ``x``.
    """

    def __init__(self):
        self.mask = None
        self._out = Recycler()
        self._mask = Recycler()
        self._dx = Recycler()

    def forward(self, x):
        """Return ``x`` with entries ``<= 0`` set to 0 (NaN passes through).

        Parameters
        ----------
        x : ndarray
            Any shape, real dtype. Not modified.

        Returns
        -------
        out : ndarray
            Same shape and dtype as ``x``, C-ordered.
        """
        done = _shortcut("relu_forward", None, x, None, None)
        if done is not None:
            out, self.mask = done
            return out
        x = array("Relu.forward", "x", x)
        out = self._out.empty(x.shape, x.dtype)
        mask = self._mask.empty(x.shape, np.dtype(bool), held=self.mask is not None)
        k = kernels_for(x)
        k.relu_forward(contiguous(x), out, mask)
        self.mask = mask
        return out

    def backward(self, dout):
        """Return ``dout`` with the entries masked in forward set to 0.

        Unlike the book, ``dout`` itself is left unchanged.

        Parameters
        ----------
        dout : ndarray
            Same shape as the forward input.
        """
        mask = self.mask
        dx = None if mask is None else _shortcut("relu_backward", mask.shape, dout, mask, None)
        if dx is not None:
            return dx
        require_forward("Relu.backward", mask)
        dout = array("Relu.backward", "dout", dout)
        same_shape("Relu.backward", "dout", dout, "x (from forward)", self.mask.shape)
        dx = self._dx.empty(dout.shape, dout.dtype)
        k = kernels_for(dout)
        k.relu_backward(contiguous(dout), self.mask, dx)
        return dx


class Sigmoid:
    """Sigmoid layer: ``out = 1 / (1 + exp(-x))``, kept in ``out`` for backward.

    Computed without overflow for any ``x`` (the book's formula warns and
    overflows below about -710 in float64 and -89 in float32).

    Attributes
    ----------
    out : ndarray or None
        The last forward result.
    """

    def __init__(self):
        self.out = None
        self._out = Recycler()
        self._dx = Recycler()

    def forward(self, x):
        """Return the elementwise logistic sigmoid of ``x``.

        Parameters
        ----------
        x : ndarray
            Any shape, real dtype. Integers give float64 (float16 for 8-bit
            integers), as NumPy's ``exp`` does in the book's formula.
        """
        out = _shortcut("sigmoid_forward", None, x, None)
        if out is not None:
            self.out = out
            return out
        x = array("Sigmoid.forward", "x", x)
        dt = floating_result(x.dtype)
        if x.dtype != dt:
            x = x.astype(dt)
        out = self._out.empty(x.shape, dt, held=self.out is not None)
        kernels_for(x).sigmoid_forward(contiguous(x), out)
        self.out = out
        return out

    def backward(self, dout):
        """Return ``dout * (1 - out) * out`` in one pass.

        Parameters
        ----------
        dout : ndarray
            Same shape as the forward output.
        """
        out = self.out
        dx = None if out is None else _shortcut("sigmoid_backward", out.shape, dout, out, None)
        if dx is not None:
            return dx
        require_forward("Sigmoid.backward", out)
        dout = array("Sigmoid.backward", "dout", dout)
        same_shape("Sigmoid.backward", "dout", dout, "out", out.shape)
        dx = self._dx.empty(dout.shape, np.result_type(dout, out))
        k = kernels_for(dout, out)
        k.sigmoid_backward(contiguous(dout), out, dx)
        return dx


class Affine:
    """Fully connected layer: ``out = x @ W + b`` (book 5.6.2).

    ``W`` and ``b`` are kept by reference, so in-place updates of the
    arrays passed in (SGD, numerical gradients) are seen by the layer.

    Parameters
    ----------
    W : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Attributes
    ----------
    x : ndarray
        The forward input reshaped to (N, D) (a view when possible).
    original_x_shape : tuple
        The forward input's shape; ``dx`` is returned in it.
    dW, db : ndarray
        Gradients from the last backward, new arrays each call.
    """

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None
        # A fresh dx of a few hundred KiB page-faulted on every call inside
        # the BLAS product (123 faults, +260 us at (100, 784, 50) here); the
        # previous dx is reused once the caller has let go of it.
        self._dx = Recycler(min_bytes=1 << 17)

    def _params(self, where):
        W = array(where, "W", self.W)
        b = array(where, "b", self.b)
        if W.ndim != 2:
            raise ValueError(f"{where}: W must be 2-D (D, M); got W.shape={W.shape}")
        if b.shape != (W.shape[1],):
            raise ValueError(
                f"{where}: b must have shape ({W.shape[1]},) to match W's {W.shape[1]} columns; "
                f"got b.shape={b.shape}, W.shape={W.shape}"
            )
        return W, b

    def forward(self, x):
        """Return ``x.reshape(N, -1) @ W + b``.

        Parameters
        ----------
        x : ndarray, shape (N, ...)
            Flattened to (N, D) per sample; D must equal ``W.shape[0]``.

        Returns
        -------
        out : ndarray, shape (N, M)
            dtype by NumPy promotion of x, W and b.
        """
        fast = _small_gemm(x, self.W)
        if fast is not None:
            try:
                out = fast.affine_forward(x, self.W, self.b, None)
            except _REFUSED:  # dtypes, layouts or shapes the kernel does not take: checked below
                pass
            else:
                self.original_x_shape = x.shape
                self.x = x
                return out
        W, b = self._params("Affine.forward")
        x = array("Affine.forward", "x", x)
        if x.ndim == 0:
            raise ValueError("Affine.forward: x must have a batch axis, shape (N, ...); got a 0-d array")
        features = math.prod(x.shape[1:])
        if features != W.shape[0]:
            raise ValueError(
                f"Affine.forward: x has {features} features per sample but W has {W.shape[0]} rows "
                f"(x.shape={x.shape}, W.shape={W.shape})"
            )
        x2 = x if x.ndim == 2 else x.reshape(x.shape[0], features)
        # IEEE results (inf * 0 is NaN) without NumPy's warnings, like the kernels.
        with np.errstate(all="ignore"):
            out = _dot(x2, W)
        if out.dtype != b.dtype:
            out = out.astype(np.result_type(out, b), copy=False)
        _call("add_bias", out, b)
        self.original_x_shape = x.shape
        self.x = x2
        return out

    def backward(self, dout, *, input_grad=True):
        """Return ``dx`` in the forward input's shape; set ``dW`` and ``db``.

        Parameters
        ----------
        dout : ndarray, shape (N, M)
        input_grad : bool, keyword-only
            False skips ``dx = dout @ W.T`` and returns None, for a first
            layer whose input needs no gradient (a third of that layer's
            matrix products); ``dW`` and ``db`` are the same either way.
        """
        require_forward("Affine.backward", self.x)
        fast = _small_gemm(self.x, self.W)
        if fast is not None:
            try:
                dx, self.dW, self.db = fast.affine_backward(dout, self.x, self.W, input_grad)
            except _REFUSED:
                pass
            else:
                return dx.reshape(self.original_x_shape) if input_grad else None
        W, _ = self._params("Affine.backward")
        dout = array("Affine.backward", "dout", dout)
        x = self.x
        shape = (x.shape[0], W.shape[1])
        same_shape("Affine.backward", "dout", dout, "the forward output", shape)
        if W.shape[0] != x.shape[1]:
            raise ValueError(
                f"Affine.backward: W changed shape since forward (W.shape={W.shape}, x.shape={x.shape})"
            )
        with np.errstate(all="ignore"):
            dx = _dot(dout, W.T, self._dx) if input_grad else None
            dW = _dot(x.T, dout)
        db = np.empty(W.shape[1], dtype=sum_result(dout.dtype))
        _call("column_sum", dout, db)
        self.dW = dW
        self.db = db
        return dx.reshape(self.original_x_shape) if input_grad else None


class SoftmaxWithLoss:
    """Softmax followed by the cross-entropy loss, averaged over the batch (book 5.6.3).

    The loss is the exact cross-entropy ``mean(logsumexp(x) - x[t])``,
    computed stably; the book's code adds 1e-7 inside the log instead.

    Attributes
    ----------
    loss : numpy scalar
        Last forward loss, in the dtype of ``y``.
    y : ndarray, shape (N, C)
        Softmax of the last forward input.
    t : ndarray
        The labels passed to forward: (N,) integer class indices or (N, C) one-hot.
    """

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None
        self._t = None
        self._y = Recycler()
        self._dx = Recycler()

    def forward(self, x, t):
        """Return the mean cross-entropy loss of ``softmax(x)`` against ``t``.

        Parameters
        ----------
        x : ndarray, shape (N, C)
            Scores, real dtype; N >= 1 and C >= 1.
        t : ndarray, shape (N,) or (N, C)
            Integer labels in ``[0, C)``, or one-hot (any real dtype).
        """
        if (type(t) is np.ndarray and t.ndim == 1 and type(x) is np.ndarray and x.size
                and x.nbytes < REUSE_MIN_BYTES):
            # Float scores with int64 labels go straight into the compiled kernel; it
            # refuses anything else (labels out of range too), and the checked path
            # below then converts or raises the user-facing error. The size test is
            # _shortcut's own, made before y is allocated: above it the checked path
            # reuses the layer's y instead.
            y = np.empty(x.shape, x.dtype)
            loss = _shortcut("softmax_xent_labels_forward", None, x, t, y)
            if loss is not None:
                self.t = self._t = t
                self.y = y
                self.loss = _scalar(loss, x.dtype)
                return self.loss
        where = "SoftmaxWithLoss.forward"
        x = array(where, "x", x)
        t = array(where, "t", t)
        if x.ndim != 2:
            raise ValueError(f"{where}: x must be 2-D (N, C); got x.shape={x.shape}")
        n, c = x.shape
        if n == 0 or c == 0:
            raise ValueError(f"{where}: the loss needs at least one sample and one class; got x.shape={x.shape}")
        dt = floating_result(x.dtype)
        xc = contiguous(x.astype(dt) if x.dtype != dt else x)
        y = self._y.empty((n, c), dt, held=self.y is not None)
        if t.ndim == 1:
            if t.dtype.kind not in "iu":
                raise TypeError(
                    f"{where}: 1-D t holds class labels and must be integers; got dtype {t.dtype} "
                    f"(one-hot labels have x's shape {x.shape})"
                )
            if t.shape[0] != n:
                raise ValueError(f"{where}: t has {t.shape[0]} labels for {n} samples (x.shape={x.shape}, t.shape={t.shape})")
            tk = contiguous(t if t.dtype == np.int64 else t.astype(np.int64))
            try:
                # The kernels check the label range (the twin too), cheaper
                # than three NumPy passes here; the message is built on failure.
                loss = kernels_for(xc).softmax_xent_labels_forward(xc, tk, y)
            except ValueError:
                bad = (t < 0) | (t >= c)
                raise ValueError(
                    f"{where}: labels must lie in [0, {c}) for x.shape={x.shape}; got {t[bad][0]} "
                    f"at index {int(np.flatnonzero(bad)[0])}"
                ) from None
        elif t.ndim == 2:
            same_shape(where, "one-hot t", t, "x", x.shape)
            tk = contiguous(t)
            k = kernels_for(xc, tk)
            loss = k.softmax_xent_onehot_forward(xc, tk, y)
        else:
            raise ValueError(f"{where}: t must be (N,) labels or (N, C) one-hot; got t.shape={t.shape}, x.shape={x.shape}")
        self.t = t
        self._t = tk
        self.y = y
        self.loss = _scalar(loss, dt)
        return self.loss

    def backward(self, dout=1):
        """Return ``(y - t) / N``; ``dout`` is ignored, as in the book."""
        require_forward("SoftmaxWithLoss.backward", self.y)
        y, t = self.y, self._t
        dx = _shortcut("softmax_xent_labels_backward" if t.ndim == 1 else "softmax_xent_onehot_backward", None, y, t, None)
        if dx is not None:
            return dx
        if t.ndim == 1:
            dx = self._dx.empty(y.shape, y.dtype)
            kernels_for(y).softmax_xent_labels_backward(y, t, dx)
        else:
            dx = self._dx.empty(y.shape, np.result_type(y, t))
            kernels_for(y, t).softmax_xent_onehot_backward(y, t, dx)
        return dx
