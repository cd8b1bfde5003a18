"""The one place that decides which kernels bprop's layers call.

``BPROP_BACKEND=auto|cython|numpy`` picks at import (auto: compiled when it
imports, else the NumPy twin with a warning). ``set_backend`` and
``use_backend`` switch at run time; the choice is process-wide.
"""
import contextlib
import os
import warnings

from . import _numpy_kernels
from ._validate import kernel_dtype

try:
    from . import _kernels as _compiled
    _IMPORT_ERROR = None
except ImportError as exc:  # pure install (BPROP_NO_EXTENSIONS=1) or broken build
    _compiled = None
    _IMPORT_ERROR = exc

BACKENDS = ("auto", "cython", "numpy")

#: The active kernel module; layers read it on every call.
kernels = _numpy_kernels
#: The compiled module when it is active, else None. Layers hand plain arrays
#: straight to it: its entry checks refuse (TypeError/ValueError) anything it
#: cannot take, which then goes through the full checks. The NumPy twin takes
#: any input without checking, so it never gets this shortcut.
checked = None
_name = "numpy"
_warned = False


class BackendWarning(UserWarning):
    """The compiled kernels are missing and bprop runs on the NumPy twin."""


BackendWarning.__module__ = "bprop"  # its public name, in reprs and warnings


def _missing_reason():
    return (
        "bprop's compiled kernels (bprop._kernels) are not available"
        + (f": {_IMPORT_ERROR}" if _IMPORT_ERROR else "")
        + ". Reinstall with a C compiler (pip install --force-reinstall --no-binary bprop bprop, "
        "or pip install . from a checkout) or use the NumPy backend (BPROP_BACKEND=numpy)."
    )


def _resolve(name):
    global _warned
    if name not in BACKENDS:
        raise ValueError(f"unknown bprop backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cython":
        if _compiled is None:
            raise ImportError(_missing_reason())
        return "cython", _compiled
    if name == "numpy":
        return "numpy", _numpy_kernels
    if _compiled is not None:
        return "cython", _compiled
    if not _warned:
        _warned = True
        warnings.warn(_missing_reason() + " Falling back to the NumPy kernels.", BackendWarning, stacklevel=3)
    return "numpy", _numpy_kernels


def backend():
    """Return the name of the active backend: ``"cython"`` or ``"numpy"``."""
    return _name


def set_backend(name):
    """Select the kernels bprop's layers use, for the whole process.

    Parameters
    ----------
    name : {"auto", "cython", "numpy"}
        ``auto`` picks the compiled kernels when they import.

    Raises
    ------
    ImportError
        ``"cython"`` was asked for but the extension is not built.
    ValueError
        Unknown name.
    """
    global kernels, _name, checked
    _name, kernels = _resolve(name)
    checked = kernels if kernels is _compiled else None


@contextlib.contextmanager
def use_backend(name):
    """Context manager: run a block on backend ``name``, then restore the previous one.

    Examples
    --------
    >>> import bprop
    >>> with bprop.use_backend("numpy"):
    ...     bprop.backend()
    'numpy'
    """
    previous = _name
    set_backend(name)
    try:
        yield kernels
    finally:
        set_backend(previous)


def kernels_for(*arrays):
    """The active kernels when all arrays share a kernel dtype (float32/float64, native, aligned); else the NumPy twin."""
    return kernels if kernel_dtype(*arrays) is not None else _numpy_kernels


def compiled_available():
    """True when the compiled extension imported."""
    return _compiled is not None


def compiled_module():
    """The compiled kernel module, or None."""
    return _compiled


set_backend(os.environ.get("BPROP_BACKEND", "auto").strip().lower() or "auto")
