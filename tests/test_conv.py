"""Convolution, Pooling, im2col and col2im against the book's own code, on both backends."""
import numpy as np
import pytest

import bprop
from bprop import Convolution, Pooling, StateError
from bprop.util import col2im, im2col
from book_ch07 import book

# (N, C, H, W, FH, FW, stride, pad): odd sizes, windows that do not tile, stride > window.
GEOMETRIES = [
    (2, 3, 7, 6, 3, 2, 1, 1),
    (3, 2, 9, 8, 3, 3, 2, 2),
    (1, 1, 5, 5, 5, 5, 1, 0),
    (2, 2, 10, 9, 2, 3, 3, 1),
    (4, 1, 28, 28, 5, 5, 1, 0),
    (2, 3, 6, 7, 1, 1, 2, 0),
]
# (N, C, H, W, pool_h, pool_w, stride): the book's 2x2/2, odd sizes, overlapping windows.
POOLS = [
    (2, 3, 8, 8, 2, 2, 2),
    (2, 3, 9, 7, 2, 2, 2),
    (2, 2, 9, 8, 3, 3, 2),
    (2, 2, 9, 8, 3, 2, 3),
    (1, 2, 6, 6, 3, 3, 1),
    (3, 4, 24, 24, 2, 2, 2),
]


def _rng(*key):
    return np.random.default_rng(abs(hash(key)) % (2**32))


def _bound(dt, terms, magnitude):
    """Rounding bound of a sum of ``terms`` products in ``dt``, relative to the sum of their magnitudes."""
    return 2 * (terms + 2) * np.finfo(dt).eps * magnitude


# --- im2col / col2im ---------------------------------------------------------

@pytest.mark.parametrize("geom", GEOMETRIES)
def test_im2col_is_the_books(backend, geom):
    n, c, h, w, fh, fw, s, p = geom
    x = _rng("im2col", geom).standard_normal((n, c, h, w))
    expected = book().util.im2col(x, fh, fw, s, p)
    got = im2col(x, fh, fw, s, p)
    assert got.dtype == np.float64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    got32 = im2col(x.astype(np.float32), fh, fw, s, p)
    assert got32.dtype == np.float32
    np.testing.assert_array_equal(got32, book().util.im2col(x.astype(np.float32), fh, fw, s, p))


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_col2im_is_the_books_bit_for_bit(backend, geom):
    n, c, h, w, fh, fw, s, p = geom
    shape = (n, c, h, w)
    rows = book().util.im2col(np.zeros(shape), fh, fw, s, p).shape
    col = _rng("col2im", geom).standard_normal(rows)
    expected = book().util.col2im(col, shape, fh, fw, s, p)
    got = col2im(col, shape, fh, fw, s, p)
    assert got.dtype == np.float64 and got.flags.c_contiguous and got.shape == shape
    np.testing.assert_array_equal(got, expected)
    got32 = col2im(col.astype(np.float32), shape, fh, fw, s, p)
    assert got32.dtype == np.float32
    # Each cell sums at most FH * FW values, rounded in float32.
    tol = _bound(np.float32, fh * fw, book().util.col2im(np.abs(col), shape, fh, fw, s, p))
    assert np.all(np.abs(got32 - expected) <= tol)


def test_im2col_col2im_take_other_dtypes_and_layouts(backend):
    x = _rng("layouts").integers(-5, 5, (2, 3, 6, 6))
    expected = book().util.im2col(x, 3, 3, 1, 1)
    for variant in (x, x.astype(">f8"), np.asfortranarray(x), x.astype(np.float16), x[:, :, ::-1, :][:, :, ::-1, :]):
        got = im2col(variant, 3, 3, 1, 1)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, expected)
    col = np.asfortranarray(expected)
    np.testing.assert_array_equal(col2im(col, x.shape, 3, 3, 1, 1), book().util.col2im(expected, x.shape, 3, 3, 1, 1))


# --- Convolution ---------------------------------------------------------------

def _conv_data(geom, f=4):
    n, c, h, w, fh, fw, s, p = geom
    r = _rng("conv", geom)
    return r.standard_normal((n, c, h, w)), r.standard_normal((f, c, fh, fw)), r.standard_normal(f)


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_convolution_matches_the_book(backend, geom):
    s, p = geom[6], geom[7]
    x, W, b = _conv_data(geom)
    ref = book().layers.Convolution(W, b, s, p)
    lay = Convolution(W, b, s, p)
    out_ref, out = ref.forward(x), lay.forward(x)
    assert out.shape == out_ref.shape and out.dtype == np.float64 and out.flags.c_contiguous
    k = W[0].size
    col_abs = np.abs(ref.col) @ np.abs(ref.col_W)
    tol = _bound(np.float64, k, col_abs.reshape(out.shape[0], out.shape[2], out.shape[3], -1).transpose(0, 3, 1, 2))
    assert np.all(np.abs(out - out_ref) <= tol + 1e-300)
    np.testing.assert_array_equal(lay.col, ref.col)
    np.testing.assert_array_equal(lay.col_W, ref.col_W)
    assert lay.x is x

    dout = _rng("dout", geom).standard_normal(out.shape)
    dx_ref, dx = ref.backward(dout.copy()), lay.backward(dout)
    assert dx.shape == x.shape and dx.dtype == np.float64 and dx.flags.c_contiguous
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-7, atol=_bound(np.float64, k, np.abs(dout).max() * np.abs(W).max()))
    rows = dout.size // W.shape[0]
    np.testing.assert_allclose(lay.dW, ref.dW, rtol=1e-7, atol=_bound(np.float64, rows, np.abs(dout).max() * np.abs(x).max()))
    np.testing.assert_allclose(lay.db, ref.db, rtol=1e-7, atol=_bound(np.float64, rows, np.abs(dout).max()))
    assert lay.dW.shape == W.shape and lay.db.shape == b.shape


@pytest.mark.parametrize("geom", GEOMETRIES[:4])
def test_convolution_float32_stays_float32(backend, geom):
    s, p = geom[6], geom[7]
    x, W, b = (a.astype(np.float32) for a in _conv_data(geom))
    ref = book().layers.Convolution(W.astype(np.float64), b.astype(np.float64), s, p)
    lay = Convolution(W, b, s, p)
    out = lay.forward(x)
    out_ref = ref.forward(x.astype(np.float64))
    assert out.dtype == np.float32
    scale = np.abs(x).max() * np.abs(W).max() + np.abs(b).max()
    np.testing.assert_allclose(out, out_ref, rtol=1.3e-6, atol=_bound(np.float32, W[0].size, scale))
    dout = _rng("dout32", geom).standard_normal(out.shape).astype(np.float32)
    dx = lay.backward(dout)
    ref.backward(dout.astype(np.float64))
    assert dx.dtype == lay.dW.dtype == lay.db.dtype == np.float32
    rows = dout.size // W.shape[0]
    np.testing.assert_allclose(lay.dW, ref.dW, rtol=1.3e-6, atol=_bound(np.float32, rows, np.abs(dout).max() * np.abs(x).max()))
    np.testing.assert_allclose(lay.db, ref.db, rtol=1.3e-6, atol=_bound(np.float32, rows, np.abs(dout).max()))


def test_convolution_dtype_rules(backend):
    x, W, b = _conv_data(GEOMETRIES[0])
    f32 = np.float32
    assert Convolution(W.astype(f32), b.astype(f32), 1, 1).forward(x.astype(f32)).dtype == f32
    assert Convolution(W, b, 1, 1).forward(x.astype(f32)).dtype == np.float64  # float64 weights
    assert Convolution(W, b, 1, 1).forward(np.round(x).astype(np.int32)).dtype == np.float64
    assert Convolution(W.astype(np.float16), b.astype(np.float16), 1, 1).forward(x.astype(np.float16)).dtype == np.float64


def test_convolution_holds_w_and_b_by_reference_and_modifies_nothing(backend):
    x, W, b = _conv_data(GEOMETRIES[0])
    x0, W0, b0 = x.copy(), W.copy(), b.copy()
    lay = Convolution(W, b, 1, 1)
    out1 = lay.forward(x)
    held = out1.copy()
    dout = np.ones_like(out1)
    dx = lay.backward(dout)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(W, W0)
    np.testing.assert_array_equal(b, b0)
    assert np.all(dout == 1)
    W *= 2  # an optimizer's in-place update
    b += 1
    out2 = lay.forward(x)
    np.testing.assert_allclose(out2, Convolution(W.copy(), b.copy(), 1, 1).forward(x))
    np.testing.assert_array_equal(out1, held)  # the earlier result is untouched
    assert out2 is not out1 and dx is not lay.backward(dout)


def test_convolution_without_input_gradient(backend):
    x, W, b = _conv_data(GEOMETRIES[1])
    lay, ref = Convolution(W, b, 2, 2), Convolution(W, b, 2, 2)
    dout = np.ones(lay.forward(x).shape)
    ref.forward(x)
    ref.backward(dout)
    assert lay.backward(dout, input_grad=False) is None
    np.testing.assert_array_equal(lay.dW, ref.dW)
    np.testing.assert_array_equal(lay.db, ref.db)


def test_backends_agree_on_convolution():
    geom = (3, 2, 11, 10, 3, 4, 2, 1)
    x, W, b = _conv_data(geom)
    dout = None
    results = []
    for name in ("cython", "numpy") if bprop._backend.compiled_available() else ("numpy",):
        with bprop.use_backend(name):
            lay = Convolution(W, b, 2, 1)
            out = lay.forward(x)
            dout = np.linspace(-1, 1, out.size).reshape(out.shape) if dout is None else dout
            results.append((out, lay.backward(dout), lay.dW, lay.db))
    for got, want in zip(results[0], results[-1]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# --- Pooling -------------------------------------------------------------------

def _pool_input(geom, ties=True):
    n, c, h, w = geom[:4]
    x = _rng("pool", geom).standard_normal((n, c, h, w))
    return np.round(x, 0) if ties else x  # rounding makes many ties: the first maximum must win


@pytest.mark.parametrize("geom", POOLS)
@pytest.mark.parametrize("ties", [False, True])
def test_pooling_is_the_books_bit_for_bit(backend, geom, ties):
    ph, pw, s = geom[4:]
    x = _pool_input(geom, ties)
    ref, lay = book().layers.Pooling(ph, pw, s), Pooling(ph, pw, s)
    out_ref, out = ref.forward(x), lay.forward(x)
    assert out.flags.c_contiguous and out.dtype == np.float64
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(lay.arg_max, ref.arg_max)
    assert lay.arg_max.dtype == np.int64 and lay.x is x
    dout = _rng("pool-dout", geom).standard_normal(out.shape)
    dx = lay.backward(dout)
    assert dx.flags.c_contiguous and dx.dtype == np.float64
    np.testing.assert_array_equal(dx, ref.backward(dout))


@pytest.mark.parametrize("geom", POOLS[:3])
def test_pooling_nan_inf_and_signed_zero_as_argmax(backend, geom):
    ph, pw, s = geom[4:]
    x = _pool_input(geom)
    flat = x.reshape(-1)
    flat[::7] = np.nan
    flat[3::11] = np.inf
    flat[5::13] = -np.inf
    flat[1::5] = -0.0
    ref, lay = book().layers.Pooling(ph, pw, s), Pooling(ph, pw, s)
    with np.errstate(invalid="ignore"):
        out_ref = ref.forward(x)
    out = lay.forward(x)
    np.testing.assert_array_equal(lay.arg_max, ref.arg_max)  # the first NaN, else the first maximum
    np.testing.assert_array_equal(out, out_ref)  # NaN where the book has NaN (NaN equals NaN here)
    dout = _rng("pool-dout", geom).standard_normal(out.shape)
    np.testing.assert_array_equal(lay.backward(dout), ref.backward(dout))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_pooling_keeps_float32_and_matches(backend, dt):
    geom = POOLS[0]
    x = _pool_input(geom, ties=False).astype(dt)
    ref, lay = book().layers.Pooling(2, 2, 2), Pooling(2, 2, 2)
    out = lay.forward(x)
    assert out.dtype == dt
    np.testing.assert_array_equal(out, ref.forward(x))  # the book's float64 of the same values
    dout = np.arange(out.size, dtype=dt).reshape(out.shape)
    dx = lay.backward(dout)
    assert dx.dtype == dt
    np.testing.assert_array_equal(dx, ref.backward(dout))


def _padded_pool_reference(x, ph, pw, s, p):
    """Max over each window's input cells (padding never wins), first maximum; dx by that argmax."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p - ph) // s + 1, (w + 2 * p - pw) // s + 1
    out = np.empty((n, c, oh, ow))
    where = {}
    for idx in np.ndindex(n, c, oh, ow):
        a, b, i, j = idx
        best = None
        for ky in range(ph):
            for kx in range(pw):
                r, q = i * s + ky - p, j * s + kx - p
                if 0 <= r < h and 0 <= q < w and (best is None or x[a, b, r, q] > best[0]):
                    best = (x[a, b, r, q], r, q, ky, kx)
        out[idx] = best[0]
        where[idx] = best[1:]
    return out, where


@pytest.mark.parametrize("ph, pw, s, p", [(2, 2, 2, 1), (3, 3, 2, 1), (3, 3, 1, 2), (2, 3, 1, 1)])
def test_pooling_with_padding_never_picks_a_padded_cell(backend, ph, pw, s, p):
    x = -np.abs(_pool_input((2, 2, 7, 6), ties=False)) - 1  # all negative: a zero pad would win
    lay = Pooling(ph, pw, s, p)
    out = lay.forward(x)
    expected, where = _padded_pool_reference(x, ph, pw, s, p)
    np.testing.assert_array_equal(out, expected)
    dout = _rng("padded-dout").standard_normal(out.shape)
    dx = lay.backward(dout)
    ref = np.zeros_like(x)
    # Overlapping windows add in the order of the window offset (ky, kx), as the book's col2im.
    for idx, (r, q, ky, kx) in sorted(where.items(), key=lambda item: item[1][2:]):
        ref[idx[0], idx[1], r, q] += dout[idx]
    np.testing.assert_array_equal(dx, ref)


def test_pooling_with_windows_over_256_cells(backend):
    x = _pool_input((2, 2, 20, 20), ties=False)
    ref, lay = book().layers.Pooling(17, 17, 3), Pooling(17, 17, 3)
    np.testing.assert_array_equal(lay.forward(x), ref.forward(x))
    np.testing.assert_array_equal(lay.arg_max, ref.arg_max)
    dout = np.ones((2, 2, 2, 2))
    np.testing.assert_array_equal(lay.backward(dout), ref.backward(dout))


def test_pooling_modifies_nothing_and_returns_fresh_arrays(backend):
    x = _pool_input(POOLS[0])
    x0 = x.copy()
    lay = Pooling(2, 2, 2)
    out1 = lay.forward(x)
    held = out1.copy()
    dout = np.ones_like(out1)
    dx1 = lay.backward(dout)
    dx_held = dx1.copy()
    out2 = lay.forward(x * 2)
    lay.backward(dout * 3)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(out1, held)
    np.testing.assert_array_equal(dx1, dx_held)
    assert np.all(dout == 1) and out2 is not out1


# --- Bad input ---------------------------------------------------------------------

X = np.zeros((2, 3, 6, 6))
W = np.zeros((4, 3, 3, 3))
B = np.zeros(4)


@pytest.mark.parametrize("call, exc, message", [
    (lambda: Convolution(W, B, stride=0).forward(X), ValueError, "stride must be >= 1, got 0"),
    (lambda: Convolution(W, B, pad=-1).forward(X), ValueError, "pad must be >= 0, got -1"),
    (lambda: Convolution(W, B, stride=1.5).forward(X), TypeError, "stride must be an integer"),
    (lambda: Convolution(np.zeros((4, 3, 9, 3)), B).forward(X), ValueError,
     "the 9 x 3 filter is larger than the input padded by 0 (6 x 6; input shape (2, 3, 6, 6))"),
    (lambda: Convolution(np.zeros((4, 2, 3, 3)), B).forward(X), ValueError,
     "x has 3 channels but W expects 2 (x.shape=(2, 3, 6, 6), W.shape=(4, 2, 3, 3))"),
    (lambda: Convolution(W, np.zeros(3)).forward(X), ValueError, "b must have shape (4,)"),
    (lambda: Convolution(W[0], B).forward(X), ValueError, "W must be 4-D"),
    (lambda: Convolution(W, B).forward(X[0]), ValueError, "x must be 4-D (N, C, H, W); got x.shape=(3, 6, 6)"),
    (lambda: Convolution(W, B).forward(None), TypeError, "x must be a numpy.ndarray"),
    (lambda: Convolution(W, B).forward(X.astype(complex)), TypeError, "dtype complex128"),
    (lambda: Convolution(W, B).backward(np.zeros((2, 4, 4, 4))), StateError, "before forward"),
    (lambda: Pooling(2, 2, stride=0).forward(X), ValueError, "stride must be >= 1, got 0"),
    (lambda: Pooling(2, 2, pad=-1).forward(X), ValueError, "pad must be >= 0"),
    (lambda: Pooling(2, 2, pad=2).forward(X), ValueError, "pad (2) must be smaller than the 2 x 2 window"),
    (lambda: Pooling(7, 2).forward(X), ValueError, "the 7 x 2 pool window is larger than the input"),
    (lambda: Pooling(0, 2).forward(X), ValueError, "pool window height must be >= 1, got 0"),
    (lambda: Pooling(2, 2).forward(X[0]), ValueError, "x must be 4-D"),
    (lambda: Pooling(2, 2).backward(np.zeros((2, 3, 3, 3))), StateError, "before forward"),
    (lambda: im2col(X, 3, 3, 0), ValueError, "im2col: stride must be >= 1"),
    (lambda: im2col(X, 8, 3, 1, 0), ValueError, "im2col: the 8 x 3 filter is larger"),
    (lambda: col2im(np.zeros((10, 27)), X.shape, 3, 3), ValueError,
     "col2im: col.shape=(10, 27) does not tile input_shape (2, 3, 6, 6)"),
    (lambda: col2im(np.zeros((32, 27)), (2, 3, 6), 3, 3), ValueError, "input_shape must be 4"),
    (lambda: col2im(np.zeros((32, 27)), X.shape, 3, 3, pad=-2), ValueError, "col2im: pad must be >= 0"),
])
def test_bad_input_raises_a_clear_error(backend, call, exc, message):
    with pytest.raises(exc, match=r".*".join(map(__import__("re").escape, [message]))):
        call()


@pytest.mark.parametrize("layer", ["conv", "pool"])
def test_dout_of_the_wrong_shape(backend, layer):
    lay = Convolution(W, B, 1, 1) if layer == "conv" else Pooling(2, 2)
    out = lay.forward(X)
    for shape in (out.shape[:3], out.shape[:3] + (out.shape[3] + 1,), (out.shape[0] + 1,) + out.shape[1:]):
        with pytest.raises(ValueError, match="dout must have the shape of the forward output"):
            lay.backward(np.zeros(shape))
    lay.backward(np.zeros(out.shape))  # the layer still works after refusing


def test_failed_forward_keeps_the_previous_state(backend):
    lay = Convolution(W, B, 1, 1)
    lay.forward(X)
    x_before, col_before = lay.x, lay.col
    with pytest.raises(ValueError):
        lay.forward(np.zeros((2, 2, 6, 6)))
    assert lay.x is x_before
    np.testing.assert_array_equal(lay.col, col_before)
