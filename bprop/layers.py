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
import operator

import numpy as np

from . import _backend
from ._backend import kernels_for
from ._buffers import AFFINE_DX_MIN_BYTES, REUSE_MIN_BYTES, Recycler
from ._errors import KernelArgumentError
from ._validate import F32, F64, array, contiguous, floating_result, require_forward, same_shape, sum_result

__all__ = ["MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss"]


# The fast path. At the book's sizes a layer call is mostly overhead
# (argument checks, np.empty, backend dispatch: ~1.2 us against ~1 us of work
# at (100, 50)), so a call whose arrays are plain ndarrays below the
# result-reuse size goes straight to the compiled kernel, whose entry checks
# are exact (dtype, layout, byte order, sizes) and which allocates its
# results in C. A refusal by those checks (KernelArgumentError) sends the
# call down the checked path, which converts the arguments or raises the
# user-facing error; any other exception is a real failure and propagates.
# Large results take the checked path, where they may reuse memory (see
# bprop._buffers). _fast and _attempt are the only two places that decide.

_REFUSED = object()
_ABSENT = object()


def _fast(a, b=_ABSENT):
    """The compiled kernels when ``a`` (and ``b``) may go to them as they are, else None.

    Plain ndarrays only: a subclass such as np.matrix changes what reshape
    and indexing mean, and the kernels' typed arguments take no other object.
    """
    fast = _backend.checked
    if (fast is None or type(a) is not np.ndarray or a.nbytes >= REUSE_MIN_BYTES
            or (b is not _ABSENT and type(b) is not np.ndarray)):
        return None
    return fast


def _attempt(kernel, a, b, c=_ABSENT, d=_ABSENT):
    """``kernel(a, b[, c[, d]])``, or ``_REFUSED`` when its entry checks refuse the arguments.

    Fixed positional arguments: ``*args`` cost 0.1-0.3 us a call here.
    """
    try:
        if c is _ABSENT:
            return kernel(a, b)
        return kernel(a, b, c) if d is _ABSENT else kernel(a, b, c, d)
    except KernelArgumentError:
        return _REFUSED


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


#: Products up to this many multiply-adds (N * D * M), with at least this
#: many output columns, go to the compiled affine kernels instead of BLAS
#: when those run on the register-blocked loops named (the compiled module's
#: small_product_loops()): there a BLAS call costs more in NumPy's dispatch
#: than in arithmetic. Measured for each loop set against the np.dot route,
#: forward + backward, one thread, OpenBLAS: below the limits the layer is
#: 1.3-2.4x faster on the kernels (N >= 4); above 2^17 the gain shrinks to
#: 1.0-1.3x and depends on the BLAS, and with two to seven columns BLAS can
#: win (AVX2, (100, 600, 2) float32: 0.84x). With one or two rows and a
#: float64 W of a few hundred KiB the backward's fresh copy of W.T page-faults
#: on every call (0.3-0.5x at (1, 784, 50)). The plain portable loop is
#: slower than BLAS everywhere.
_SMALL_GEMM = {"avx512": (1 << 17, 8), "avx2": (1 << 17, 8)}


def _small_gemm(fast, x, W, b=_ABSENT):
    """Whether ``x @ W`` (+ ``b``) may go to the affine kernels of ``fast`` (``_fast(x, W)``)."""
    if fast is None or x.ndim != 2 or W.ndim != 2 or (b is not _ABSENT and type(b) is not np.ndarray):
        return False
    limit = _SMALL_GEMM.get(fast.small_product_loops())
    m = W.shape[1]
    return limit is not None and m >= limit[1] and x.shape[0] * x.shape[1] * m <= limit[0]


def _blas_path(fast, x, W, b=_ABSENT):
    """Whether ``x @ W`` may go to np.dot as it is and its bias or column sums to the kernels
    ``fast`` (``_fast(x, W)``): 2-D plain ndarrays of one float kernel dtype with an inner size
    above 1 (np.dot's outer-product path gives 0 for 0 * NaN) and a plain ndarray ``b``.

    The rest of what the kernels need (layout, byte order, b's shape) their entry checks decide.
    """
    return not (fast is None or x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[0] or x.shape[1] < 2
                or x.dtype != W.dtype or not (x.dtype == F64 or x.dtype == F32)
                or (b is not _ABSENT and type(b) is not np.ndarray))


# BLAS raises floating-point flags that NumPy turns into warnings (inf * 0);
# the layers give IEEE results silently, as the kernels do. The decorator
# form costs less than a with block (0.4 against 1.6 us here).
@np.errstate(all="ignore")
def _ieee_dot(a, b):
    return np.dot(a, b)


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


_RELU_BACKWARD = operator.attrgetter("relu_backward")
_SIGMOID_BACKWARD = operator.attrgetter("sigmoid_backward")


def _saved_backward(where, dout, saved, saved_name, recycler, kernel_of, saved_is_operand):
    """An elementwise backward from ``dout`` and the array forward saved (Relu's mask, Sigmoid's out).

    ``kernel_of(module)`` is the kernel; ``saved_is_operand`` says whether the
    saved array takes part in the arithmetic (its dtype then joins dout's in
    the result and in the choice of kernels), as Sigmoid's out does and
    Relu's boolean mask does not.
    """
    fast = _fast(dout)
    if fast is not None and saved is not None and dout.shape == saved.shape:
        dx = _attempt(kernel_of(fast), dout, saved, None)
        if dx is not _REFUSED:
            return dx
    require_forward(where, saved)
    dout = array(where, "dout", dout)
    same_shape(where, "dout", dout, saved_name, saved.shape)
    operands = (dout, saved) if saved_is_operand else (dout,)
    dx = recycler.empty(dout.shape, np.result_type(*operands))
    kernel_of(kernels_for(*operands))(contiguous(dout), saved, dx)
    return dx


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
        fast = _fast(x)
        if fast is not None:
            done = _attempt(fast.relu_forward, x, None, None)
            if done is not _REFUSED:
                out, self.mask = done
                return out
        x = array("Relu.forward", "x", x)
        out = self._out.empty(x.shape, x.dtype)
        mask = self._mask.empty(x.shape, np.dtype(bool), self, "mask")
        kernels_for(x).relu_forward(contiguous(x), out, mask)
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
        return _saved_backward("Relu.backward", dout, self.mask, "x (from forward)", self._dx,
                               _RELU_BACKWARD, False)


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
        fast = _fast(x)
        if fast is not None:
            out = _attempt(fast.sigmoid_forward, x, None)
            if out is not _REFUSED:
                self.out = out
                return out
        x = array("Sigmoid.forward", "x", x)
        dt = floating_result(x.dtype)
        if x.dtype != dt:
            x = x.astype(dt)
        out = self._out.empty(x.shape, dt, self, "out")
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
        return _saved_backward("Sigmoid.backward", dout, self.out, "out", self._dx, _SIGMOID_BACKWARD, True)


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
        self._dx = Recycler(AFFINE_DX_MIN_BYTES)

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
        fast = _fast(x, self.W)
        if _small_gemm(fast, x, self.W, self.b):
            out = _attempt(fast.affine_forward, x, self.W, self.b, None)
            if out is not _REFUSED:
                self.original_x_shape = x.shape
                self.x = x
                return out
        elif _blas_path(fast, x, self.W, self.b):
            out = _ieee_dot(x, self.W)
            if _attempt(fast.add_bias, out, self.b) is not _REFUSED:
                self.original_x_shape = x.shape
                self.x = x
                return out
        W, b = self._params("Affine.forward")
        x = array("Affine.forward", "x", x)
        if x.ndim == 0:
            raise ValueError("Affine.forward: x must have a batch axis, shape (N, ...); got a 0-d array")
        features = math.prod(x.shape[1:])
        if features != W.shape[0] and x.ndim == 1:
            # As in the book, 1-D x is N samples of one feature each.
            raise ValueError(
                f"Affine.forward: x must have a batch axis, shape (N, {W.shape[0]}); got 1-D x.shape={x.shape}, "
                f"read as {x.shape[0]} samples of 1 feature (for one sample, pass x.reshape(1, -1))"
            )
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
        b = contiguous(b)
        kernels_for(out, b).add_bias(out, b)
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
        fast = _fast(self.x, self.W)
        if _small_gemm(fast, self.x, self.W) and type(dout) is np.ndarray:
            grads = _attempt(fast.affine_backward, dout, self.x, self.W, input_grad)
            if grads is not _REFUSED:
                dx, self.dW, self.db = grads
                return dx.reshape(self.original_x_shape) if input_grad else None
        elif type(dout) is np.ndarray and dout.ndim == 2 and dout.shape[1] > 1 and dout.dtype == self.x.dtype:
            # BLAS for the products, the kernel for db; a dx of AFFINE_DX_MIN_BYTES
            # or more takes the checked path, which reuses its memory.
            x, W = self.x, self.W
            fast = _fast(x, dout)
            if (_blas_path(fast, x.T, dout) and type(W) is np.ndarray and W.shape == (x.shape[1], dout.shape[1])
                    and W.dtype == x.dtype and dout.shape[0] * x.shape[1] * x.itemsize < AFFINE_DX_MIN_BYTES):
                db = np.empty(dout.shape[1], dout.dtype)
                if _attempt(fast.column_sum, dout, db) is not _REFUSED:
                    dx = _ieee_dot(dout, W.T) if input_grad else None
                    self.dW = _ieee_dot(x.T, dout)
                    self.db = db
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
        dout = contiguous(dout)
        kernels_for(dout, db).column_sum(dout, db)
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
        The labels passed to forward: (N,) integer class indices, (N, C)
        one-hot, or (N, 1) integer class indices when C > 1.
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
        t : ndarray, shape (N,), (N, C) or (N, 1)
            Integer labels in ``[0, C)``, or one-hot (any real dtype). An
            integer column (N, 1) with C > 1 holds labels (the book's chapter-7
            gradient check passes its one label so); with C == 1 it is one-hot.
        """
        fast = _fast(x, t)
        if fast is not None and t.ndim == 1 and x.size:
            # Float scores with int64 labels; the kernel refuses anything else
            # (labels out of range too).
            y = np.empty(x.shape, x.dtype)
            loss = _attempt(fast.softmax_xent_labels_forward, x, t, y)
            if loss is not _REFUSED:
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
        given = t
        if t.ndim == 2 and t.shape == (n, 1) and c > 1 and t.dtype.kind in "iu":
            t = t.reshape(n)
        y = self._y.empty((n, c), dt, self, "y")
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
            # Stays in C in every build: the twin's one-hot loss makes
            # temporaries the size of x, which the compiled kernels never do.
            loss = kernels_for(xc, tk).softmax_xent_onehot_forward(xc, tk, y)
        else:
            raise ValueError(f"{where}: t must be (N,) labels or (N, C) one-hot; got t.shape={t.shape}, x.shape={x.shape}")
        self.t = given
        self._t = tk
        self.y = y
        self.loss = _scalar(loss, dt)
        return self.loss

    def backward(self, dout=1):
        """Return ``(y - t) / N``; ``dout`` is ignored, as in the book."""
        require_forward("SoftmaxWithLoss.backward", self.y)
        y, t = self.y, self._t
        fast = _fast(y, t)
        if fast is not None:
            kernel = fast.softmax_xent_labels_backward if t.ndim == 1 else fast.softmax_xent_onehot_backward
            dx = _attempt(kernel, y, t, None)
            if dx is not _REFUSED:
                return dx
        if t.ndim == 1:
            dx = self._dx.empty(y.shape, y.dtype)
            kernels_for(y).softmax_xent_labels_backward(y, t, dx)
        else:
            dx = self._dx.empty(y.shape, np.result_type(y, t))
            kernels_for(y, t).softmax_xent_onehot_backward(y, t, dx)
        return dx
