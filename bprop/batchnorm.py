"""The book's ``BatchNormalization`` layer (chapter 6), on fused kernels."""
import math

import numpy as np

from ._backend import kernels_for
from ._buffers import BN_REUSE_MIN_BYTES, Recycler
from ._validate import array, contiguous, require_forward, same_shape

__all__ = ["BatchNormalization"]

#: The book's epsilon, written as it writes it (10e-7 is 1e-6).
EPS = 10e-7


class BatchNormalization:
    """Batch normalisation (Ioffe and Szegedy, 2015), as the book's ``common/layers.py``.

    Training normalises each activation over the batch: for input (N, D),
    per column; for (N, C, H, W) per activation, over x reshaped to
    (N, C*H*W), as the book does. Evaluation uses the running statistics.

    Parameters
    ----------
    gamma, beta : ndarray, shape (D,)
        Scale and shift, held by reference (an optimizer's in-place update is
        seen).
    momentum : float
        The fraction of the running statistics kept at each training call.
    running_mean, running_var : ndarray of shape (D,), optional
        Created as float64 zeros on the first forward call, as in the book;
        an evaluation pass before any training call therefore divides by
        ``sqrt(0 + 1e-6)``, exactly as the book's does.

    Attributes
    ----------
    input_shape : tuple
    batch_size : int
    xc : ndarray, shape (N, D)
        The centred input of the last training forward.
    xn : ndarray, shape (N, D)
        The normalised input, ``xc / std``: computed on first access. The
        backward works from ``xc`` and ``std``, so the training forward does
        not store it (one array less to write per call).
    std : ndarray, shape (D,)
        ``sqrt(var + 10e-7)`` of the last training forward.
    dgamma, dbeta : ndarray, shape (D,)
        Gradients from the last backward.
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xc = None
        self._xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None
        self._trained_shape = None
        # Memory is handed out again only when nothing outside refers to it
        # (the invariant of bprop._buffers): xc when self.xc alone holds it,
        # out and dx once the caller has dropped them.
        self._out = Recycler(BN_REUSE_MIN_BYTES)
        self._xc = Recycler(BN_REUSE_MIN_BYTES)
        self._dx = Recycler(BN_REUSE_MIN_BYTES)

    @property
    def xn(self):
        if self._xn is None and self.xc is not None:
            with np.errstate(all="ignore"):  # the kernels' IEEE results, from the same division
                self._xn = self.xc / self.std
        return self._xn

    @xn.setter
    def xn(self, value):
        self._xn = value

    def _flat(self, where, name, a):
        a = array(where, name, a)
        if a.ndim < 2:
            raise ValueError(f"{where}: {name} must be (N, D) or (N, C, H, W); got {name}.shape={a.shape}")
        return a.reshape(a.shape[0], math.prod(a.shape[1:]))

    def _params(self, where, d):
        gamma = array(where, "gamma", self.gamma)
        beta = array(where, "beta", self.beta)
        for name, p in (("gamma", gamma), ("beta", beta)):
            if p.shape != (d,):
                raise ValueError(
                    f"{where}: {name} must have shape ({d},), one value per activation; got "
                    f"{name}.shape={p.shape}, input shape {self.input_shape}"
                )
        return gamma, beta

    def forward(self, x, train_flg=True):
        """Return ``gamma * xn + beta`` in ``x``'s shape.

        Parameters
        ----------
        x : ndarray, shape (N, D) or (N, C, H, W)
            Not modified. A training batch needs N >= 1.
        train_flg : bool
            True normalises with the batch's statistics and updates the
            running ones; False uses the running statistics.
        """
        where = "BatchNormalization.forward"
        shape = getattr(x, "shape", None)
        x2 = self._flat(where, "x", x)
        n, d = x2.shape
        gamma, beta = self._params(where, d)
        if train_flg and n == 0:
            raise ValueError(f"{where}: a training batch needs at least one sample; got x.shape={shape}")
        self.input_shape = shape
        if self.running_mean is None:
            self.running_mean = np.zeros(d)
            self.running_var = np.zeros(d)
        if not train_flg:
            with np.errstate(all="ignore"):
                xn = (x2 - self.running_mean) / np.sqrt(self.running_var + EPS)
                return (gamma * xn + beta).reshape(shape)
        xk, gamma, beta = contiguous(x2), contiguous(gamma), contiguous(beta)
        out = xc = None
        # Reused memory only where NumPy would give the same dtype: one dtype, in
        # native byte order (a ufunc's fresh result is native; a reused one keeps its order).
        if xk.dtype.isnative and xk.dtype == gamma.dtype == beta.dtype:
            out = self._out.empty_or_none((n, d), xk.dtype)
            xc = self._xc.empty_or_none((n, d), xk.dtype, self, "xc")
        out, xc, mu, var, std = kernels_for(xk, gamma, beta).batchnorm_forward(xk, gamma, beta, EPS, out, xc)
        self.batch_size = n
        self.xc, self._xn, self.std = xc, None, std
        self._trained_shape = shape
        m = self.momentum
        self.running_mean = m * self.running_mean + (1 - m) * mu
        self.running_var = m * self.running_var + (1 - m) * var
        return out.reshape(shape)

    def backward(self, dout):
        """Return ``dx`` in the forward input's shape; set ``dgamma`` and ``dbeta``.

        Parameters
        ----------
        dout : ndarray
            The forward output's shape.
        """
        where = "BatchNormalization.backward"
        require_forward(where, self.xc)
        dout = array(where, "dout", dout)
        # The gradient belongs to the last training forward (an evaluation
        # pass in between keeps no state for it).
        same_shape(where, "dout", dout, "the last training forward's output", self._trained_shape)
        xc, std = self.xc, self.std
        d2 = contiguous(dout.reshape(xc.shape))
        gamma, _ = self._params(where, xc.shape[1])
        gamma = contiguous(gamma)
        dx = None
        if d2.dtype.isnative and d2.dtype == xc.dtype == gamma.dtype == std.dtype:  # as in forward
            dx = self._dx.empty_or_none(xc.shape, xc.dtype)
        dx, self.dgamma, self.dbeta = kernels_for(d2, xc, gamma, std).batchnorm_backward(d2, xc, gamma, std, dx)
        return dx.reshape(self._trained_shape)
