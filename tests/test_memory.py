"""A compiled layer call allocates only its results (tracemalloc).

NumPy reports its array buffers to tracemalloc, so the peak traced memory
during one call, minus what was traced before it, is everything the call
allocated, temporaries included. On the compiled backend that must be the
results alone (Relu forward: out + mask; Sigmoid forward: out; Affine
forward: out; SoftmaxWithLoss forward: y; every backward: dx, and Affine's
dW and db) plus a little for Python objects (memoryviews, shapes, the loss
scalar, the label check's N-sized temporaries). A temporary the size of the
data, even a bool one, is 1 MB at (1000, 1000): far above that slack. The
NumPy backend, like the book's code, makes temporaries and is not held to
this. The last test checks that the method sees temporaries at all.
"""
import tracemalloc

import numpy as np
import pytest

import bprop
from bprop import book
from conftest import require_compiled

#: Bytes allowed above the results: Python objects and N-sized (not N*C) temporaries.
SLACK = 8 * 1024
SHAPE = (1000, 1000)
DTYPES = (np.float64, np.float32)


@pytest.fixture
def cython():
    require_compiled()
    with bprop.use_backend("cython"):
        yield


def allocated(call):
    """(bytes allocated at peak during ``call()``, its result); one warm-up call first."""
    call()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - before, result


def data(dtype, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_only(extra, *results):
    size = sum(r.nbytes for r in results)
    assert extra <= size + SLACK, (
        f"allocated {extra} bytes; the results take {size} (+{SLACK} slack): {extra - size} bytes of temporaries")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu(cython, dtype):
    layer, x, dout = bprop.Relu(), data(dtype), data(dtype, seed=1)
    extra, out = allocated(lambda: layer.forward(x))
    assert_only(extra, out, layer.mask)
    extra, dx = allocated(lambda: layer.backward(dout))
    assert_only(extra, dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid(cython, dtype):
    layer, x, dout = bprop.Sigmoid(), data(dtype), data(dtype, seed=1)
    extra, out = allocated(lambda: layer.forward(x))
    assert_only(extra, out)
    extra, dx = allocated(lambda: layer.backward(dout))
    assert_only(extra, dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine(cython, dtype):
    n, d, m = 1000, 1000, 500
    layer = bprop.Affine(data(dtype, (d, m), 2), data(dtype, (m,), 3))
    x, dout = data(dtype, (n, d)), data(dtype, (n, m), 1)
    extra, out = allocated(lambda: layer.forward(x))
    assert_only(extra, out)
    extra, dx = allocated(lambda: layer.backward(dout))
    assert_only(extra, dx, layer.dW, layer.db)


@pytest.mark.parametrize("labels", ["labels", "one-hot"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_with_loss(cython, dtype, labels):
    n, c = SHAPE
    layer, x = bprop.SoftmaxWithLoss(), data(dtype)
    t = np.random.default_rng(1).integers(0, c, n)
    if labels == "one-hot":
        t = np.eye(c, dtype=dtype)[t]
    extra, _ = allocated(lambda: layer.forward(x, t))
    assert_only(extra, layer.y)
    extra, dx = allocated(lambda: layer.backward())
    assert_only(extra, dx)


def test_the_measurement_sees_temporaries():
    """The book's Sigmoid makes temporaries (-x, exp, 1 + ...): the method must see them."""
    layer, x = book.Sigmoid(), data(np.float64)
    extra, out = allocated(lambda: layer.forward(x))
    assert extra >= 1.9 * out.nbytes
