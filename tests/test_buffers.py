"""Large results are recycled only when the caller no longer holds them."""
import numpy as np
import pytest

import bprop
from bprop._buffers import BN_REUSE_MIN_BYTES, REUSE_MIN_BYTES

SHAPE = (REUSE_MIN_BYTES // 8 // 64 + 1, 64)  # just above the reuse threshold in float64


def _addr(a):
    return a.__array_interface__["data"][0]


@pytest.mark.parametrize("make", [bprop.Relu, bprop.Sigmoid], ids=["Relu", "Sigmoid"])
def test_held_results_are_never_overwritten(backend, make):
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    layer = make()
    first = layer.forward(x1)
    kept = first.copy()
    view = layer.forward(x2)[:10]          # only a view survives this call
    third = layer.forward(x1)
    np.testing.assert_array_equal(first, kept)  # still held: must be intact
    assert not np.shares_memory(third, first)
    assert not np.shares_memory(third, view)
    d1 = layer.backward(x2)
    d1_kept = d1.copy()
    layer.backward(x1)
    np.testing.assert_array_equal(d1, d1_kept)


@pytest.mark.parametrize("make", [bprop.Relu, bprop.Sigmoid], ids=["Relu", "Sigmoid"])
def test_dropped_results_are_reused(backend, make):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(SHAPE)
    layer = make()
    addr = _addr(layer.forward(x))          # result dropped at once
    out = layer.forward(x * 2)
    assert _addr(out) == addr
    expected = make().forward(x * 2)
    np.testing.assert_array_equal(out, expected)
    del out
    d = _addr(layer.backward(x))
    assert _addr(layer.backward(x)) == d


def test_relu_mask_attribute_held_elsewhere_is_not_reused(backend):
    x = np.random.default_rng(2).standard_normal(SHAPE)
    layer = bprop.Relu()
    layer.forward(x)
    mask = layer.mask                       # the caller keeps the book attribute
    kept = mask.copy()
    layer.forward(-x)
    np.testing.assert_array_equal(mask, kept)
    assert not np.shares_memory(mask, layer.mask)


def test_small_results_are_not_kept(backend):
    # Below the threshold malloc recycles memory itself; the layer keeps nothing.
    layer = bprop.Relu()
    layer.forward(np.ones((10, 10)))
    layer.backward(np.ones((10, 10)))
    assert layer._out._last is None and layer._mask._last is None and layer._dx._last is None


def test_affine_dx_is_reused_only_once_dropped(backend):
    # Affine recycles dx from 128 KiB (a fresh one page-faulted inside BLAS).
    rng = np.random.default_rng(3)
    W, b = rng.standard_normal((784, 50)), rng.standard_normal(50)
    x, d1, d2 = rng.standard_normal((100, 784)), rng.standard_normal((100, 50)), rng.standard_normal((100, 50))
    layer = bprop.Affine(W, b)
    layer.forward(x)
    addr = _addr(layer.backward(d1))        # dropped at once
    dx2 = layer.backward(d2)
    assert _addr(dx2) == addr
    np.testing.assert_allclose(dx2, d2 @ W.T, rtol=1e-12, atol=1e-12)
    kept = dx2.copy()
    dx3 = layer.backward(d1)                # dx2 is still held: a new array
    assert not np.shares_memory(dx3, dx2)
    np.testing.assert_array_equal(dx2, kept)
    np.testing.assert_allclose(dx3, d1 @ W.T, rtol=1e-12, atol=1e-12)


def test_batchnorm_reuses_out_xc_and_dx_only_once_dropped(backend):
    # From BN_REUSE_MIN_BYTES; xc counts as dropped when only the layer's attribute holds it.
    rng = np.random.default_rng(4)
    n, d = BN_REUSE_MIN_BYTES // 8 // 64 + 1, 64
    x, dout = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    layer = bprop.BatchNormalization(np.ones(d), np.zeros(d))
    out_addr, xc_addr = _addr(layer.forward(x)), _addr(layer.xc)
    dx_addr = _addr(layer.backward(dout))
    assert (_addr(layer.forward(x * 2)), _addr(layer.xc)) == (out_addr, xc_addr)
    assert _addr(layer.backward(dout)) == dx_addr
    fresh = bprop.BatchNormalization(np.ones(d), np.zeros(d))
    np.testing.assert_array_equal(fresh.forward(x * 2), layer.forward(x * 2))
    xc, out = layer.xc, layer.forward(x)    # the caller keeps xc and the result
    xc_kept, out_kept = xc.copy(), out.copy()
    layer.forward(-x)
    np.testing.assert_array_equal(xc, xc_kept)
    np.testing.assert_array_equal(out, out_kept)
    assert not np.shares_memory(layer.xc, xc)


def test_small_batchnorm_arrays_are_not_kept(backend):
    layer = bprop.BatchNormalization(np.ones(10), np.zeros(10))
    layer.forward(np.arange(100.0).reshape(10, 10))
    layer.backward(np.ones((10, 10)))
    assert layer._out._last is None and layer._xc._last is None and layer._dx._last is None


def test_batchnorm_results_keep_numpys_dtype_above_the_reuse_threshold(backend):
    # Reused memory must not change a result's dtype: big-endian input gives native results,
    # as NumPy's arithmetic (the book's) does, at any size.
    rng = np.random.default_rng(5)
    for n in (3, BN_REUSE_MIN_BYTES // 8 // 64 + 1):
        x, dout = rng.standard_normal((n, 64)).astype(">f8"), rng.standard_normal((n, 64)).astype(">f8")
        layer = bprop.BatchNormalization(np.ones(64, ">f8"), np.zeros(64, ">f8"))
        for _ in range(2):
            out, dx = layer.forward(x), layer.backward(dout)
            assert out.dtype == dx.dtype == layer.xc.dtype == np.dtype(np.float64) and out.dtype.isnative
