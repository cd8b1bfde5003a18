"""The book's numerical gradient (``common/gradient.py``), with its one trap closed."""
import numpy as np

__all__ = ["numerical_gradient"]


def numerical_gradient(f, x):
    """Central-difference gradient of ``f`` at ``x``, element by element.

    For every index ``i`` the entry ``x[i]`` is set to ``x[i] + h`` and to
    ``x[i] - h`` (``h = 1e-4``), ``f(x)`` is evaluated at both, and
    ``(f(x + h) - f(x - h)) / (2 h)`` is stored. ``x`` is modified in place
    during the call, because ``f`` usually reads it by reference (a network's
    weights), and is restored bit for bit afterwards, also when ``f`` raises.

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar.
    x : numpy.ndarray
        Floating-point array of any shape; must be writeable.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``x``.

    Raises
    ------
    TypeError
        ``x`` is not a floating-point ndarray. The book's code would round
        ``x + h`` back to an integer and return zeros or garbage.
    ValueError
        ``x`` is read-only.

    Examples
    --------
    >>> import numpy as np
    >>> g = numerical_gradient(lambda x: np.sum(x ** 2), np.array([3.0, 4.0]))
    >>> np.round(g, 6)
    array([6., 8.])
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"numerical_gradient: x must be a NumPy array (it is perturbed in place); got {type(x).__name__}"
        )
    if x.dtype.kind != "f":
        raise TypeError(
            f"numerical_gradient: x must have a floating dtype; got {x.dtype}. "
            "A step of h = 1e-4 cannot be represented in an integer or bool array; "
            "convert first, e.g. x.astype(np.float64)."
        )
    if not x.flags.writeable:
        raise ValueError("numerical_gradient: x is read-only, but it must be perturbed in place")
    h = 1e-4
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index", "zerosize_ok"], op_flags=["readwrite"])
    while not it.finished:
        idx = it.multi_index
        tmp_val = x[idx]  # a NumPy scalar: an exact copy of the entry
        try:
            x[idx] = float(tmp_val) + h
            fxh1 = f(x)
            x[idx] = tmp_val - h
            fxh2 = f(x)
        finally:
            x[idx] = tmp_val
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        it.iternext()
    return grad
