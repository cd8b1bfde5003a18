"""The compiled affine kernels (bprop's own small matrix products) on both loop sets.

The AVX-512 loops work in blocks of 8, 4 and 1 rows and in column blocks of
8 (float64) or 16 (float32) lanes, the last one masked, and half-width when
it is narrow; the shapes below hit every such remainder. Each result is held
to a float64 reference within the rounding bound of its dot products, and
the caller's output must not be written past its end.
"""
import numpy as np
import pytest

import bprop
from bprop import _backend, _numpy_kernels, layers
from conftest import product_bound

pytestmark = pytest.mark.skipif(not _backend.compiled_available(), reason="no compiled kernels in a pure install")

DTYPES = [np.float64, np.float32]
ROWS = [0, 1, 3, 4, 5, 7, 8, 9, 12, 13, 17]
COLS = [1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17, 24, 31, 33]
GUARD = 7.25


def _bound(k, dtype, a, b):
    """conftest's dot-product rounding bound for a and b, plus the smallest normal (results near 0)."""
    return product_bound(k, dtype, np.abs(a), np.abs(b)) + np.finfo(dtype).tiny


def _within(actual, expected, bound, what):
    err = np.abs(actual.astype(np.float64) - expected)
    assert (err <= bound).all(), f"{what}: worst error {err.max()!r} > bound at {np.unravel_index(np.argmax(err - bound), err.shape)}"


def _data(n, d, m, dtype, seed=0):
    r = np.random.default_rng(seed)
    return [r.standard_normal(s).astype(dtype) for s in ((n, d), (d, m), (m,), (n, m))]


def _block_cases(d, dtype, salt):
    """(n, m, x, W, b, dout) for every row count in ROWS and column count in COLS."""
    for n in ROWS:
        for m in COLS:
            yield (n, m, *_data(n, d, m, dtype, seed=n * 100 + m + salt))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("d", [0, 1, 5, 50])
def test_affine_forward_every_block_remainder(simd, dtype, d):
    k = _backend.compiled_module()
    for n, m, x, W, b, _ in _block_cases(d, dtype, 0):
        buf = np.full(n * m + 9, GUARD, dtype)
        out = buf[1:n * m + 1].reshape(n, m)  # one element in: no 64-byte alignment assumed
        assert k.affine_forward(x, W, b, out) is out
        x64, W64 = x.astype(np.float64), W.astype(np.float64)
        ref = x64 @ W64 + b
        what = f"{simd} {np.dtype(dtype).name} affine_forward ({n}, {d}) @ ({d}, {m})"
        bound = _bound(d + 1, dtype, np.hstack([x64, np.ones((n, 1))]), np.vstack([W64, b[None, :]]))
        _within(out, ref, bound, what)
        assert buf[0] == GUARD and (buf[n * m + 1:] == GUARD).all(), f"{what}: wrote outside out"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("d", [0, 1, 5, 50])
def test_affine_backward_every_block_remainder(simd, dtype, d):
    k = _backend.compiled_module()
    for n, m, x, W, _, dout in _block_cases(d, dtype, 7):
        dx, dW, db = k.affine_backward(dout, x, W, True)
        none, dW2, db2 = k.affine_backward(dout, x, W, False)
        what = f"{simd} {np.dtype(dtype).name} affine_backward ({n}, {d}, {m})"
        assert none is None, f"{what}: dx without input_grad"
        x64, W64, g64 = x.astype(np.float64), W.astype(np.float64), dout.astype(np.float64)
        for name, got, shape in (("dx", dx, (n, d)), ("dW", dW, (d, m)), ("db", db, (m,))):
            assert got.shape == shape and got.dtype == dtype and got.flags.c_contiguous, f"{what}: {name}"
        _within(dx, g64 @ W64.T, _bound(m, dtype, g64, W64.T), f"{what}: dx")
        _within(dW, x64.T @ g64, _bound(n, dtype, x64.T, g64), f"{what}: dW")
        _within(db, g64.sum(axis=0), _bound(n, dtype, np.ones((1, n)), g64)[0], f"{what}: db")
        np.testing.assert_array_equal(dW2, dW, err_msg=f"{what}: dW depends on input_grad")
        np.testing.assert_array_equal(db2, db, err_msg=f"{what}: db depends on input_grad")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_affine_kernels_keep_ieee_nan(simd, dtype):
    """0 * inf and NaN terms give NaN, as IEEE arithmetic (and np.matmul) do; finite entries stay finite."""
    k = _backend.compiled_module()
    x, W, b, dout = _data(9, 6, 10, dtype)
    x[2, 3] = np.nan
    x[4, 1] = 0.0
    W[1, 7] = np.inf
    out = k.affine_forward(x, W, b, None)
    with np.errstate(all="ignore"):
        expected = np.matmul(x, W) + b
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    dx, dW, _ = k.affine_backward(dout, x, W, True)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(np.isnan(dx), np.isnan(np.matmul(dout, W.T)))
        np.testing.assert_array_equal(np.isnan(dW), np.isnan(np.matmul(x.T, dout)))


def test_affine_forward_refuses_an_output_that_overlaps_an_input():
    k = _backend.compiled_module()
    x = np.ones((4, 4))
    with pytest.raises(ValueError, match="affine_forward: out overlaps x"):
        k.affine_forward(x, np.ones((4, 4)), np.ones(4), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_twin_matches_the_kernels(dtype):
    k = _backend.compiled_module()
    x, W, b, dout = _data(100, 50, 10, dtype)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    bound = _bound(51, dtype, np.hstack([x64, np.ones((100, 1))]), np.vstack([W64, b[None, :]]))
    _within(k.affine_forward(x, W, b, None), _numpy_kernels.affine_forward(x, W, b, None), bound, "forward")
    for got, twin, bound in zip(k.affine_backward(dout, x, W, True), _numpy_kernels.affine_backward(dout, x, W, True),
                                (_bound(10, dtype, dout, W.T), _bound(100, dtype, x.T, dout), _bound(100, dtype, np.ones((1, 100)), dout)[0])):
        assert got.dtype == twin.dtype == dtype
        _within(got, twin, bound, "backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_layer_routes_the_books_small_product_to_the_kernels(simd, dtype):
    """At (100, 50, 10) the layer's results are the kernels' on the AVX-512 loops, BLAS's
    (np.dot, then the bias) otherwise and for products above the size limit."""
    k = _backend.compiled_module()
    with bprop.use_backend("cython"):
        for n, d, m in ((100, 50, 10), (100, 784, 50)):
            x, W, b, dout = _data(n, d, m, dtype)
            layer = bprop.Affine(W, b)
            out = layer.forward(x)
            dx = layer.backward(dout)
            small = simd == "avx512" and n * d * m <= layers._SMALL_GEMM
            if small:
                exp_out = k.affine_forward(x, W, b, None)
                exp_dx, exp_dW, exp_db = k.affine_backward(dout, x, W, True)
            else:
                exp_out = np.dot(x, W) + b
                exp_dx, exp_dW = np.dot(dout, W.T), np.dot(x.T, dout)
                exp_db = layer.db  # column sums are checked in test_differential
            for name, got, exp in (("out", out, exp_out), ("dx", dx, exp_dx), ("dW", layer.dW, exp_dW), ("db", layer.db, exp_db)):
                np.testing.assert_array_equal(got, exp, err_msg=f"({n}, {d}, {m}) {name}, small={small}")
