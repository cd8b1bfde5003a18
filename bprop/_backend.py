"""The one place that decides which kernels bprop's layers call.

``BPROP_BACKEND=auto|cython|numpy`` picks at import (auto: compiled when it
imports, else the NumPy twin). ``set_backend`` and ``use_backend`` switch at
run time; the choice is process-wide.

Whether a missing compiled module is news depends on how bprop was built,
which ``setup.py`` records in the generated module ``bprop/_build.py``:

- ``PURE = True`` (``BPROP_NO_EXTENSIONS=1``): the NumPy twin on purpose,
  silently;
- ``PURE = False``: a broken build, which warns (:class:`BackendWarning`) and
  says how to rebuild;
- no record: a source tree that was never built (the warning names the
  folder and ``pip install -e .``), or an install from elsewhere.
"""
import contextlib
import importlib.machinery
import os
import warnings
from pathlib import Path

from . import _numpy_entry, _numpy_kernels
from ._validate import kernel_dtype

try:
    from . import _kernels as _compiled
    _IMPORT_ERROR = None
except ImportError as exc:  # pure install (BPROP_NO_EXTENSIONS=1), unbuilt checkout or broken build
    _compiled = None
    _IMPORT_ERROR = exc

try:
    from . import _build
except ImportError:  # a plain checkout, or a build by a setup.py that wrote no record
    _build = None

_PACKAGE_DIR = Path(__file__).resolve().parent
#: The package is a source tree (a checkout, or an editable install of one)
#: when the Cython source sits beside it: wheels never ship it.
SOURCE_TREE = (_PACKAGE_DIR / "_kernels.pyx").is_file()
#: The build said it is pure (BPROP_NO_EXTENSIONS=1): the NumPy twin is the intended backend.
PURE_BUILD = bool(getattr(_build, "PURE", False))
#: The compiler recorded by the build, or None (pure build, or no record).
COMPILER = getattr(_build, "COMPILER", None)

BACKENDS = ("auto", "cython", "numpy")

#: The active kernel module; layers read it on every call.
kernels = _numpy_kernels
#: The kernels layers hand plain arrays to straight away: the compiled
#: module, or on the NumPy backend the twin behind the same entry checks
#: (bprop._numpy_entry). Either refuses (KernelArgumentError) anything the
#: compiled kernels cannot take, which then goes through the full checks.
checked = _numpy_entry
_name = "numpy"
_warned = False


class BackendWarning(UserWarning):
    """The kernels bprop runs on are not the ones its build promised (or BPROP_SIMD asked for)."""


def _compiled_files():
    return sorted(p.name for suffix in importlib.machinery.EXTENSION_SUFFIXES
                  for p in _PACKAGE_DIR.glob("_kernels" + suffix))


def build_kind():
    """How this bprop was built, as ``bprop info`` shows it (one line)."""
    if PURE_BUILD:
        return "pure build (BPROP_NO_EXTENSIONS=1)"
    where = f" in the source tree {_PACKAGE_DIR.parent}" if SOURCE_TREE else ""
    if _compiled is not None:
        return "compiled" + where
    if SOURCE_TREE and _build is None and not _compiled_files():
        return f"not built: the source tree {_PACKAGE_DIR.parent}"
    return "broken: compiled kernels missing" + where


BackendWarning.__module__ = "bprop"  # its public name, in reprs and warnings


def _missing_reason():
    """Why the compiled kernels are not there, and the exact remedy, in one paragraph."""
    if PURE_BUILD:
        return ("this bprop is a pure build (BPROP_NO_EXTENSIONS=1), which has no compiled kernels; "
                "to get them, reinstall from the checkout without BPROP_NO_EXTENSIONS "
                "(pip install . there), or use the NumPy backend (BPROP_BACKEND=numpy)")
    files = _compiled_files()
    # With no file there, Python's ImportError blames "a circular import",
    # which is not the cause; name the file instead.
    cause = (f"{files[0]} does not import ({_IMPORT_ERROR})" if files
             else "there is no compiled bprop/_kernels*.so")
    if SOURCE_TREE:
        return (f"bprop's compiled kernels are not available: bprop is imported from the source tree "
                f"{_PACKAGE_DIR.parent}, where {cause}; run `pip install -e .` there to build them, "
                "or run from another folder to use the installed bprop "
                "(or set BPROP_BACKEND=numpy to use the NumPy kernels)")
    built = "was built with them, but" if _build is not None else "has no record of how it was built, and"
    return (f"bprop's compiled kernels are not available: this bprop at {_PACKAGE_DIR} {built} {cause}; "
            "reinstall it from its checkout (pip install --force-reinstall . there), "
            "or install the pure package on purpose (BPROP_NO_EXTENSIONS=1 pip install .), "
            "or use the NumPy backend (BPROP_BACKEND=numpy)")


def missing_reason():
    """Why ``BPROP_BACKEND=cython`` cannot run here (None when it can)."""
    return None if _compiled is not None else _missing_reason()


def _resolve(name):
    global _warned
    if name not in BACKENDS:
        raise ValueError(f"unknown bprop backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "cython":
        if _compiled is None:
            raise ImportError(_missing_reason() + ".")
        return "cython", _compiled
    if name == "numpy":
        return "numpy", _numpy_kernels
    if _compiled is not None:
        return "cython", _compiled
    if not _warned and not PURE_BUILD:
        _warned = True
        warnings.warn(_missing_reason() + ". Running on the NumPy kernels.", BackendWarning, stacklevel=3)
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
    checked = kernels if kernels is _compiled else _numpy_entry


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


#: The values BPROP_SIMD takes (the compiled module's set_simd names): the
#: hand-written AVX-512 loops, or the portable ones at the best level this
#: CPU has ("portable") or at a given level.
SIMD_PATHS = ("auto", "avx512", "portable", "x86-64-v4", "x86-64-v3", "baseline")


def _apply_simd_environment(module):
    """Select the loops BPROP_SIMD asks for on ``module`` (the compiled kernels, or None).

    A tuning switch should not stop the program: an unknown value, or
    ``avx512`` (or a level) where it cannot run, warns once and runs what
    ``auto`` would.
    """
    raw = os.environ.get("BPROP_SIMD", "")
    name = raw.strip().lower() or "auto"
    if name not in SIMD_PATHS:
        warnings.warn(f"BPROP_SIMD={raw!r} is not one of {', '.join(SIMD_PATHS)}; ignoring it (using auto)",
                      BackendWarning, stacklevel=2)
        name = "auto"
    if module is None:
        return
    try:
        module.set_simd(name)
    except ValueError:  # avx512 or a level asked for, and this CPU or build has not got it
        module.set_simd("auto")
        what = "AVX-512" if name == "avx512" else name
        warnings.warn(f"BPROP_SIMD={raw.strip()}, but this CPU (or this build) cannot run the {what} loops; "
                      f"using the {module.get_simd()} loops", BackendWarning, stacklevel=2)


_apply_simd_environment(_compiled)
set_backend(os.environ.get("BPROP_BACKEND", "auto").strip().lower() or "auto")
