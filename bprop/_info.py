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


def loops_description(k=None):
    """One line naming the loops the compiled kernels run, and why (``bprop info``'s ``loops``).

    Parameters
    ----------
    k : module, optional
        The compiled kernel module; the one in use when omitted.

    Returns
    -------
    str
        For example ``avx512: hand-written AVX-512 loops, the rest portable
        at x86-64-v4``, ``portable at x86-64-v3 (AVX2, FMA)``, ``portable at
        baseline x86_64`` (a CPU older than x86-64-v3, or BPROP_SIMD) or
        ``portable, no per-CPU versions in this build (baseline code
        only)``.
    """
    k = k if k is not None else _backend.compiled_module()
    if k is None:
        return "none (no compiled kernels)"
    if not k.per_cpu_versions():
        return "portable, no per-CPU versions in this build (baseline code only)"
    level = k.simd_level()
    if k.get_simd() == "avx512":
        return f"avx512: hand-written AVX-512 loops, the rest portable at {level}"
    what = {"x86-64-v4": " (AVX-512)", "x86-64-v3": " (AVX2, FMA)"}.get(level, "")
    if level == "baseline":
        return f"portable at baseline {platform.machine() or 'CPU'}"
    return f"portable at {level}{what}"


def exp_description(k=None):
    """One line naming the exp under the sigmoid and softmax forwards (``bprop info``'s ``exp``).

    Parameters
    ----------
    k : module, optional
        The compiled kernel module; the one in use when omitted.
    """
    k = k if k is not None else _backend.compiled_module()
    if k is None:
        return "NumPy's (no compiled kernels)"
    if k.exp_source() == "numpy":
        return "NumPy's exp, negative, add and divide loops, called from bprop's loops on blocks of the data"
    return "bprop's own (bprop/src/exp.h), vectorised with the loops"


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
        loops they run (``simd``: avx512 or portable; ``loops``: which,
        at which CPU level, see :func:`loops_description`; ``exp``: whose
        exp the sigmoid and softmax forwards run, see
        :func:`exp_description`), the kernels' dtypes and thread count, and the BLAS in use.
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
        loops=loops_description(k),
        exp=exp_description(k),
        threads=get_num_threads(),
        kernel_dtypes="float32, float64 (other real dtypes use the NumPy kernels)",
        blas=_threads.blas_description(),
    )
