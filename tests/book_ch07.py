"""The book's own chapter-7 code, loaded for comparison (never part of bprop).

The book's repository sits beside the project (``../shared/book``) in CI and
on the development machine; elsewhere the tests that need it skip, saying
where they looked. The book's modules import each other as ``common.*``;
they are loaded with that name only while importing, then taken out of
``sys.modules`` again, so no other test sees them.
"""
import functools
import importlib
import sys
import types
from pathlib import Path

import pytest

BOOK_DIR = Path(__file__).resolve().parents[2] / "shared" / "book"

_NAMES = ("common", "dataset", "simple_convnet")


def _ours(name):
    return name in _NAMES or any(name.startswith(n + ".") for n in _NAMES)


def _isolated_import(modules, path, aliases=None):
    """Import ``modules`` with ``path`` first on sys.path (and ``aliases`` in sys.modules),
    then restore sys.modules and sys.path. Returns the imported modules."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _ours(k)}
    old_path = list(sys.path)
    sys.path[:0] = [str(p) for p in path]
    sys.modules.update(aliases or {})
    try:
        return [importlib.import_module(m) for m in modules]
    finally:
        for k in [k for k in sys.modules if _ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
        sys.path[:] = old_path


def require_book():
    if not (BOOK_DIR / "common" / "layers.py").is_file():
        pytest.skip(f"the book's code is not at {BOOK_DIR} (it sits beside the project in CI)")


@functools.lru_cache(maxsize=None)
def _book():
    layers, util, optimizer, convnet = _isolated_import(
        ["common.layers", "common.util", "common.optimizer", "simple_convnet"], [BOOK_DIR, BOOK_DIR / "ch07"]
    )
    return types.SimpleNamespace(layers=layers, util=util, optimizer=optimizer, simple_convnet=convnet)


def book():
    """The book's ``common.layers``, ``common.util``, ``common.optimizer`` and ``ch07/simple_convnet``."""
    require_book()
    return _book()


def book_convnet_on_bprop():
    """The book's unmodified ``ch07/simple_convnet.py`` module with ``common.layers`` resolving to
    bprop's layers (and ``common.gradient`` to bprop's)."""
    require_book()
    import bprop.conv
    import bprop.gradient
    import bprop.layers

    layers = types.ModuleType("common.layers")
    for module in (bprop.layers, bprop.conv):
        for name in module.__all__:
            setattr(layers, name, getattr(module, name))
    common = types.ModuleType("common")
    common.__path__ = []
    common.layers, common.gradient = layers, bprop.gradient
    aliases = {"common": common, "common.layers": layers, "common.gradient": bprop.gradient}
    (convnet,) = _isolated_import(["simple_convnet"], [BOOK_DIR / "ch07"], aliases)
    return convnet
