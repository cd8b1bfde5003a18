"""What bprop is running on: backend, OpenMP, threads, BLAS."""
import platform

import numpy as np

from . import _backend, _threads


def set_num_threads(n):
    """Set how many threads the compiled kernels use on large arrays.

    Parameters
    ----------
    n : int or None
        At least 1; ``None`` or -1 restores OpenMP's default
        (``OMP_NUM_THREADS`` or the CPU count). Without OpenMP the kernels
        stay single-threaded. :func:`bprop.threads` limits NumPy's BLAS too.

    Raises
    ------
    TypeError
        ``n`` is not an integer or None (``'2'``, ``2.5``).
    ValueError
        ``n`` is 0 or below -1.
    """
    if n is not None and not (type(n) is int and n == -1):
        n = _threads.check_count("set_num_threads", n)
    k = _backend.compiled_module()
    if k is None:
        return
    if n is None or n == -1:
        n = k.default_num_threads()
    k.set_num_threads(n)


def get_num_threads():
    """Return the compiled kernels' thread count (1 without them)."""
    k = _backend.compiled_module()
    return k.get_num_threads() if k is not None else 1


class Info(dict):
    """A dict that prints as an aligned ``key: value`` block."""

    def __str__(self):
        width = max(map(len, self))
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.items())


def info():
    """Describe the running configuration.

    Returns
    -------
    Info
        A dict (printable as a table) with the bprop and NumPy versions,
        the active backend, whether the compiled kernels and OpenMP are
        there, how bprop was built (``build``: compiled, or a pure build
        with ``BPROP_NO_EXTENSIONS=1``) and with which C ``compiler``, the
        loops they run (``simd``: avx512 or portable), the kernels'
        dtypes and thread count, and the BLAS in use.
    """
    from . import __version__

    k = _backend.compiled_module()
    return Info(
        bprop=__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        backend=_backend.backend(),
        compiled=k is not None,
        build=_backend.build_kind(),
        compiler=_backend.COMPILER or ("none (pure build)" if _backend.PURE_BUILD else "unknown (no build record)"),
        openmp=bool(k is not None and k.openmp_enabled()),
        simd=k.get_simd() if k is not None else "none (no compiled kernels)",
        threads=get_num_threads(),
        kernel_dtypes="float32, float64 (other real dtypes use the NumPy kernels)",
        blas=_threads.blas_description(),
    )
