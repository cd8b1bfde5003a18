"""Reading and writing parameter files (the book's ``params.pkl``) without running code.

The book saves parameters with ``pickle.dump`` and loads them with
``pickle.load``, and ``pickle.load`` on a file from elsewhere runs whatever
the file asks for. :func:`load` reads the same files through an unpickler
that resolves only the few NumPy callables that rebuild an array, and then
accepts only a dict of names to numeric arrays; anything else is refused
with :class:`UnsafeParamsError` before it can run.
"""
import io
import pickle

import numpy as np

__all__ = ["UnsafeParamsError", "load", "save"]

#: The globals a pickled dict of NumPy arrays refers to (NumPy 1.x and 2.x
#: module names; protocol 5 rebuilds arrays through _frombuffer, protocol 2
#: writes their bytes through _codecs.encode and bytes, pure data transforms).
_ALLOWED = {
    ("_codecs", "encode"),
    ("builtins", "bytes"),
    ("__builtin__", "bytes"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class UnsafeParamsError(pickle.UnpicklingError):
    """A parameter file holds something other than a dict of names to numeric NumPy arrays."""


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file, source):
        super().__init__(file)
        self._source = source

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafeParamsError(
            f"{self._source}: refusing to load {module}.{name}: a parameter file may hold only a dict "
            "of names to NumPy arrays (loading it with pickle.load would run that code)"
        )

    def persistent_load(self, pid):
        raise UnsafeParamsError(f"{self._source}: refusing a persistent reference ({pid!r}) in a parameter file")


def load(file_name):
    """Read a dict of names to NumPy arrays pickled by the book's ``save_params`` (or :func:`save`).

    Parameters
    ----------
    file_name : str or path-like
        The pickle file.

    Returns
    -------
    dict of str to numpy.ndarray

    Raises
    ------
    UnsafeParamsError
        The file refers to any callable other than NumPy's array
        reconstruction, or does not hold a dict of names to numeric arrays.
        Nothing in the file is run.
    """
    with open(file_name, "rb") as f:
        data = f.read()
    try:
        obj = _ArraysOnly(io.BytesIO(data), str(file_name)).load()
    except UnsafeParamsError:
        raise
    except Exception as exc:  # truncated or malformed: say which file
        raise UnsafeParamsError(f"{file_name}: not a readable parameter file ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise UnsafeParamsError(f"{file_name}: expected a dict of names to arrays, got {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise UnsafeParamsError(f"{file_name}: parameter names must be strings, got {key!r}")
        if type(value) is not np.ndarray or value.dtype.kind not in "biuf":
            what = f"an array of dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
            raise UnsafeParamsError(f"{file_name}: parameter {key!r} must be a numeric NumPy array, got {what}")
    return obj


def save(params, file_name):
    """Write ``params`` (names to arrays) as a plain pickled dict, which the book's
    ``load_params`` (``pickle.load``) reads, as does :func:`load`."""
    plain = {str(k): np.asarray(v) for k, v in params.items()}
    with open(file_name, "wb") as f:
        pickle.dump(plain, f, protocol=4)
