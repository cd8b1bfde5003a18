"""Affine's BLAS fast path: products on np.dot, the bias and column sums on the kernels.

Where no small-product loop runs (CPUs without AVX2, a baseline-only build,
the NumPy backend), plain float arrays skip the checked path: its checks,
conversions and errstate block cost more than the book's whole Affine call
at (100, 50, 10). These tests hold that path to the book's arithmetic bit for
bit, to IEEE results without warnings, and check that it is the one taken.
"""
import warnings

import numpy as np
import pytest

import bprop
from bprop import layers


@pytest.fixture
def blas_only(monkeypatch):
    """No small-product loops: Affine's fast calls go to BLAS, and each np.dot is counted."""
    monkeypatch.setattr(layers, "_SMALL_GEMM", {})
    calls = []
    dot = layers._ieee_dot

    def counted(a, b):
        calls.append((a.shape, b.shape))
        return dot(a, b)

    monkeypatch.setattr(layers, "_ieee_dot", counted)
    return calls


def _data(dtype, n=100, d=50, m=10, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in ((n, d), (d, m), (m,), (n, m))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_books_arithmetic_bit_for_bit(backend, blas_only, dtype):
    x, W, b, dout = _data(dtype)
    layer = bprop.Affine(W, b)
    out = layer.forward(x)
    dx = layer.backward(dout)
    assert len(blas_only) == 3, "the fast path was not taken"
    np.testing.assert_array_equal(out, np.dot(x, W) + b)
    np.testing.assert_array_equal(dx, np.dot(dout, W.T))
    np.testing.assert_array_equal(layer.dW, np.dot(x.T, dout))
    np.testing.assert_array_equal(layer.db, np.sum(dout, axis=0))
    assert out.dtype == dx.dtype == layer.dW.dtype == layer.db.dtype == dtype
    assert layer.x is x and layer.original_x_shape == x.shape


def test_ieee_results_without_warnings(backend, blas_only):
    x, W, b, dout = _data(np.float64)
    x[0, 0], x[1, 1], W[2, 3] = np.inf, np.nan, -np.inf
    dout[0, 0] = 1e308
    layer = bprop.Affine(W, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = layer.forward(x)
        layer.backward(dout)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(out, np.dot(x, W) + b)
        np.testing.assert_array_equal(layer.dW, np.dot(x.T, dout))
    assert len(blas_only) == 3


#: How many of a forward+backward's three products each case sends down the fast path:
#: np.dot's outer-product path (an inner size of 1: x with one feature forward, one
#: sample for dW) gives 0 for 0 * NaN, so those products take matmul on the checked path.
FAST_PRODUCTS = {"mixed dtypes": 0, "float16": 0, "inner size 1": 2, "one sample": 1, "wrong dout": 1}


@pytest.mark.parametrize("case", FAST_PRODUCTS)
def test_what_the_fast_path_leaves_to_the_checked_one(backend, blas_only, case):
    x, W, b, dout = _data(np.float64, d=1 if case == "inner size 1" else 50, n=1 if case == "one sample" else 100)
    if case == "mixed dtypes":
        x = x.astype(np.float32)
    if case == "float16":
        x, W, b, dout = (a.astype(np.float16) for a in (x, W, b, dout))
    x[0, 0] = np.nan
    W[0, 0] = 0.0
    layer = bprop.Affine(W, b)
    out = layer.forward(x)
    if case == "wrong dout":
        with pytest.raises(ValueError, match="dout"):
            layer.backward(dout[:, :5])
    else:
        dx = layer.backward(dout)
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(dx, np.matmul(dout, W.T))
            np.testing.assert_array_equal(layer.dW, np.matmul(x.T.astype(layer.dW.dtype), dout.astype(layer.dW.dtype)))
    assert len(blas_only) == FAST_PRODUCTS[case]
    assert out.dtype == np.result_type(x, W, b)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(out, np.matmul(x.astype(out.dtype), W.astype(out.dtype)) + b)
