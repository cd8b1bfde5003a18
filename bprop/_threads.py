"""Thread limits for bprop's kernels and NumPy's BLAS together, and what the BLAS is.

The book's matrices are small (a batch of 100 by 784 or 50): splitting them
between threads costs more in hand-offs than it saves, and a multi-threaded
BLAS whose threads wait for a core that another process holds is far slower
than one thread. :func:`threads` limits both pools at once. threadpoolctl is
imported only when a limit is set or the BLAS described, so ``import bprop``
stays light.
"""
import operator
import os
import warnings

from . import _info


class ThreadCountWarning(UserWarning):
    """A thread count above the usable cores was lowered to their number."""


ThreadCountWarning.__module__ = "bprop"


def usable_cpus():
    """The cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_count(where, n):
    """``n`` as an int >= 1, or raise TypeError (not an integer) / ValueError (below 1)."""
    if isinstance(n, bool):
        raise TypeError(f"{where}: n must be an integer, got bool {n!r}")
    try:
        n = operator.index(n)  # ints and NumPy integers; not floats or strings
    except TypeError:
        raise TypeError(f"{where}: n must be an integer, got {type(n).__name__} {n!r}") from None
    if n < 1:
        raise ValueError(f"{where}: n must be >= 1, got {n}")
    return n


def cap(n):
    """``(count, note)``: ``n`` lowered to :func:`usable_cpus`, and a one-line note when it was (else None)."""
    usable = usable_cpus()
    if n <= usable:
        return n, None
    return usable, (f"{n} threads asked for, but only {usable} core{'s' if usable != 1 else ''} "
                    f"{'are' if usable != 1 else 'is'} usable here: using {usable}")


class threads:
    """Limit bprop's kernels and NumPy's BLAS to ``n`` threads.

    Called as a function, the limit holds for the rest of the process;
    used as a context manager, both previous settings come back on exit::

        bprop.threads(1)            # from here on
        with bprop.threads(1):      # only inside the block
            ...

    One thread is usually fastest for the book's networks: their matrices
    are too small to share between threads, and a multi-threaded BLAS
    beside another busy process waits for cores instead of computing.

    Parameters
    ----------
    n : int
        Threads, at least 1. More than the usable cores (the process's CPU
        affinity, else ``os.cpu_count()``) is lowered to that number with a
        :class:`bprop.ThreadCountWarning`.

    Raises
    ------
    TypeError
        ``n`` is not an integer (``'2'``, ``2.5``, ``True``).
    ValueError
        ``n`` is below 1.
    """

    def __init__(self, n):
        n = check_count("bprop.threads", n)
        n, note = cap(n)
        if note is not None:
            warnings.warn(f"bprop.threads: {note}", ThreadCountWarning, stacklevel=2)
        from threadpoolctl import threadpool_limits

        self.n = n
        self._previous = _info.get_num_threads()
        # threadpool_limits applies the limit now and remembers the old ones.
        self._blas = threadpool_limits(limits=n, user_api="blas")
        _info.set_num_threads(n)

    def restore(self):
        """Put back the thread counts from before this limit."""
        self._blas.restore_original_limits()
        _info.set_num_threads(self._previous)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False

    def __repr__(self):
        return f"bprop.threads({self.n})"


def blas_pools():
    """threadpoolctl's description of each BLAS library loaded (None without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [p for p in threadpool_info() if p.get("user_api") == "blas"]


def blas_description():
    """One line per BLAS: library, version, kernels (CPU architecture) and thread count."""
    pools = blas_pools()
    if pools is None:
        return "unknown (threadpoolctl is not installed)"
    if not pools:
        return "none found"
    return "; ".join(
        f"{p.get('internal_api')} {p.get('version')}, {p.get('architecture') or 'unknown'} kernels, "
        f"{p.get('num_threads')} thread{'s' if p.get('num_threads') != 1 else ''}"
        for p in pools)
