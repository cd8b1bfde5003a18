"""Reuse of large result arrays that nothing outside the layer refers to any more.

A fresh array above glibc's mmap threshold (at most 32 MiB) page-faults on
its first write, every call: at (4096, 4096) that made ReLU forward 1.5-2.4x
slower than writing into a warm buffer. A layer therefore keeps its last
large result in a :class:`Recycler` and may hand the same memory out again.

The invariant that makes this safe: **an array is handed out again only when
every reference to it is accounted for** — the recycler's own slot, plus the
one layer attribute named in the call when that attribute is this very
array (compared by identity, never by a count kept by hand). Any other
reference, a caller's variable, a view (which refers to its base), a buffer
export, another layer holding it as its input, raises the reference count
and the caller gets a fresh array. ``tests/test_held_arrays.py`` checks the
consequence over random call sequences: no array a caller holds ever changes.
"""
import math
import sys

import numpy as np

#: Smaller results come from malloc's free lists without page faults.
REUSE_MIN_BYTES = 1 << 22
#: Affine's dx page-faulted inside the BLAS call from a few hundred KiB.
AFFINE_DX_MIN_BYTES = 1 << 17
#: BatchNormalization's out, xc and dx: at (100, 4320) float64 (3.4 MB each) fresh ones
#: page-faulted 829 times per forward+backward; from twice glibc's initial mmap threshold.
BN_REUSE_MIN_BYTES = 1 << 18


class Recycler:
    """Hands out result arrays, reusing the previous one once nothing else refers to it."""

    __slots__ = ("_last", "_min_bytes")

    def __init__(self, min_bytes=REUSE_MIN_BYTES):
        self._last = None
        self._min_bytes = min_bytes

    def _refs(self):
        last = self._last
        return sys.getrefcount(last)

    def empty(self, shape, dtype, owner=None, attribute=None):
        """An uninitialised C-ordered array of ``shape`` and ``dtype``.

        Parameters
        ----------
        shape : tuple of int
        dtype : numpy.dtype
        owner, attribute : object and str, optional
            The layer and the name of its attribute that may hold the
            previous result (e.g. ``self, "out"``), which the layer replaces
            with the new one. It counts as the layer's own reference only if
            it is that very array. (Named rather than passed by value: an
            argument would itself be a reference, counted differently by
            different Python versions.)
        """
        last = self._last
        if last is not None and last.shape == shape and last.dtype == dtype:
            own = _UNSHARED + (owner is not None and getattr(owner, attribute) is last)
            del last
            if self._refs() == own:
                return self._last
        out = np.empty(shape, dtype)
        self._last = out if out.nbytes >= self._min_bytes else None
        return out

    def empty_or_none(self, shape, dtype, owner=None, attribute=None):
        """:meth:`empty` for a result of at least ``min_bytes``; None for a smaller one.

        For kernels that allocate a None output themselves, in C: cheaper
        than ``np.empty`` for the small results, which gain nothing from
        reuse. The slot is cleared then, as :meth:`empty` would.
        """
        if math.prod(shape) * dtype.itemsize < self._min_bytes:
            self._last = None
            return None
        return self.empty(shape, dtype, owner, attribute)


def _calibrate():
    # What _refs reports for an array held by the slot alone. Measured, not
    # assumed: the interpreter's own temporary references differ by version.
    r = Recycler()
    r._last = np.empty(0)
    return r._refs()


_UNSHARED = _calibrate()
