"""The book's own chapter-7 code, loaded for comparison (never part of bprop).

The book's repository sits beside the project (``../shared/book``) in CI and
on the development machine; elsewhere the tests that need it skip, saying
where they looked. They are loaded as the benchmarks load them
(``bprop._book_code``), so the book's ``common`` package never stays
importable for other tests.
"""
import functools
import types
from pathlib import Path

import pytest

from bprop import _bench_conv

BOOK_DIR = Path(__file__).resolve().parents[2] / "shared" / "book"


def require_book():
    if not (BOOK_DIR / "common" / "layers.py").is_file():
        pytest.skip(f"the book's code is not at {BOOK_DIR} (it sits beside the project in CI)")


@functools.lru_cache(maxsize=None)
def _book():
    layers, util, optimizer, convnet = _bench_conv.book_modules(BOOK_DIR)
    return types.SimpleNamespace(layers=layers, util=util, optimizer=optimizer, simple_convnet=convnet)


def book():
    """The book's ``common.layers``, ``common.util``, ``common.optimizer`` and ``ch07/simple_convnet``."""
    require_book()
    return _book()


def book_convnet_on_bprop():
    """The book's unmodified ``ch07/simple_convnet.py`` module with ``common.layers`` resolving to
    bprop's layers (and ``common.gradient`` to bprop's)."""
    require_book()
    return _bench_conv.book_convnet_on_bprop(BOOK_DIR)
