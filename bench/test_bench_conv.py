"""Chapter-7 benchmarks (pytest-benchmark): Convolution, Pooling, im2col/col2im, the SimpleConvNet step.

Run from the repository root::

    pytest bench/test_bench_conv.py --benchmark-only --benchmark-group-by=group

One group per case (the rows of :data:`bprop._bench_conv.CASES`), with
``book`` (the book's own code, from a clone of its repository: ``$BPROP_BOOK_DIR``,
else ``../shared/book`` beside the project), ``bprop`` and ``torch`` side by
side; an implementation that is not available is skipped with the reason.
Before timing, bprop's and the book's results are compared once per case.
Everything runs on one thread (``python -m bprop._bench_conv`` prints the
same comparison as a table of medians).
"""
import numpy as np
import pytest
from conftest import BOOK_DIR, CHAPTER_IMPLS

from bprop import _bench_conv as C


@pytest.fixture(scope="module")
def calls():
    with C.one_thread():
        yield C.make_calls(BOOK_DIR)


@pytest.mark.parametrize("case", C.CASES, ids=[f"{c}-{d}" for c, d in C.CASES])
@pytest.mark.parametrize("impl", CHAPTER_IMPLS)
def test_conv(time_chapter_case, calls, case, impl):
    time_chapter_case(calls, case, impl, C.book_modules(BOOK_DIR) is not None)


def test_bprop_agrees_with_the_book_on_the_timed_layers():
    book = C.book_modules(BOOK_DIR)
    if book is None:
        pytest.skip(f"the book's code is not at {BOOK_DIR}")
    import bprop

    d = C._rng_data()
    ref, ours = book[0].Pooling(2, 2, 2), bprop.Pooling(2, 2, 2)
    np.testing.assert_array_equal(ours.forward(d["pool_x"]), ref.forward(d["pool_x"]))
    np.testing.assert_array_equal(ours.backward(d["pool_dout"]), ref.backward(d["pool_dout"]))
    ref, ours = book[0].Convolution(d["W"], d["b"]), bprop.Convolution(d["W"], d["b"])
    np.testing.assert_allclose(ours.forward(d["x"]), ref.forward(d["x"]), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours.backward(d["conv_dout"]), ref.backward(d["conv_dout"]), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours.dW, ref.dW, rtol=1e-7, atol=1e-9)
