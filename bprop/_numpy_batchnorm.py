"""NumPy twins of the compiled BatchNormalization kernels (same names and signatures).

Column statistics are summed in float64 whatever the dtype, as the compiled
loops do, row by row (NumPy's axis-0 sum adds rows in order); elementwise
results follow NumPy's promotion of the arguments' dtypes, which for mixed
dtypes is the book's.
"""
import numpy as np

__all__ = ["batchnorm_forward", "batchnorm_backward"]


def batchnorm_forward(x, gamma, beta, eps, out, xc):
    """Training forward over the rows of x (N, D): ``(out, xc, mu, var, std)``.

    ``out = gamma * (xc / std) + beta``; ``xc / std`` (the book's ``xn``) is
    not returned, as the compiled loop does not store it. ``out`` and ``xc``
    are written into when given, else allocated.
    """
    with np.errstate(all="ignore"):  # IEEE results for NaN and inf, silently, as the kernels
        n = x.shape[0]
        mu = (np.sum(x, axis=0, dtype=np.float64) / n).astype(x.dtype)
        xc = np.subtract(x, mu, out=xc)
        # Squares of float32 values are exact in float64, as in the compiled loop.
        var = (np.sum(np.square(xc, dtype=np.float64), axis=0) / n).astype(xc.dtype)
        std = np.sqrt(var.astype(np.float64) + eps).astype(var.dtype)
        out = np.divide(xc, std, out=out)
        out *= gamma
        out += beta
    return out, xc, mu, var, std


def batchnorm_backward(dout, xc, gamma, std, dx):
    """Backward over the rows: ``(dx, dgamma, dbeta)``, the book's gradient in two passes.

    With ``xn = xc / std``, ``dx = gamma / std * (dout - sd / n - (xn - sx / n) * sdx / n)``
    with the column sums ``sd = sum(dout)``, ``sdx = sum(dout * xn)`` and
    ``sx = sum(xn)`` taken in float64; the per-element arithmetic is in the
    arrays' dtype. ``dx`` is written into when given, else allocated.
    """
    with np.errstate(all="ignore"):
        n = dout.shape[0]
        dt = np.result_type(dout, xc, gamma, std)
        xn = xc / std
        sd = np.sum(dout, axis=0, dtype=np.float64)
        sdx = np.sum(np.multiply(dout, xn, dtype=np.float64), axis=0)
        sx = np.sum(xn, axis=0, dtype=np.float64)
        scale = (gamma.astype(np.float64) / std.astype(np.float64)).astype(dt)
        dx = np.subtract(xn, (sx / n).astype(dt), out=dx)
        dx *= (sdx / n).astype(dt)
        dx -= dout
        dx += (sd / n).astype(dt)
        dx *= -scale
        return dx, sdx.astype(dt), sd.astype(dt)
