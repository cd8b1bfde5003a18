"""How recorded values are kept and written on the drawing: numbers as a reader writes them, arrays as summaries."""
import math
import numbers

import numpy as np

#: Significant digits kept when printing a float64: enough for every number
#: the book prints, few enough to drop the last-place noise of float
#: arithmetic (1.1 * 200 = 220.00000000000003).
DIGITS = 12


def format_number(value, digits=DIGITS):
    """``value`` as a reader writes it: rounded to ``digits`` significant digits, then the shortest form.

    Parameters
    ----------
    value : int, float, bool, complex or NumPy scalar
        Anything else is returned as ``str(value)``.
    digits : int
        Significant digits to keep (float32 keeps at most 7, float16 4:
        what those types hold).

    Returns
    -------
    str

    Examples
    --------
    >>> format_number(220.00000000000003), format_number(2.2000000000000002), format_number(110)
    ('220', '2.2', '110')
    >>> format_number(3.3000000000000003), format_number(1e-20), format_number(float("nan"))
    ('3.3', '1e-20', 'nan')
    """
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, np.floating):
        digits = min(digits, np.finfo(value.dtype).precision + 1)
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            return repr(x)
        r = float(f"{x:.{digits}g}")
        if r.is_integer() and abs(r) < 1e16:
            return str(int(r))
        return repr(r)
    if isinstance(value, numbers.Complex):
        z = complex(value)
        sign = "-" if math.copysign(1.0, z.imag) < 0 else "+"
        return f"({format_number(z.real, digits)}{sign}{format_number(abs(z.imag), digits)}j)"
    return str(value)


class ArraySummary:
    """What a drawing shows of an array: its shape, dtype and range (the array itself is not kept).

    Attributes
    ----------
    shape : tuple
    dtype : numpy.dtype (or the type's name for array-likes that are not NumPy arrays)
    min, max : NumPy scalar or None
        None for an empty array or a dtype without an order.
    """

    __slots__ = ("shape", "dtype", "min", "max")

    def __init__(self, shape, dtype, lo, hi):
        self.shape, self.dtype, self.min, self.max = shape, dtype, lo, hi

    def lines(self, digits=4):
        """The text written on an edge: the shape, then ``[min, max]`` when there is one."""
        shape = "(" + ", ".join(str(n) for n in self.shape) + ("," if len(self.shape) == 1 else "") + ")"
        if self.min is None:
            return [shape]
        return [shape, f"[{format_number(self.min, digits)}, {format_number(self.max, digits)}]"]

    def __repr__(self):
        return f"ArraySummary(shape={self.shape}, dtype={self.dtype}, min={self.min!r}, max={self.max!r})"


def summarize(value):
    """What a recording keeps of ``value``: scalars as they are, arrays as an :class:`ArraySummary`."""
    if value is None or isinstance(value, (numbers.Number, np.generic, str)):
        return value
    if isinstance(value, np.ndarray):
        lo = hi = None
        if value.size and value.dtype.kind in "biuf":
            lo, hi = value.min(), value.max()   # NaN propagates without a warning
        return ArraySummary(value.shape, value.dtype, lo, hi)
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        return ArraySummary(shape, getattr(value, "dtype", type(value).__name__), None, None)
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."
