"""Load a module of the book's own repository for comparison, without letting it stay importable.

The benchmarks' book columns run the book's code itself, from a clone of its
repository that the user names (``BPROP_BOOK_DIR``); bprop never ships it.
The book's modules import each other as ``common.*`` and edit ``sys.path``;
:func:`load` gives each file a private module name, puts the book's root
(and the file's folder, as running a chapter script would) first on the
path only while it runs, and afterwards removes every module that loading
added and restores ``sys.path``, so a later ``import common`` never finds
the book's package by accident.
"""
import importlib.util
import os
import sys
from pathlib import Path

__all__ = ["book_dir", "load"]


def book_dir(explicit=None):
    """The book's repository: ``explicit``, else ``$BPROP_BOOK_DIR``; None when neither holds ``common/layers.py``."""
    where = explicit or os.environ.get("BPROP_BOOK_DIR")
    if not where or not (Path(where) / "common" / "layers.py").is_file():
        return None
    return Path(where)


def load(root, relpath, aliases=None):
    """The book's file ``root/relpath`` (e.g. ``"ch08/deep_convnet.py"``) as a fresh module.

    Parameters
    ----------
    root : path-like
        The book's repository.
    relpath : str
        The file, relative to ``root``, with ``/`` separators.
    aliases : dict, optional
        Modules placed in ``sys.modules`` while the file runs (e.g.
        ``{"common.layers": ...}`` to run the book's network on other
        layers); removed again afterwards.
    """
    path = Path(root) / relpath
    saved_path = list(sys.path)
    before = dict(sys.modules)
    # A chapter script's folder is on the path when it runs; a package's
    # (common/) is not: its modules import each other as common.*.
    folder = [] if (path.parent / "__init__.py").is_file() else [str(path.parent)]
    sys.path[:0] = [str(Path(root))] + folder
    sys.modules.update(aliases or {})
    try:
        spec = importlib.util.spec_from_file_location("_book_" + relpath.replace("/", "_")[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved_path
        for name in [n for n in sys.modules if n not in before or sys.modules[n] is not before[n]]:
            del sys.modules[name]
        sys.modules.update(before)
    return module
