"""The convolution and pooling kernels: compiled against the NumPy twin (bit for bit where the
twin computes the same sums), over random geometries and both dtypes; their own entry checks."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bprop import _backend, _numpy_kernels as twin

compiled = _backend.compiled_module()
needs_compiled = pytest.mark.skipif(compiled is None, reason="bprop._kernels is not built")

SETTINGS = settings(
    max_examples=int(os.environ.get("BPROP_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
)


@st.composite
def geometries(draw, pooling=False):
    """(N, C, H, W, FH, FW, stride, pad, dtype) with a window that fits the padded input."""
    n, c = draw(st.integers(0, 3)), draw(st.integers(0 if not pooling else 1, 3))
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = draw(st.integers(1, 4))
    pad = draw(st.integers(0, min(fh, fw) - 1)) if pooling else draw(st.integers(0, 3))
    h = draw(st.integers(max(1, fh - 2 * pad), 12))
    w = draw(st.integers(max(1, fw - 2 * pad), 12))
    dt = draw(st.sampled_from([np.float64, np.float32]))
    return n, c, h, w, fh, fw, stride, pad, dt


def _values(shape, dt, seed, ties=False):
    x = np.random.default_rng(seed).standard_normal(shape)
    return (np.round(x) if ties else x).astype(dt)


@needs_compiled
@SETTINGS
@given(geometries(), st.integers(0, 2**31))
def test_im2col_and_col2im_kernels_match_the_twin(g, seed):
    n, c, h, w, fh, fw, s, p, dt = g
    x = _values((n, c, h, w), dt, seed)
    for name in ("im2col_rows", "im2col_kp"):
        a, b = getattr(compiled, name)(x, fh, fw, s, p, None), getattr(twin, name)(x, fh, fw, s, p, None)
        assert a.dtype == dt and a.flags.c_contiguous and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        col = _values(a.shape, dt, seed + 1)
        back = "col2im_rows" if name == "im2col_rows" else "col2im_kp"
        ia, ib = np.full(x.shape, np.nan, dt), np.full(x.shape, np.nan, dt)
        assert getattr(compiled, back)(col, fh, fw, s, p, ia) is ia
        getattr(twin, back)(col, fh, fw, s, p, ib)
        np.testing.assert_array_equal(ia, ib)  # the same additions in the same order


@needs_compiled
@SETTINGS
@given(geometries(pooling=True), st.integers(0, 2**31), st.booleans())
def test_pooling_kernels_match_the_twin(g, seed, ties):
    n, c, h, w, ph, pw, s, p, dt = g
    x = _values((n, c, h, w), dt, seed, ties)
    if x.size:
        x.reshape(-1)[:: 1 + seed % 7] = np.nan if seed % 3 == 0 else x.reshape(-1)[0]
    oa, aa = compiled.pool_forward(x, ph, pw, s, p, None, None)
    ob, ab = twin.pool_forward(x, ph, pw, s, p, None, None)
    assert aa.dtype == np.uint8 and oa.dtype == dt
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(aa, ab)
    dout = _values(oa.shape, dt, seed + 1)
    da, db = np.full(x.shape, np.nan, dt), np.full(x.shape, np.nan, dt)
    compiled.pool_backward(dout, aa, ph, pw, s, p, da)
    twin.pool_backward(dout, ab, ph, pw, s, p, db)
    np.testing.assert_array_equal(da, db)


@needs_compiled
@SETTINGS
@given(geometries(), st.integers(1, 13), st.integers(0, 2**31))
def test_convolution_kernels_match_the_twin(g, f, seed):
    """conv_forward / conv_backward_data (bprop's own blocked products) against the twin's BLAS."""
    n, c, h, w, fh, fw, s, p, dt = g
    x = _values((n, c, h, w), dt, seed)
    W, b = _values((f, c, fh, fw), dt, seed + 1), _values((f,), dt, seed + 2)
    ca, oa = compiled.conv_forward(x, W, b, s, p, None, None)
    cb, ob = twin.conv_forward(x, W, b, s, p, None, None)
    np.testing.assert_array_equal(ca, cb)
    assert oa.dtype == dt and oa.flags.c_contiguous and oa.shape == ob.shape
    k = c * fh * fw
    eps = np.finfo(dt).eps
    # Two sums of k products each, in different orders: 2 (k + 2) eps of the sum of magnitudes.
    mag = np.matmul(np.abs(W).reshape(f, k), np.abs(cb)).reshape(ob.shape) + np.abs(b)[None, :, None, None]
    assert np.all(np.abs(oa - ob) <= 2 * (k + 2) * eps * mag)
    dout = _values(oa.shape, dt, seed + 3)
    da, db = np.full(x.shape, np.nan, dt), np.full(x.shape, np.nan, dt)
    compiled.conv_backward_data(dout, W, s, p, da)
    twin.conv_backward_data(dout, W, s, p, db)
    mag = twin.conv_backward_data(np.abs(dout), np.abs(W), s, p, np.empty(x.shape, dt))
    assert np.all(np.abs(da - db) <= 2 * (f + 2 + fh * fw) * eps * mag)


@needs_compiled
@SETTINGS
@given(st.integers(0, 4), st.integers(0, 5), st.integers(0, 9), st.integers(0, 9),
       st.sampled_from([np.float64, np.float32]), st.integers(0, 2**31))
def test_bias_kernels_match_the_twin(n, f, h, w, dt, seed):
    y = _values((n, f, h, w), dt, seed)
    b = _values((f,), dt, seed + 1)
    ya, yb = y.copy(), y.copy()
    compiled.conv_bias_add(ya, b)
    twin.conv_bias_add(yb, b)
    np.testing.assert_array_equal(ya, yb)
    ga, gb = compiled.conv_bias_grad(y, None), twin.conv_bias_grad(y, None)
    assert ga.dtype == dt and ga.shape == (f,)
    # Both sum in float64, in different orders, then round once to dt.
    exact = np.abs(y).sum(axis=(0, 2, 3), dtype=np.float64)
    tol = 2 * (n * h * w + 2) * np.finfo(np.float64).eps * exact + np.finfo(dt).eps * np.abs(gb)
    assert np.all(np.abs(ga.astype(np.float64) - gb) <= tol)


@needs_compiled
def test_pool_forward_uses_the_2x2_path_and_the_general_path_alike():
    # The 2x2/2 loop, in blocks of 64 windows with a NaN redo, against the general loop (3x3/2 windows
    # restricted to their 2x2 corner is not the same thing, so compare with the twin on wide rows).
    for dt in (np.float64, np.float32):
        x = _values((2, 3, 9, 2 * 130 + 1), dt, 5, ties=True)
        x[0, 1, 4, 100:140] = np.nan
        x[1, 2, 2, 7] = -np.inf
        a, b = compiled.pool_forward(x, 2, 2, 2, 0, None, None), twin.pool_forward(x, 2, 2, 2, 0, None, None)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


# --- Entry checks (tests/test_bad_input.py covers sizes, dtypes and layouts) ---------

X = np.zeros((2, 3, 6, 6))


@needs_compiled
@pytest.mark.parametrize("module", ["compiled", "twin"])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_none_outputs_are_allocated(module, dt):
    k = compiled if module == "compiled" else twin
    x = _values((2, 3, 7, 6), dt, 1)
    col = k.im2col_rows(x, 3, 2, 2, 1, None)
    assert col.shape == (2 * 4 * 4, 18) and col.dtype == dt and col.flags.c_contiguous
    kp = k.im2col_kp(x, 3, 2, 2, 1, None)
    assert kp.shape == (2, 18, 16) and kp.dtype == dt and kp.flags.c_contiguous
    out, arg = k.pool_forward(x, 2, 2, 2, 0, None, None)
    assert out.shape == arg.shape == (2, 3, 3, 3) and out.dtype == dt and arg.dtype == np.uint8
    db = k.conv_bias_grad(x, None)
    assert db.shape == (3,) and db.dtype == dt


@needs_compiled
@pytest.mark.parametrize("call, message", [
    (lambda: compiled.im2col_rows(X, 3, 3, 0, 0, None), "im2col_rows: stride must be >= 1, got 0"),
    (lambda: compiled.im2col_kp(X, 3, 3, 1, -1, None), "im2col_kp: pad must be >= 0, got -1"),
    (lambda: compiled.im2col_kp(X, 0, 3, 1, 0, None), "im2col_kp: the window must be at least 1 x 1"),
    (lambda: compiled.col2im_kp(np.zeros((2, 27, 1)), 9, 3, 1, 1, np.zeros(X.shape)), "does not fit a 6 x 6 input padded by 1"),
    (lambda: compiled.pool_forward(X, 2, 2, 2, 2, None, None), "pad 2 must be smaller than the 2 x 2 window"),
    (lambda: compiled.pool_forward(np.zeros((1, 1, 20, 20)), 17, 17, 1, 0, None, None), "more than 256 cells"),
    (lambda: compiled.pool_backward(np.zeros((2, 3, 3, 3)), np.full((2, 3, 3, 3), 4, np.uint8), 2, 2, 2, 0,
                                    np.zeros(X.shape)), "arg holds offset 4, outside the 2 x 2 window"),
    (lambda: compiled.pool_backward(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), np.uint8), 2, 2, 2, 1,
                                    np.zeros(X.shape)), "arg points window (0, 0) at a padded cell"),
    (lambda: compiled.conv_bias_add(X, np.zeros(4)), "b must have shape (3,)"),
])
def test_kernel_refuses_bad_geometry(call, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        call()


@needs_compiled
@pytest.mark.parametrize("name, args", [
    ("im2col_rows", (X, 3, 3, None, 0, None)),
    ("pool_forward", (X, None, 2, 2, 0, None, None)),
    ("pool_backward", (np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.uint8), 2, 2, 2, None, np.zeros(X.shape))),
])
def test_kernel_integer_arguments_refuse_none(name, args):
    with pytest.raises(TypeError):
        getattr(compiled, name)(*args)


@needs_compiled
def test_outputs_must_not_overlap_inputs():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="overlaps"):
        compiled.col2im_rows(x.reshape(16, 1), 1, 1, 1, 0, x)
    with pytest.raises(ValueError, match="overlaps"):
        compiled.conv_bias_grad(x.reshape(1, 16, 1, 1), x.reshape(16))
