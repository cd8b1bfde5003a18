"""The compiled affine kernels (bprop's own small matrix products) on every loop set.

Three loop sets compute the products: the AVX-512 loops (blocks of 8, 4 and 1
rows by column blocks of 8 float64 or 16 float32 lanes, the last one masked,
half-width when narrow), the AVX2 loops (blocks of 6 rows by two registers,
12 rows by one for a narrow last block, then 4, 2 and 1 rows; registers of 4
float64 or 8 float32 lanes, the last one masked) and the plain portable loop.
The shapes below hit every such remainder of each. Each result is held to a
float64 reference within the rounding bound of its dot products, and the
caller's output must not be written past its end.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import bprop
from bprop import _backend, _numpy_kernels, layers
from conftest import product_bound

pytestmark = pytest.mark.skipif(not _backend.compiled_available(), reason="no compiled kernels in a pure install")

DTYPES = [np.float64, np.float32]
ROWS = list(range(26))
COLS = list(range(1, 18)) + [24, 31, 33]
GUARD = 7.25
LOOPS = ["avx512", "avx2", "portable"]


@pytest.fixture(params=LOOPS)
def loops(request):
    """Run the products on the AVX-512, then the AVX2, then the plain portable loop (skip where one cannot run)."""
    k = _backend.compiled_module()
    simd, avx2 = k.get_simd(), k._avx2_products()
    try:
        try:
            k.set_simd("avx512" if request.param == "avx512" else "portable")
        except ValueError as exc:
            pytest.skip(f"the avx512 loops cannot run here: {exc}")
        k._avx2_products(request.param == "avx2")
        if k.small_product_loops() != request.param:
            pytest.skip(f"the {request.param} loops cannot run here (this CPU or this build has none)")
        yield request.param
    finally:
        k.set_simd(simd)
        k._avx2_products(avx2)


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
def test_affine_forward_every_block_remainder(loops, dtype, d):
    k = _backend.compiled_module()
    for n, m, x, W, b, _ in _block_cases(d, dtype, 0):
        buf = np.full(n * m + 9, GUARD, dtype)
        out = buf[1:n * m + 1].reshape(n, m)  # one element in: no 64-byte alignment assumed
        assert k.affine_forward(x, W, b, out) is out
        x64, W64 = x.astype(np.float64), W.astype(np.float64)
        ref = x64 @ W64 + b
        what = f"{loops} {np.dtype(dtype).name} affine_forward ({n}, {d}) @ ({d}, {m})"
        bound = _bound(d + 1, dtype, np.hstack([x64, np.ones((n, 1))]), np.vstack([W64, b[None, :]]))
        _within(out, ref, bound, what)
        assert buf[0] == GUARD and (buf[n * m + 1:] == GUARD).all(), f"{what}: wrote outside out"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("d", [0, 1, 5, 50])
def test_affine_backward_every_block_remainder(loops, dtype, d):
    k = _backend.compiled_module()
    for n, m, x, W, _, dout in _block_cases(d, dtype, 7):
        dx, dW, db = k.affine_backward(dout, x, W, True)
        none, dW2, db2 = k.affine_backward(dout, x, W, False)
        what = f"{loops} {np.dtype(dtype).name} affine_backward ({n}, {d}, {m})"
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
def test_affine_kernels_keep_ieee_nan(loops, dtype):
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


def test_affine_forward_refuses_an_output_that_overlaps_an_input(loops):
    k = _backend.compiled_module()
    x, W, b = np.ones((4, 4)), np.ones((4, 4)), np.ones(4)
    before = x.copy()
    with pytest.raises(ValueError, match="affine_forward: out overlaps x"):
        k.affine_forward(x, W, b, x)
    buf = np.zeros(20)
    with pytest.raises(ValueError, match="affine_forward: out overlaps W"):
        k.affine_forward(x, buf[4:].reshape(4, 4), b, buf[:16].reshape(4, 4))
    with pytest.raises(ValueError, match="affine_forward: out overlaps b"):
        k.affine_forward(x, W, buf[12:16], buf[:16].reshape(4, 4))
    np.testing.assert_array_equal(x, before)
    assert not buf.any(), "a refused call wrote its output"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_avx2_and_avx512_loops_give_the_same_bits(dtype):
    """Both sum each element as one FMA chain over k in order from zero, then add the bias:
    their results are the same to the bit, whatever the blocking."""
    k = _backend.compiled_module()
    simd, avx2 = k.get_simd(), k._avx2_products()
    try:
        results = {}
        for name in ("avx512", "avx2"):
            try:
                k.set_simd("avx512" if name == "avx512" else "portable")
            except ValueError as exc:
                pytest.skip(f"the avx512 loops cannot run here: {exc}")
            k._avx2_products(True)
            if k.small_product_loops() != name:
                pytest.skip(f"the {name} loops cannot run here")
            results[name] = [(k.affine_forward(x, W, b, None), *k.affine_backward(g, x, W, True))
                             for n, m, x, W, b, g in _block_cases(50, dtype, 3)]
    finally:
        k.set_simd(simd)
        k._avx2_products(avx2)
    for a, b in zip(results["avx512"], results["avx2"]):
        for got, exp in zip(a, b):
            np.testing.assert_array_equal(got, exp)


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
def test_layer_routes_the_books_small_product_to_the_kernels(loops, dtype):
    """At (100, 50, 10) the layer's results are the kernels' on the AVX-512 and AVX2 loops, BLAS's
    (np.dot, then the bias) on the plain loop and for products above the size limit."""
    k = _backend.compiled_module()
    with bprop.use_backend("cython"):
        for n, d, m in ((100, 50, 10), (100, 784, 50)):
            x, W, b, dout = _data(n, d, m, dtype)
            layer = bprop.Affine(W, b)
            out = layer.forward(x)
            dx = layer.backward(dout)
            small = loops != "portable" and n * d * m <= layers._SMALL_GEMM[loops][0]
            assert small == ((n, d, m) == (100, 50, 10) and loops != "portable")
            if small:
                exp_out = k.affine_forward(x, W, b, None)
                exp_dx, exp_dW, exp_db = k.affine_backward(dout, x, W, True)
            else:
                exp_out = np.dot(x, W) + b
                exp_dx, exp_dW = np.dot(dout, W.T), np.dot(x.T, dout)
                exp_db = layer.db  # column sums are checked in test_differential
            for name, got, exp in (("out", out, exp_out), ("dx", dx, exp_dx), ("dW", layer.dW, exp_dW), ("db", layer.db, exp_db)):
                np.testing.assert_array_equal(got, exp, err_msg=f"({n}, {d}, {m}) {name}, small={small}")


def test_portable_layer_calls_the_avx2_kernels(monkeypatch):
    """With the portable loops selected (BPROP_SIMD=portable), Affine (100, 50, 10) goes to the
    compiled kernels, on the AVX2 loops, wherever this CPU has AVX2 and FMA."""
    k = _backend.compiled_module()
    simd = k.get_simd()
    calls = []

    def spy(name):
        real = getattr(k, name)

        def kernel(*args):
            calls.append((name, k.small_product_loops()))
            return real(*args)
        return kernel

    for name in ("affine_forward", "affine_backward"):
        monkeypatch.setattr(k, name, spy(name))
    try:
        k.set_simd("portable")
        if k.small_product_loops() != "avx2":
            pytest.skip("no AVX2 loops here (this CPU or this build)")
        with bprop.use_backend("cython"):
            for dtype in DTYPES:
                x, W, b, dout = _data(100, 50, 10, dtype)
                layer = bprop.Affine(W, b)
                layer.forward(x)
                layer.backward(dout)
    finally:
        k.set_simd(simd)
    assert calls == [("affine_forward", "avx2"), ("affine_backward", "avx2")] * 2


def test_bprop_simd_portable_runs_the_avx2_products():
    """BPROP_SIMD=portable, read at import, leaves the products on the AVX2 loops wherever they can run."""
    k = _backend.compiled_module()
    simd, avx2 = k.get_simd(), k._avx2_products()
    try:
        k.set_simd("portable")
        k._avx2_products(True)
        expected = k.small_product_loops()
    finally:
        k.set_simd(simd)
        k._avx2_products(avx2)
    if expected != "avx2":
        pytest.skip("no AVX2 loops here (this CPU or this build)")
    code = "import bprop, bprop._kernels as k; print(k.get_simd(), k.small_product_loops())"
    env = {**os.environ, "BPROP_SIMD": "portable"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["portable", "avx2"]
