"""The book's chapter-7 layers, ``Convolution`` and ``Pooling`` (``common/layers.py``).

Same constructor arguments, attributes and results as the book, computed
straight on NCHW: the convolution unfolds each sample into a (C FH FW, OH OW)
block so that ``W @ block`` is that sample's output, already NCHW and
contiguous (the book returns a transposed view); pooling reads its windows in
place and keeps each window's argmax in one byte. Both return new
C-contiguous arrays and keep float32 as float32.
"""
import numpy as np

from . import _backend, _numpy_kernels
from ._validate import array, require_forward, same_shape
from .util import as_kernel, float_dtype, geometry

__all__ = ["Convolution", "Pooling"]


def _image(where, name, a):
    a = array(where, name, a)
    if a.ndim != 4:
        raise ValueError(f"{where}: {name} must be 4-D (N, C, H, W); got {name}.shape={a.shape}")
    return a


class Convolution:
    """Convolution layer (book 7.4): ``out[n, f] = sum_c W[f, c] * x[n, c] + b[f]`` over windows.

    ``W`` and ``b`` are kept by reference, so in-place updates of the arrays
    passed in (optimizers, numerical gradients) are seen by the layer.

    Parameters
    ----------
    W : ndarray, shape (FN, C, FH, FW)
    b : ndarray, shape (FN,)
    stride : int, >= 1
    pad : int, >= 0

    Attributes
    ----------
    x : ndarray
        The last forward input, as passed.
    col : ndarray, shape (N * OH * OW, C * FH * FW)
        The book's im2col of ``x``, built when read (bprop keeps it per sample
        as (N, C * FH * FW, OH * OW)).
    col_W : ndarray, shape (C * FH * FW, FN)
        ``W.reshape(FN, -1).T`` from the last forward, as in the book.
    dW, db : ndarray
        Gradients from the last backward, new arrays each call.
    """

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.col_W = None
        self.dW = None
        self.db = None
        self._col = None
        self._state = None

    @property
    def col(self):
        """The book's im2col layout of the last forward input (a new array each read)."""
        if self._col is None:
            return None
        n, k, p = self._col.shape
        return self._col.transpose(0, 2, 1).reshape(n * p, k)

    def _params(self, where):
        W = array(where, "W", self.W)
        b = array(where, "b", self.b)
        if W.ndim != 4:
            raise ValueError(f"{where}: W must be 4-D (FN, C, FH, FW); got W.shape={W.shape}")
        if b.shape != (W.shape[0],):
            raise ValueError(
                f"{where}: b must have shape ({W.shape[0]},), one per filter; got b.shape={b.shape}, W.shape={W.shape}"
            )
        return W, b

    def forward(self, x):
        """Return the convolution of ``x`` with the filters ``W``, plus ``b``.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W)
            Any real dtype; not modified. C must match ``W.shape[1]``.

        Returns
        -------
        out : ndarray, shape (N, FN, OH, OW)
            ``OH = (H + 2 pad - FH) // stride + 1`` (likewise OW). float32 when
            x, W and b are float32, else float64. New, C-contiguous.
        """
        where = "Convolution.forward"
        W, b = self._params(where)
        x = _image(where, "x", x)
        fn, c, fh, fw = W.shape
        if x.shape[1] != c:
            raise ValueError(
                f"{where}: x has {x.shape[1]} channels but W expects {c} (x.shape={x.shape}, W.shape={W.shape})"
            )
        oh, ow = geometry(where, x.shape, fh, fw, self.stride, self.pad)
        s, p = int(self.stride), int(self.pad)
        dt = float_dtype(x, W, b)
        wk = as_kernel(W, dt)
        # Per sample: unfold into (C FH FW, OH OW), then W (FN, C FH FW) @ that + b,
        # which is the sample's NCHW output.
        col, out = _backend.kernels.conv_forward(as_kernel(x, dt), wk, as_kernel(b, dt), s, p, None, None)
        self.x = x
        self.col_W = W.reshape(fn, -1).T
        self._col = col
        self._state = (wk, fh, fw, s, p, dt, out.shape)
        return out

    def backward(self, dout, *, input_grad=True):
        """Return ``dx`` in the forward input's shape; set ``dW`` and ``db``.

        Parameters
        ----------
        dout : ndarray, shape (N, FN, OH, OW)
            The forward output's shape.
        input_grad : bool, keyword-only
            False skips ``dx`` (a first layer's input needs none) and returns None.
        """
        where = "Convolution.backward"
        require_forward(where, self._state)
        wk, fh, fw, s, p, dt, shape = self._state
        dout = array(where, "dout", dout)
        same_shape(where, "dout", dout, "the forward output", shape)
        dt = float_dtype(np.empty(0, dt), dout)
        col = as_kernel(self._col, dt)
        wk = as_kernel(wk, dt)
        d = as_kernel(dout, dt)
        k = _backend.kernels
        n, fn = shape[0], shape[1]
        db = k.conv_bias_grad(d, None)
        with np.errstate(all="ignore"):
            # sum_n dout[n] (FN, OH OW) @ col[n].T: one BLAS product per sample, then one add over n.
            dW = np.matmul(d.reshape(n, fn, shape[2] * shape[3]), col.transpose(0, 2, 1)).sum(axis=0)
        self.dW = dW.reshape(fn, self.x.shape[1], fh, fw)
        self.db = db
        if not input_grad:
            return None
        return k.conv_backward_data(d, wk, s, p, np.empty(self.x.shape, dt))


class Pooling:
    """Max pooling layer (book 7.4): the largest value of each window, channel by channel.

    Parameters
    ----------
    pool_h, pool_w : int
        Window size.
    stride : int, >= 1
    pad : int, >= 0
        Must be smaller than the window. Padded cells never win the max (as in
        PyTorch); the book's ``Pooling`` raises for ``pad > 0``.

    Attributes
    ----------
    x : ndarray
        The last forward input, as passed.
    arg_max : ndarray of int64, shape (N * OH * OW * C,)
        Each window's winner as the offset ``ky * pool_w + kx``, in the book's
        order, built when read (bprop keeps one byte per window, NCHW).
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self._arg = None
        self._state = None

    @property
    def arg_max(self):
        """The book's flat int64 argmax, in (n, i, j, c) order (a new array each read)."""
        if self._arg is None:
            return None
        return self._arg.transpose(0, 2, 3, 1).reshape(-1).astype(np.int64)

    def forward(self, x):
        """Return the maximum of each pooling window of ``x``.

        Parameters
        ----------
        x : ndarray, shape (N, C, H, W)
            Any real dtype; not modified.

        Returns
        -------
        out : ndarray, shape (N, C, OH, OW)
            ``OH = (H + 2 pad - pool_h) // stride + 1`` (likewise OW). float32
            for float32 x, else float64. New, C-contiguous.
        """
        where = "Pooling.forward"
        x = _image(where, "x", x)
        oh, ow = geometry(where, x.shape, self.pool_h, self.pool_w, self.stride, self.pad, window="pool window")
        ph, pw, s, p = int(self.pool_h), int(self.pool_w), int(self.stride), int(self.pad)
        if p >= ph or p >= pw:
            raise ValueError(
                f"{where}: pad ({p}) must be smaller than the {ph} x {pw} window, so that every window "
                f"holds an input cell (x.shape={x.shape})"
            )
        dt = float_dtype(x)
        # Windows over 256 cells keep a wider argmax: the NumPy twin's.
        k = _backend.kernels if ph * pw <= _numpy_kernels.POOL_MAX_WINDOW else _numpy_kernels
        out, arg = k.pool_forward(as_kernel(x, dt), ph, pw, s, p, None, None)
        self.x = x
        self._arg = arg
        self._state = (ph, pw, s, p, dt, out.shape, k)
        return out

    def backward(self, dout):
        """Return ``dx`` (the forward input's shape): each ``dout`` at its window's maximum.

        Where windows overlap, a cell sums the values it won, in the book's order.

        Parameters
        ----------
        dout : ndarray, shape (N, C, OH, OW)
        """
        where = "Pooling.backward"
        require_forward(where, self._state)
        ph, pw, s, p, dt, shape, k = self._state
        dout = array(where, "dout", dout)
        same_shape(where, "dout", dout, "the forward output", shape)
        dt = float_dtype(np.empty(0, dt), dout)
        dx = np.empty(self.x.shape, dt)
        return k.pool_backward(as_kernel(dout, dt), self._arg, ph, pw, s, p, dx)
