"""Differential tests: compiled kernels vs the NumPy twin vs the book's formulas.

Every layer pass runs under both backends on the same inputs and is compared

* across backends (``bprop.use_backend("cython")`` vs ``"numpy"``), and
* with the book's own layers (:mod:`bprop.book`) evaluated in float64 on the
  same values (float32 inputs are widened exactly), using the tolerances of
  ``conftest`` for the result's dtype.

Where both sides do the same IEEE operations in the same order the comparison
is exact (``assert_identical``: same dtype, shape, values, NaN positions and
sign of zero). Matrix products are compared against a rounding-error bound,
``2 (k + 2) eps |A| |B|`` (k the inner dimension), because the scores mix
+/-1e20 with O(1) values and a sum with cancellation has no useful relative
tolerance.

Inputs come from hypothesis: float32/float64; shapes with zero-length axes,
single elements and odd sizes; C-ordered, Fortran-ordered, transposed,
strided and negatively strided views, writeable or read-only; values mixing
0, -0.0, NaN, +/-inf and +/-1e20 into ordinary numbers. One large size runs
as a plain test (once, not per example). Every check also verifies that the
caller's arrays are unchanged.
"""
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bprop
from bprop import _backend, book
from bprop import functions as F
from conftest import ATOL, RTOL, product_bound

# Hypothesis formats failing examples with libcst when that is installed, and
# some libcst versions warn on import: with filterwarnings=error that turns a
# test failure into a pytest INTERNALERROR that hides it. Import it quietly now.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import libcst  # noqa: F401
    except ImportError:
        pass

if _backend.compiled_available():
    BACKENDS = ("cython", "numpy")
elif _backend.PURE_BUILD:
    BACKENDS = ("numpy",)  # pure build: only the twin against the reference
else:  # pragma: no cover - a broken build must not pass silently
    raise ImportError(_backend.missing_reason())

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
FLOAT_DTYPES = (F32, F64)
SPECIALS = (0.0, -0.0, np.nan, np.inf, -np.inf, 1e20, -1e20)
LAYOUTS = ("C", "F", "transposed", "strided", "reversed")

HYPOTHESIS = settings(
    max_examples=int(os.environ.get("BPROP_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    derandomize=bool(os.environ.get("CI")),  # reproducible CI runs; local runs explore
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- describing and building arrays ------------------------------------------

def order_of(a):
    """'C', 'F', 'C+F' or 'strided(...)', plus ', read-only'."""
    if a.flags.c_contiguous and a.flags.f_contiguous:
        order = "C+F"
    elif a.flags.c_contiguous:
        order = "C"
    elif a.flags.f_contiguous:
        order = "F"
    else:
        order = f"strided{a.strides}"
    return order + ("" if a.flags.writeable else ", read-only")


def describe(layer, **arrays):
    """Context for a failure message: layer and pass, then dtype, shape and order of each input."""
    parts = [f"{name}: dtype={a.dtype} shape={a.shape} order={order_of(a)}" for name, a in arrays.items()]
    return f"{layer} [{'; '.join(parts)}]"


def relayout(values, kind, readonly=False):
    """A new array equal to ``values`` with the memory layout ``kind``."""
    values = np.asarray(values)
    nd = values.ndim
    if kind == "C":
        a = np.array(values, order="C")
    elif kind == "F":
        a = np.array(values, order="F")
    elif kind == "transposed":  # a transposed view of a C array
        a = np.array(values.T, order="C").T
    elif kind == "strided":  # every other element of a larger buffer, offset by one
        filler = 77 if values.dtype.kind in "iub" else 7777.0
        buf = np.full(tuple(2 * s + 1 for s in values.shape), filler, dtype=values.dtype)
        a = buf[(slice(1, None, 2),) * nd]
        a[...] = values
    elif kind == "reversed":  # negative strides on every axis
        flip = (slice(None, None, -1),) * nd
        a = np.array(values[flip], order="C")[flip]
    else:
        raise ValueError(kind)
    a.flags.writeable = not readonly
    return a


def snapshot(**arrays):
    return {name: (a.copy(), a.flags.writeable) for name, a in arrays.items()}


def assert_unchanged(before, what, **arrays):
    for name, a in arrays.items():
        copy, writeable = before[name]
        assert a.flags.writeable == writeable, f"{what}: {name}'s writeable flag changed"
        assert_identical(a, copy, f"{what}: caller's {name} was modified")


# --- comparisons ---------------------------------------------------------------

def assert_identical(actual, expected, what):
    """Same dtype, shape and values (NaN equals NaN); for floats also the sign of zero."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    np.testing.assert_array_equal(actual, expected, err_msg=what)
    if actual.dtype.kind == "f":
        sign_ok = (np.signbit(actual) == np.signbit(expected)) | np.isnan(actual)
        assert sign_ok.all(), f"{what}: sign differs (e.g. -0.0 vs +0.0) at {np.argwhere(~sign_ok)[:5].tolist()}"


def assert_same_formula(actual, expected, backend, what):
    """``actual`` from ``backend`` vs the book's ``(y - t) / N`` evaluated by NumPy in the same dtypes.

    Both backends scale by a rounded reciprocal, ``(y - t) * (1/N)``, where
    the book divides: two roundings (the reciprocal, the product) against
    one, so each element is within 2 ulp of the book's, not identical.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what} on {backend}: dtype {actual.dtype}, book {expected.dtype}"
    with np.errstate(invalid="ignore"):
        gap = np.abs(actual - expected)
        bound = 2 * np.spacing(np.abs(expected))
        ok = (gap <= bound) | (actual == expected) | (np.isnan(actual) & np.isnan(expected))
    assert ok.all(), f"{what} on {backend}: {np.count_nonzero(~ok)} elements differ by more than 2 ulp"


def assert_meta(actual, dtype, shape, what):
    assert isinstance(actual, np.ndarray), f"{what}: got {type(actual).__name__}, expected ndarray"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == tuple(shape), f"{what}: shape {actual.shape}, expected {tuple(shape)}"


def assert_close_to(actual, expected, what, dtype=None):
    """conftest's tolerance for ``dtype`` (default: actual's); NaN must meet NaN, inf the same inf."""
    dt = np.dtype(dtype or np.asarray(actual).dtype)
    np.testing.assert_allclose(
        np.asarray(actual, np.float64), expected, rtol=RTOL[dt], atol=ATOL[dt], equal_nan=True, err_msg=what
    )


def assert_within(actual, expected, bound, what, dtype=None, skip=None, nan_ok=None):
    """Finite expected: |actual - expected| <= rtol |expected| + atol + bound; non-finite: same value.

    ``skip`` masks entries that are not compared (e.g. float32 overflow);
    ``nan_ok`` masks entries where NaN is accepted whatever ``expected`` is.
    """
    dt = np.dtype(dtype or np.asarray(actual).dtype)
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    keep = np.ones(a.shape, bool) if skip is None else ~skip
    if nan_ok is not None:
        keep &= ~(nan_ok & np.isnan(a))
    with np.errstate(all="ignore"):
        tol = RTOL[dt] * np.abs(e) + ATOL[dt] + bound
        err = np.abs(a - e)
    finite = np.isfinite(e)
    bad = keep & finite & ~(err <= tol)
    bad |= keep & ~finite & ~((a == e) | (np.isnan(a) & np.isnan(e)))
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} entries differ; first at {i}: "
            f"actual {a[i]!r}, expected {e[i]!r}, allowed error {tol[i]!r}"
        )


def ieee_nan(a, b):
    """Where ``a @ b`` is NaN in IEEE arithmetic because a term is NaN or 0 * inf.

    The book's np.dot goes to BLAS routines that skip zero factors for some
    shapes (0 * NaN gives 0 there), while np.matmul keeps IEEE's NaN, so at
    these entries a NaN from bprop is accepted whatever the book says.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ind = lambda m: m.astype(np.float64)  # noqa: E731
    hits = (
        ind(np.isnan(a)) @ np.ones(b.shape) + np.ones(a.shape) @ ind(np.isnan(b))
        + ind(np.isinf(a)) @ ind(b == 0) + ind(a == 0) @ ind(np.isinf(b))
    )
    return hits > 0


def finite_part(a):
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a), np.abs(a), 0.0)


def on_backends(fn):
    """``{backend: fn()}`` for every available backend."""
    out = {}
    for name in BACKENDS:
        with bprop.use_backend(name):
            out[name] = fn()
    return out


def book_call(fn, *args):
    """Run a book function the way the reference needs it: IEEE, no warnings."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args)


# --- hypothesis strategies -------------------------------------------------------

def element_values(dtype, specials):
    finite = st.floats(-40, 40, width=32 if dtype == F32 else 64)
    if not specials:
        return finite
    # One entry in four is special; shrinking moves towards ordinary numbers.
    return st.tuples(st.integers(0, 3), finite, st.sampled_from(SPECIALS)).map(lambda t: t[2] if t[0] == 3 else t[1])


@st.composite
def float_arrays(draw, shape, specials, dtype=None):
    dtype = np.dtype(draw(st.sampled_from(FLOAT_DTYPES)) if dtype is None else dtype)
    values = draw(hnp.arrays(dtype, shape, elements=element_values(dtype, specials), fill=st.nothing()))
    return relayout(values, draw(st.sampled_from(LAYOUTS)), draw(st.booleans()))


@st.composite
def elementwise_cases(draw):
    """(x, dout): same shape, independent dtypes and layouts."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6))
    specials = draw(st.booleans())
    return draw(float_arrays(shape, specials)), draw(float_arrays(shape, specials))


@st.composite
def affine_cases(draw):
    """(x, W, b, dout) with x of shape (N, ...) flattening to (N, D); 1-D x is (N, 1)."""
    n = draw(st.integers(0, 5))
    features = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4))
    d = math.prod(features)
    m = draw(st.integers(1, 11))
    specials = draw(st.booleans())
    return (
        draw(float_arrays((n,) + features, specials)),
        draw(float_arrays((d, m), specials)),
        draw(float_arrays((m,), specials)),
        draw(float_arrays((n, m), specials)),
    )


@st.composite
def softmax_loss_cases(draw):
    """(x, t): (N, C) scores with integer labels or one-hot rows; C past the kernels' 8-wide sums."""
    n = draw(st.integers(1, 5))
    c = draw(st.integers(1, 19))
    x = draw(float_arrays((n, c), draw(st.booleans())))
    labels = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    if draw(st.booleans()):
        t = labels.astype(draw(st.sampled_from([np.int64, np.int32, np.uint8])))
    else:
        t = np.eye(c, dtype=draw(st.sampled_from([x.dtype, F32, F64, np.dtype(np.int64)])))[labels]
    return x, relayout(t, draw(st.sampled_from(LAYOUTS)), draw(st.booleans()))


@st.composite
def softmax_inputs(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5))
    shape = lead + (draw(st.integers(0, 19)),)
    return draw(float_arrays(shape, draw(st.booleans())))


def make(values, dtype, layout="C", readonly=False):
    return relayout(np.asarray(values, dtype=dtype), layout, readonly)


ALL_SPECIALS = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e20, -1e20, 1.5, -2.5]


# --- the checks: one per layer, each over all backends ---------------------------

def check_relu(x, dout):
    what = describe("Relu", x=x, dout=dout)
    before = snapshot(x=x, dout=dout)
    ref = book.Relu()
    ref_out = ref.forward(x.astype(F64))
    ref_dx = ref.backward(dout.astype(F64))  # astype copies: the book zeroes its dout in place

    def run():
        layer = bprop.Relu()
        out = layer.forward(x)
        mask = layer.mask
        return out, mask, layer.backward(dout), F.relu(x)

    results = on_backends(run)
    for name, (out, mask, dx, fout) in results.items():
        w = f"{what} on {name}"
        assert_identical(out, ref_out.astype(x.dtype), f"{w}: forward")
        assert not np.signbit(out[x == 0]).any(), f"{w}: -0.0 must come out as +0.0"
        assert_identical(mask, x <= 0, f"{w}: mask (bool, x <= 0)")
        assert_identical(mask, ref.mask, f"{w}: mask vs book")
        assert_identical(dx, ref_dx.astype(dout.dtype), f"{w}: backward")
        assert_identical(fout, out, f"{w}: functions.relu vs Relu.forward")
    for a, b in zip(results[BACKENDS[0]], results[BACKENDS[-1]]):
        assert_identical(a, b, f"{what}: {BACKENDS[0]} vs {BACKENDS[-1]}")
    assert_unchanged(before, what, x=x, dout=dout)


def check_sigmoid(x, dout):
    what = describe("Sigmoid", x=x, dout=dout)
    before = snapshot(x=x, dout=dout)
    ref = book.Sigmoid()
    ref_out = book_call(ref.forward, x.astype(F64))  # the book's exp overflows for x < -709
    dx_dtype = np.result_type(dout, x)

    def run():
        layer = bprop.Sigmoid()
        out = layer.forward(x)
        kept = layer.out
        return out, kept, layer.backward(dout), F.sigmoid(x)

    results = on_backends(run)
    for name, (out, kept, dx, fout) in results.items():
        w = f"{what} on {name}"
        assert_meta(out, x.dtype, x.shape, f"{w}: forward")
        assert_close_to(out, ref_out, f"{w}: forward vs book (float64)")
        assert_identical(kept, out, f"{w}: Sigmoid.out")
        assert_identical(fout, out, f"{w}: functions.sigmoid vs Sigmoid.forward")
        assert_meta(dx, dx_dtype, x.shape, f"{w}: backward")
        # Against the book's formula on this layer's own forward output, so
        # that the backward arithmetic is checked on its own: in float64,
        # and in the layer's dtypes.
        ref_dx = book_call(lambda: dout.astype(F64) * (1.0 - out.astype(F64)) * out.astype(F64))
        assert_close_to(dx, ref_dx, f"{w}: backward vs book (float64)")
        native = book_call(lambda: dout * (1.0 - out) * out)
        assert_identical(dx, native, f"{w}: backward vs book formula in {dx_dtype}")
    if len(results) == 2:
        (a_out, *_), (b_out, *_) = results.values()
        assert_close_to(a_out, b_out, f"{what}: forward, cython vs numpy")
        # Backward from the same forward state: near out = 1, one ulp of out
        # is a large relative change of (1 - out), so each backend's own
        # chain may differ by far more than the tolerance.
        shared = a_out.copy()

        def backward_from_shared_out():
            layer = bprop.Sigmoid()
            layer.out = shared
            return layer.backward(dout)

        a_dx, b_dx = on_backends(backward_from_shared_out).values()
        assert_close_to(a_dx, b_dx, f"{what}: backward from the same out, cython vs numpy")
        assert_identical(shared, a_out, f"{what}: backward modified Sigmoid.out")
    assert_unchanged(before, what, x=x, dout=dout)


def check_affine(x, W, b, dout):
    what = describe("Affine", x=x, W=W, b=b, dout=dout)
    before = snapshot(x=x, W=W, b=b, dout=dout)
    n = x.shape[0]
    d, m = W.shape
    x2 = x.reshape(n, d)
    x64, W64, b64, dout64 = (a.astype(F64) for a in (x, W, b, dout))
    out_dt = np.result_type(x, W, b)
    xw_dt = np.result_type(x, W)  # x @ W runs in this dtype even when b widens out (as in the book)
    dx_dt = np.result_type(dout, W)
    dW_dt = np.result_type(x, dout)
    db_dt = dout.dtype
    if n:
        ref = book.Affine(W64, b64)
        ref_out = book_call(ref.forward, x64)
        ref_dx = book_call(ref.backward, dout64)
        ref_dW, ref_db = ref.dW, ref.db
    else:  # the book's x.reshape(0, -1) raises for an empty batch
        ref_out, ref_dx = np.zeros((0, m)), np.zeros(x.shape)
        ref_dW, ref_db = np.zeros((d, m)), np.zeros(m)
    with np.errstate(all="ignore"):
        ax, aW, ab, ad = np.abs(x64.reshape(n, d)), np.abs(W64), np.abs(b64), np.abs(dout64)
        out_bound = product_bound(d + 1, xw_dt, np.hstack([ax, np.ones((n, 1))]), np.vstack([aW, ab]))
        dx_bound = product_bound(m, dx_dt, ad, aW.T).reshape(x.shape)
        dW_bound = product_bound(n, dW_dt, ax.T, ad)
        db_bound = 2 * (n + 2) * np.finfo(db_dt).eps * ad.sum(axis=0)

    def f32_overflow(dt, a_fin, b_fin):
        # float32 products and sums of +/-1e20 overflow where float64 does not:
        # those entries are compared across backends only.
        if dt != F32:
            return None
        return (a_fin @ b_fin) > np.finfo(np.float32).max / 8

    fx, fW, fd = finite_part(x2), finite_part(W), finite_part(dout)
    x1, W1 = np.hstack([x2, np.ones((n, 1), x2.dtype)]), np.vstack([W.astype(F64), b.astype(F64)[None, :]])
    nan_out = ieee_nan(x1, W1)
    nan_dx = ieee_nan(dout, W.T).reshape(x.shape)
    nan_dW = ieee_nan(x2.T, dout)
    skip_out = f32_overflow(xw_dt, np.hstack([fx, np.ones((n, 1))]), np.vstack([fW, finite_part(b)]))
    skip_dx = f32_overflow(dx_dt, fd, fW.T)
    skip_dx = None if skip_dx is None else skip_dx.reshape(x.shape)
    skip_dW = f32_overflow(dW_dt, fx.T, fd)
    skip_db = f32_overflow(db_dt, np.ones((1, n)), fd)
    skip_db = None if skip_db is None else skip_db[0]

    def run():
        layer = bprop.Affine(W, b)
        with warnings.catch_warnings():
            # matmul's warnings on inf/NaN are tested on their own below
            # (test_affine_nonfinite_values_do_not_warn); here: the values.
            warnings.simplefilter("ignore", RuntimeWarning)
            out = layer.forward(x)
            state = (layer.x, layer.original_x_shape)
            dx = layer.backward(dout)
        assert layer.W is W and layer.b is b, "Affine must keep W and b by reference"
        return out, state, dx, layer.dW, layer.db

    results = on_backends(run)
    for name, (out, (lx, shape), dx, dW, db) in results.items():
        w = f"{what} on {name}"
        assert_meta(out, out_dt, (n, m), f"{w}: forward")
        assert_within(out, ref_out, out_bound, f"{w}: forward vs book (float64)", skip=skip_out, nan_ok=nan_out)
        assert shape == x.shape and type(shape) is tuple, f"{w}: original_x_shape {shape!r}, expected {x.shape}"
        assert_identical(lx, x2, f"{w}: Affine.x (the input as (N, D))")
        assert_meta(dx, dx_dt, x.shape, f"{w}: backward dx")
        assert_within(dx, ref_dx, dx_bound, f"{w}: dx vs book (float64)", skip=skip_dx, nan_ok=nan_dx)
        assert_meta(dW, dW_dt, (d, m), f"{w}: dW")
        assert_within(dW, ref_dW, dW_bound, f"{w}: dW vs book (float64)", skip=skip_dW, nan_ok=nan_dW)
        assert_meta(db, db_dt, (m,), f"{w}: db")
        assert_within(db, ref_db, db_bound, f"{w}: db vs book (float64)", skip=skip_db)
    if len(results) == 2:
        a, b_ = results.values()
        # Small products run on bprop's own loops on the compiled backend and
        # on BLAS on the NumPy one (same sums, perhaps another order; and
        # BLAS may skip zero factors where the loops give IEEE's NaN).
        assert_within(a[0], b_[0], out_bound, f"{what}: forward, cython vs numpy", skip=skip_out, nan_ok=nan_out)
        assert_within(a[2], b_[2], dx_bound, f"{what}: dx, cython vs numpy", skip=skip_dx, nan_ok=nan_dx)
        assert_within(a[3], b_[3], dW_bound, f"{what}: dW, cython vs numpy", skip=skip_dW, nan_ok=nan_dW)
        # Column sums may differ in summation order (NumPy sums a single
        # column pairwise): within the rounding bound.
        assert_within(a[4], b_[4], db_bound, f"{what}: db, cython vs numpy")
    assert_unchanged(before, what, x=x, W=W, b=b, dout=dout)


#: bprop computes a row's loss as (max - x[t]) + log(sum), which keeps
#: log(sum) next to huge scores (test_loss_is_exact_for_large_tied_scores),
#: so no extra rounding allowance is needed beyond the dtype tolerance.
LOSS_SCORE_ROUNDING = 0.0


def exact_loss(x64, labels):
    """mean over rows of logsumexp(x) - x[t], in float64 without cancellation."""
    rows = np.arange(x64.shape[0])
    with np.errstate(all="ignore"):
        mx = np.max(x64, axis=1)
        s = np.sum(np.exp(x64 - mx[:, None]), axis=1)
        return np.mean((mx - x64[rows, labels]) + np.log(s))


def check_softmax_with_loss(x, t):
    what = describe("SoftmaxWithLoss", x=x, t=t)
    before = snapshot(x=x, t=t)
    n, c = x.shape
    onehot = t.ndim == 2
    labels = np.argmax(t, axis=1) if onehot else t.astype(np.int64)
    x64 = x.astype(F64)
    ref_y = book_call(book.softmax, x64)
    ref_loss = exact_loss(x64, labels)
    ref_dx = (ref_y - np.eye(c)[labels]) / n
    with np.errstate(all="ignore"):
        scale = np.abs(np.max(x64, axis=1)) + np.abs(x64[np.arange(n), labels])
        loss_allowance = LOSS_SCORE_ROUNDING * np.mean(np.where(np.isfinite(scale), scale, 0.0))
    dx_dt = np.result_type(x, t) if onehot else x.dtype

    def run():
        layer = bprop.SoftmaxWithLoss()
        loss = layer.forward(x, t)
        state = (layer.loss, layer.y, layer.t)
        return loss, state, layer.backward(), layer.backward(dout=3.0)

    results = on_backends(run)
    for name, (loss, (kept_loss, y, kept_t), dx, dx3) in results.items():
        w = f"{what} on {name}"
        assert isinstance(loss, np.floating) and loss.dtype == x.dtype, (
            f"{w}: loss is {type(loss).__name__}, expected a numpy {x.dtype} scalar"
        )
        assert_within(loss, ref_loss, loss_allowance, f"{w}: loss vs exact log-sum-exp (float64)", dtype=x.dtype)
        assert_identical(kept_loss, loss, f"{w}: SoftmaxWithLoss.loss")
        assert_meta(y, x.dtype, (n, c), f"{w}: SoftmaxWithLoss.y")
        assert_close_to(y, ref_y, f"{w}: y vs book softmax (float64)")
        assert_identical(kept_t, t, f"{w}: SoftmaxWithLoss.t")
        assert_meta(dx, dx_dt, (n, c), f"{w}: backward")
        # y carries x's precision even when a float64 one-hot t widens dx.
        assert_close_to(dx, ref_dx, f"{w}: backward vs book (float64)", dtype=x.dtype)
        # The book's backward on this layer's own y: the same operations.
        if onehot or c > 1:
            ref = book.SoftmaxWithLoss()
            ref.y, ref.t = y, t
            same_y = book_call(ref.backward)
        else:  # one class: the book's t.size == y.size would read the labels as one-hot
            same_y = y.copy()
            same_y[np.arange(n), t] -= 1
            same_y = same_y / n
        assert_same_formula(dx, same_y, name, f"{w}: backward vs book formula on the same y")
        assert_identical(dx3, dx, f"{w}: backward ignores dout")
    if len(results) == 2:
        a, b = results.values()
        assert_close_to(a[0], b[0], f"{what}: loss, cython vs numpy")
        assert_close_to(a[1][1], b[1][1], f"{what}: y, cython vs numpy")
        assert_close_to(a[2], b[2], f"{what}: backward, cython vs numpy")
    assert_unchanged(before, what, x=x, t=t)


def check_softmax(x):
    what = describe("functions.softmax", x=x)
    before = snapshot(x=x)
    results = on_backends(lambda: F.softmax(x))
    for name, y in results.items():
        w = f"{what} on {name}"
        assert_meta(y, x.dtype, x.shape, w)
        if x.size:  # the book's np.max has no identity for an empty axis
            assert_close_to(y, book_call(book.softmax, x.astype(F64)), f"{w}: vs book (float64)")
    if len(results) == 2:
        assert_close_to(*results.values(), f"{what}: cython vs numpy")
    assert_unchanged(before, what, x=x)


# --- hypothesis-driven comparisons --------------------------------------------------

@HYPOTHESIS
@given(case=elementwise_cases())
@example(case=(make(np.zeros((0, 5)), F32), make(np.zeros((0, 5)), F32)))
@example(case=(make([[-0.0]], F64, "F", True), make([[2.0]], F64, "strided")))
@example(case=(make(ALL_SPECIALS, F32), make(ALL_SPECIALS[::-1], F32, "reversed", True)))
@example(case=(make(ALL_SPECIALS, F64, "strided", True), make(ALL_SPECIALS, F32)))
@example(case=(make(np.linspace(-3, 3, 35).reshape(5, 7), F32, "transposed"), make(np.ones((5, 7)), F64, "F")))
def test_relu(case):
    check_relu(*case)


@HYPOTHESIS
@given(case=elementwise_cases())
@example(case=(make(np.zeros((0, 5)), F64), make(np.zeros((0, 5)), F64)))
@example(case=(make([[-0.0]], F32, "F", True), make([[3.0]], F32, "strided")))
@example(case=(make(ALL_SPECIALS + [-89.0, -104.0, 89.0], F32), make(np.ones(12), F32, "reversed", True)))
@example(case=(make(ALL_SPECIALS + [-710.0, -745.0, 710.0], F64, "strided"), make(np.full(12, 1e20), F64)))
@example(case=(make(np.linspace(-9, 9, 35).reshape(5, 7), F64, "transposed"), make(np.ones((5, 7)), F32, "F")))
def test_sigmoid(case):
    check_sigmoid(*case)


@HYPOTHESIS
@given(case=affine_cases())
@example(case=(make(np.zeros((0, 3)), F32), make(np.ones((3, 2)), F32), make([1, 2], F32), make(np.zeros((0, 2)), F32)))
@example(case=(make([[2.0]], F64, "F", True), make([[-3.0]], F64, "strided"), make([0.5], F64, "C", True), make([[1.0]], F64)))
@example(case=(
    make(np.arange(15.0).reshape(5, 3) - 7, F32, "transposed"), make(np.arange(21.0).reshape(3, 7) / 8, F64, "F"),
    make(np.arange(7.0), F32, "reversed"), make(np.ones((5, 7)), F32, "strided", True),
))
@example(case=(
    make([[1e20, 1.0, -1e20]], F64), make([[1.0], [1.0], [1.0]], F64), make([0.0], F64), make([[1e20]], F64),
))
def test_affine(case):
    check_affine(*case)


@HYPOTHESIS
@given(case=softmax_loss_cases())
@example(case=(make([[0.5]], F32), make([0], np.int64)))
@example(case=(make([[0.5]], F64, "F", True), make([[1.0]], F64, "C", True)))
@example(case=(make(np.linspace(-5, 5, 35).reshape(5, 7), F32, "transposed", True), make([0, 6, 3, 1, 2], np.int32, "strided")))
@example(case=(make([[1e20, -1e20, 0.0], [-np.inf, 1.0, 2.0], [np.nan, 0, 0]], F64), make(np.eye(3)[[0, 0, 1]], F64)))
def test_softmax_with_loss(case):
    check_softmax_with_loss(*case)


@HYPOTHESIS
@given(x=softmax_inputs())
@example(x=make(np.zeros((0, 4)), F32))
@example(x=make([[1e20, -1e20, 0.0, -0.0]], F64, "F", True))
@example(x=make(np.linspace(-50, 50, 105).reshape(3, 5, 7), F32, "transposed"))
def test_functions_softmax(x):
    check_softmax(x)


# --- one large size, plainly (and with the kernels' OpenMP path) ------------------

LARGE = (513, 1025)


def sprinkle(a, rng, fraction=1e-3):
    """Put the special values at random positions of ``a`` (in place)."""
    flat = a.reshape(-1)
    k = min(flat.size, max(len(SPECIALS), int(flat.size * fraction)))
    flat[rng.choice(flat.size, size=k, replace=False)] = np.resize(np.array(SPECIALS, dtype=a.dtype), k)
    return a


class kernel_threads:
    """Run the compiled kernels with ``n`` threads, then restore."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.previous = bprop.get_num_threads()
        bprop.set_num_threads(self.n)

    def __exit__(self, *exc):
        bprop.set_num_threads(self.previous)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_large_arrays(dtype, threads):
    rng = np.random.default_rng(20240 + threads)
    x = sprinkle((rng.standard_normal(LARGE) * 8).astype(dtype), rng)
    dout = sprinkle(rng.standard_normal(LARGE).astype(dtype), rng)
    with kernel_threads(threads):
        check_relu(x, dout)
        check_relu(relayout(x, "F"), relayout(dout, "strided", True))
        check_sigmoid(x, dout)
        check_sigmoid(relayout(x, "transposed", True), dout)
        check_softmax(x)
        # Finite scores for the loss: one NaN would make the whole mean NaN.
        xs = (rng.standard_normal(LARGE) * 8).astype(dtype)
        check_softmax_with_loss(xs, rng.integers(0, LARGE[1], LARGE[0]))
        check_softmax_with_loss(relayout(xs, "F"), np.eye(LARGE[1], dtype=dtype)[rng.integers(0, LARGE[1], LARGE[0])])
        W = (rng.standard_normal((LARGE[1], 129)) / 30).astype(dtype)
        b = rng.standard_normal(129).astype(dtype)
        check_affine(relayout(xs, "F"), W, b, rng.standard_normal((LARGE[0], 129)).astype(dtype))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_elementwise_above_the_sigmoid_threading_threshold(dtype):
    # Sigmoid's kernel goes parallel at 2**13 elements (8 x 2**16 work); ReLU's at 2**16.
    # Three threads: chunks that do not divide the size evenly.
    rng = np.random.default_rng(7)
    shape = (1031, 2053)
    x = sprinkle((rng.standard_normal(shape) * 20).astype(dtype), rng)
    dout = rng.standard_normal(shape).astype(dtype)
    with kernel_threads(3):
        check_sigmoid(x, dout)
        check_relu(x, dout)


# --- contracts beyond the values -------------------------------------------------

def _special_values(shape, dtype, rng):
    a = rng.standard_normal(shape).astype(dtype) * 3
    return sprinkle(a, rng, fraction=0.2)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_caller_arrays_are_never_modified(backend, dtype, layout):
    rng = np.random.default_rng(3)
    x = relayout(_special_values((6, 5), dtype, rng), layout)
    dout = relayout(_special_values((6, 5), dtype, rng), layout)
    W = relayout(_special_values((5, 4), dtype, rng), layout)
    b = relayout(_special_values((4,), dtype, rng), layout)
    dout_affine = relayout(_special_values((6, 4), dtype, rng), layout)
    labels = relayout(rng.integers(0, 5, 6), layout)
    onehot = relayout(np.eye(5, dtype=dtype)[rng.integers(0, 5, 6)], layout)
    arrays = dict(x=x, dout=dout, W=W, b=b, dout_affine=dout_affine, labels=labels, onehot=onehot)
    before = snapshot(**arrays)
    what = describe("all layers", x=x)

    relu = bprop.Relu()
    relu.forward(x)
    relu.backward(dout)  # the book's Relu.backward zeroes dout in place
    sigmoid = bprop.Sigmoid()
    sigmoid.forward(x)
    sigmoid.backward(dout)
    affine = bprop.Affine(W, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # see test_affine_nonfinite_values_do_not_warn
        affine.forward(x)
        affine.backward(dout_affine)
    for t in (labels, onehot):
        loss = bprop.SoftmaxWithLoss()
        loss.forward(x, t)
        loss.backward()
    F.softmax(x), F.sigmoid(x), F.relu(x)
    assert_unchanged(before, f"{what} on {backend}", **arrays)


def test_relu_backward_leaves_dout_alone_unlike_the_book(backend):
    x = np.array([[-1.0, 2.0, 0.0]])
    dout = np.array([[5.0, 6.0, 7.0]])
    layer = bprop.Relu()
    layer.forward(x)
    dx = layer.backward(dout)
    assert_identical(dout, np.array([[5.0, 6.0, 7.0]]), "Relu.backward modified dout")
    assert_identical(dx, np.array([[0.0, 6.0, 0.0]]), "Relu.backward")
    assert not np.shares_memory(dx, dout)


def test_affine_gradients_are_new_arrays_each_backward(backend):
    rng = np.random.default_rng(11)
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    layer = bprop.Affine(W, b)
    x1, d1 = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer.forward(x1)
    dx1 = layer.backward(d1)
    dW1, db1 = layer.dW, layer.db
    kept = [a.copy() for a in (dx1, dW1, db1)]

    x2, d2 = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    layer.forward(x2)
    dx2 = layer.backward(d2)
    for old, new, name in ((dx1, dx2, "dx"), (dW1, layer.dW, "dW"), (db1, layer.db, "db")):
        assert new is not old and not np.shares_memory(new, old), f"Affine.backward on {backend} reused {name}"
    for old, copy, name in zip((dx1, dW1, db1), kept, ("dx", "dW", "db")):
        assert_identical(old, copy, f"Affine on {backend}: an earlier {name} changed")
    for g in (layer.dW, layer.db, dx2):
        for a in (W, b, x2, d2):
            assert not np.shares_memory(g, a)
    assert_close_to(layer.dW, x2.T @ d2, f"Affine.dW on {backend}")
    assert_close_to(layer.db, d2.sum(axis=0), f"Affine.db on {backend}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_affine_keeps_params_by_reference(backend, dtype):
    rng = np.random.default_rng(12)
    params = {"W": rng.standard_normal((4, 3)).astype(dtype), "b": rng.standard_normal(3).astype(dtype)}
    layer = bprop.Affine(params["W"], params["b"])
    assert layer.W is params["W"] and layer.b is params["b"]
    x = rng.standard_normal((2, 4)).astype(dtype)
    out1 = layer.forward(x)
    # In place, as the book's SGD step and numerical gradient do.
    params["W"] -= 0.5
    params["W"][1, 2] = 3.0
    params["b"][...] = [1.0, -2.0, 0.25]
    out2 = layer.forward(x)
    expected = book.Affine(params["W"], params["b"]).forward(x)
    assert_close_to(out2, expected, f"Affine on {backend}: forward after an in-place update")
    assert not np.allclose(out1, out2)
    dout = np.ones((2, 3), dtype)
    assert_close_to(layer.backward(dout), dout @ params["W"].T, f"Affine on {backend}: dx after the update")


AFFINE_DTYPE_COMBOS = [
    # x, W, b, dout
    (F32, F64, F64, F64),
    (F64, F32, F32, F32),
    (F32, F32, F64, F32),
    (F32, F32, F32, F64),
    (F32, F64, F32, F32),
    (np.dtype(np.float16), F32, F32, F32),
    (np.dtype(np.int64), F32, F32, F32),
    (np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.int64), np.dtype(np.int32)),
]


@pytest.mark.parametrize("dts", AFFINE_DTYPE_COMBOS, ids=lambda d: "-".join(t.name for t in d))
def test_affine_dtype_promotion(backend, dts):
    x_dt, W_dt, b_dt, d_dt = dts
    rng = np.random.default_rng(13)
    x = rng.integers(-4, 5, (3, 5)).astype(x_dt)
    W = (rng.integers(-4, 5, (5, 2)) / (1 if W_dt.kind in "iu" else 4)).astype(W_dt)
    b = rng.integers(-4, 5, 2).astype(b_dt)
    dout = rng.integers(-4, 5, (3, 2)).astype(d_dt)
    layer, ref = bprop.Affine(W, b), book.Affine(W, b)
    what = describe("Affine", x=x, W=W, b=b, dout=dout) + f" on {backend}"
    got = (layer.forward(x), layer.backward(dout), layer.dW, layer.db)
    want = (ref.forward(x), ref.backward(dout), ref.dW, ref.db)
    for name, g, e in zip(("out", "dx", "dW", "db"), got, want):
        # Small integers and quarters: every result is exact in every dtype.
        assert_identical(g, e, f"{what}: {name}")
    if (x_dt, W_dt) == (F32, F64):
        assert got[0].dtype == F64, "float32 x with float64 W must give float64 out"


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_affine_flattens_image_batches(backend, dtype):
    rng = np.random.default_rng(14)
    x = rng.random((7, 1, 28, 28)).astype(dtype)
    W = (rng.standard_normal((784, 10)) * 0.01).astype(dtype)
    b = np.zeros(10, dtype)
    dout = rng.standard_normal((7, 10)).astype(dtype)
    layer, ref = bprop.Affine(W, b), book.Affine(W, b)
    what = describe("Affine", x=x, W=W) + f" on {backend}"
    out = layer.forward(x)
    assert_meta(out, dtype, (7, 10), f"{what}: forward")
    assert_close_to(out, ref.forward(x), f"{what}: forward vs book")
    assert layer.original_x_shape == (7, 1, 28, 28)
    assert_identical(layer.x, x.reshape(7, 784), f"{what}: Affine.x")
    dx = layer.backward(dout)
    assert_meta(dx, dtype, (7, 1, 28, 28), f"{what}: dx")
    assert_close_to(dx, ref.backward(dout), f"{what}: dx vs book")
    assert_close_to(layer.dW, ref.dW, f"{what}: dW vs book")
    assert_close_to(layer.db, ref.db, f"{what}: db vs book")


#: Tolerances for results in dtypes the conftest does not cover: float16
#: keeps 11 bits (eps 1e-3), and the book's and bprop's sigmoid round differently.
OTHER_RTOL = {np.dtype(np.float16): 4e-3, F32: RTOL[F32], F64: RTOL[F64]}
OTHER_ATOL = {np.dtype(np.float16): 1e-3, F32: ATOL[F32], F64: ATOL[F64]}
OTHER_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint64, np.float16]


@pytest.mark.parametrize("dtype", [np.dtype(d) for d in OTHER_DTYPES], ids=str)
def test_other_dtypes_take_the_numpy_path_with_the_books_dtypes(backend, dtype):
    # Under "cython" this also shows the dispatch: the compiled kernels take
    # float32/float64 buffers only and would raise on these dtypes.
    x = np.array([[-3, -1, 0, 1, 2], [4, 0, -2, 3, 1]])
    if dtype.kind == "u":
        x = np.abs(x)
    x = x.astype(dtype)
    dout = np.array([[1, -2, 3, 0, 2], [2, 1, -1, 4, 3]]).astype(dtype) if dtype.kind != "u" else np.ones((2, 5), dtype)
    W = np.arange(10).reshape(5, 2).astype(dtype)
    b = np.array([1, 2]).astype(dtype)
    labels = np.array([1, 2])
    onehot = np.eye(5, dtype=dtype)[labels]
    what = describe("layers", x=x) + f" on {backend}"

    def check(actual, book_result, name, exact=None):
        """dtype as the book's; values as the book's, or as ``exact`` (float64) where given."""
        dt = actual.dtype
        assert dt == book_result.dtype, f"{what}: {name} dtype {dt}, the book's {book_result.dtype}"
        if exact is None:
            assert_identical(actual, book_result, f"{what}: {name}")
        else:
            np.testing.assert_allclose(actual, exact, rtol=OTHER_RTOL[dt], atol=OTHER_ATOL[dt], err_msg=f"{what}: {name}")

    x64, dout64 = x.astype(F64), dout.astype(F64)
    sig_exact = 1 / (1 + np.exp(-x64))
    soft_exact = book.softmax(x64)
    with np.errstate(all="ignore"):
        # The book's own values go wrong for unsigned input (-x and x - max
        # wrap around), so sigmoid and softmax values are checked against
        # float64 formulas; dtypes always against the book.
        relu, ref_relu = bprop.Relu(), book.Relu()
        check(relu.forward(x), ref_relu.forward(x), "Relu.forward")
        assert_identical(relu.mask, ref_relu.mask, f"{what}: Relu.mask")
        check(relu.backward(dout), ref_relu.backward(dout.copy()), "Relu.backward")
        check(F.relu(x), ref_relu.forward(x), "functions.relu")

        sig, ref_sig = bprop.Sigmoid(), book.Sigmoid()
        check(sig.forward(x), ref_sig.forward(x), "Sigmoid.forward", sig_exact)
        own = sig.out.astype(F64)
        check(sig.backward(dout), ref_sig.backward(dout), "Sigmoid.backward", dout64 * (1 - own) * own)
        check(F.sigmoid(x), book.sigmoid(x), "functions.sigmoid", sig_exact)

        aff, ref_aff = bprop.Affine(W, b), book.Affine(W, b)
        check(aff.forward(x), ref_aff.forward(x), "Affine.forward")
        check(aff.backward(dout[:, :2]), ref_aff.backward(dout[:, :2]), "Affine.backward")
        check(aff.dW, ref_aff.dW, "Affine.dW")
        check(aff.db, ref_aff.db, "Affine.db")

        for t in (labels, onehot):
            swl, ref_swl = bprop.SoftmaxWithLoss(), book.SoftmaxWithLoss()
            loss, ref_loss = swl.forward(x, t), ref_swl.forward(x, t)
            assert type(loss) is type(ref_loss), f"{what}: loss is {type(loss).__name__}, the book's {type(ref_loss).__name__}"
            rdt = swl.y.dtype
            np.testing.assert_allclose(
                loss, exact_loss(x64, labels), rtol=OTHER_RTOL[rdt], atol=OTHER_ATOL[rdt], err_msg=f"{what}: loss"
            )
            check(swl.y, ref_swl.y, "SoftmaxWithLoss.y", soft_exact)
            check(swl.backward(), ref_swl.backward(), "SoftmaxWithLoss.backward", (soft_exact - np.eye(5)[labels]) / 2)
        check(F.softmax(x), book.softmax(x), "functions.softmax", soft_exact)

    if dtype == np.int64:  # the brief's two examples, spelled out
        assert bprop.Relu().forward(x).dtype == np.int64
        assert bprop.Sigmoid().forward(x).dtype == np.float64


def test_softmax_with_loss_rejects_an_empty_batch(backend):
    for t in (np.zeros(0, np.int64), np.zeros((0, 3))):
        with pytest.raises(ValueError, match="at least one sample"):
            bprop.SoftmaxWithLoss().forward(np.zeros((0, 3)), t)


# --- regressions: examples hypothesis found, kept by name -----------------------------

def test_sigmoid_float32_backward_near_one_compared_from_the_same_out():
    # sigmoid(15) in float32 differs by one ulp between the backends; 1 - out
    # is then 17% apart, so the backward passes are compared on the same out.
    check_sigmoid(make([0.0, 15.0], F32), make([0.0, 17.0], F32))


def test_affine_float32_product_widened_by_a_float64_bias():
    # x @ W runs in float32 and b then widens out to float64, as in the book:
    # the product is float32-accurate although out is float64.
    x = make([[[0.0, -1.0782287], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], F32)
    W = make([[0, 0, 0, 0], [0, 0, 0, 5], [0, 0, 0, 0], [0, 0, 0, 2]], F32)
    check_affine(x, W, make([0.0, 0.0, 0.0, 0.0], F64), make(np.zeros((3, 4)), F32))


def test_softmax_with_loss_single_class_labels():
    # With one class the book's t.size == y.size test reads labels as one-hot
    # (and its loss fails); bprop goes by t.ndim: the gradient is exactly 0.
    for dtype in FLOAT_DTYPES:
        check_softmax_with_loss(make([[0.5]], dtype), make([0], np.int64))
        check_softmax_with_loss(make([[0.5], [-3.0]], dtype, "F"), make([0, 0], np.int32))
        for name in BACKENDS:
            with bprop.use_backend(name):
                layer = bprop.SoftmaxWithLoss()
                assert layer.forward(make([[0.5], [2.0]], dtype), np.array([0, 0])) == 0
                assert_identical(layer.backward(), np.zeros((2, 1), dtype), f"single class on {name}")


def test_softmax_with_loss_label_column():
    # An integer (N, 1) t with C > 1 holds labels, as the book's
    # ch07/gradient_check.py passes its one label (T of shape (1, 1)): the
    # same loss and gradient as the (N,) labels, on both backends; t is kept
    # as given. With C == 1 an (N, 1) t is a one-hot of x's shape.
    x = make(np.linspace(-2, 3, 12).reshape(4, 3), F64)
    labels = np.array([2, 0, 1, 1])
    for name in BACKENDS:
        with bprop.use_backend(name):
            column, flat = bprop.SoftmaxWithLoss(), bprop.SoftmaxWithLoss()
            loss = column.forward(x, labels.reshape(4, 1))
            assert_identical(loss, flat.forward(x, labels), f"label column loss on {name}")
            assert_identical(column.backward(), flat.backward(), f"label column gradient on {name}")
            assert column.t.shape == (4, 1)
            with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
                column.forward(x, np.array([[0], [3], [1], [1]]))
            one_class = bprop.SoftmaxWithLoss()
            assert one_class.forward(x[:, :1], np.ones((4, 1), np.int64)) == 0


def test_softmax_with_loss_float32_label_entries_from_the_same_y():
    # The compiled float32 kernel computes (y - 1) / N in double: one ulp
    # from the book's float32 formula on the same y.
    x = make(np.linspace(-5, 5, 35).reshape(5, 7), F32, "transposed", True)
    check_softmax_with_loss(x, make([0, 6, 3, 1, 2], np.int32, "strided"))


# --- regressions: bugs these tests found --------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "one-hot"])
def test_loss_is_exact_for_large_tied_scores(dtype, onehot):
    # Two equal scores: the exact loss is log 2 whatever their size. Computing
    # (log(sum) + max) - x[t] rounded log 2 away next to 1e20 (giving 0.0)
    # and kept only 6 digits next to 1e10.
    for scale in (1e10, 1e20, -1e20):
        x = np.array([[scale, scale], [scale, scale]], dtype=dtype)
        t = np.eye(2, dtype=dtype)[[0, 1]] if onehot else np.array([0, 1])
        for name in BACKENDS:
            with bprop.use_backend(name):
                loss = bprop.SoftmaxWithLoss().forward(x, t)
            assert_close_to(loss, np.log(2.0), f"SoftmaxWithLoss loss for scores {scale:g}, {dtype} on {name}", dtype=dtype)


@pytest.mark.parametrize("value", [np.inf, np.nan, 1e300], ids=["inf", "nan", "overflow"])
def test_affine_nonfinite_values_do_not_warn(backend, value):
    # Every kernel path follows IEEE silently (the NumPy twin silences
    # NumPy's warnings on purpose); Affine's matmul used to warn on inf * 0
    # and on overflow, which filterwarnings=error turns into an exception.
    x = np.array([[value, 1.0], [2.0, 3.0]])
    W = np.array([[0.0, 1.0], [1.0, 1e10]])
    dout = np.array([[value, 0.0], [1.0, 1.0]])
    layer = bprop.Affine(W, np.zeros(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = layer.forward(x)
        dx = layer.backward(dout)
    with np.errstate(all="ignore"):
        assert_identical(out, x @ W, f"Affine forward with {value} on {backend}")
        assert_identical(dx, dout @ W.T, f"Affine backward with {value} on {backend}")


def test_byte_swapped_inputs_give_the_books_dtypes(backend):
    # The book's exp gives a native float64 for '>f8' input; bprop used to
    # keep '>f8'.
    x = np.array([[-1.0, 0.0, 2.0]], dtype=">f8")
    with np.errstate(all="ignore"):
        want = {
            "Sigmoid.forward": book.Sigmoid().forward(x).dtype,
            "functions.sigmoid": book.sigmoid(x).dtype,
            "functions.softmax": book.softmax(x).dtype,
            "SoftmaxWithLoss.y": book.softmax(x).dtype,
        }
    layer = bprop.SoftmaxWithLoss()
    layer.forward(x, np.array([1]))
    got = {
        "Sigmoid.forward": bprop.Sigmoid().forward(x).dtype,
        "functions.sigmoid": F.sigmoid(x).dtype,
        "functions.softmax": F.softmax(x).dtype,
        "SoftmaxWithLoss.y": layer.y.dtype,
    }
    assert {k: str(v) for k, v in got.items()} == {k: str(v) for k, v in want.items()}


def test_softmax_with_loss_float32_scores_float64_one_hot():
    # dx is float64 (NumPy promotion, as in the book) but only as accurate as
    # the float32 y it is made of.
    x = make(np.zeros((5, 4)), F32)
    check_softmax_with_loss(x, make(np.eye(4)[[0, 1, 2, 3, 0]], F64))


def test_affine_zero_times_nan_in_an_outer_product():
    # dx = dout @ W.T with N = M = 1 is an outer product: the book's np.dot
    # skips the zero dout (0 * NaN gives 0), np.matmul gives IEEE's NaN.
    x = make(np.zeros((1, 3, 4)), F32)
    W = make(np.zeros((12, 1)), F32)
    W[11, 0] = np.nan
    check_affine(x, W, make([0.0], F32), make([[0.0]], F32))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_affine_backward_without_input_grad_gives_the_same_parameter_gradients(backend, dtype):
    rng = np.random.default_rng(12)
    W, b = rng.standard_normal((6, 3)).astype(dtype), rng.standard_normal(3).astype(dtype)
    x, dout = rng.standard_normal((5, 2, 3)).astype(dtype), rng.standard_normal((5, 3)).astype(dtype)
    full, params_only = bprop.Affine(W, b), bprop.Affine(W, b)
    full.forward(x)
    params_only.forward(x)
    dx = full.backward(dout)
    assert dx.shape == x.shape
    assert params_only.backward(dout, input_grad=False) is None
    assert_identical(params_only.dW, full.dW, f"Affine.dW without dx on {backend}")
    assert_identical(params_only.db, full.db, f"Affine.db without dx on {backend}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layer_cls", [bprop.Relu, bprop.Sigmoid], ids=lambda c: c.__name__)
def test_layer_shortcut_and_checked_path_agree(backend, layer_cls, dtype):
    """A C-ordered float array takes the layers' shortcut straight into the kernel; the same
    values in Fortran order take the checked path. Both must give identical results."""
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((6, 7)) * 4).astype(dtype)
    x[0, :3] = [0.0, -0.0, np.nan]
    dout = rng.standard_normal((6, 7)).astype(dtype)
    results = []
    for order in "CF":
        layer = layer_cls()
        out = layer.forward(np.asarray(x, order=order))
        dx = layer.backward(np.asarray(dout, order=order))
        state = layer.mask if layer_cls is bprop.Relu else layer.out
        for a in (out, dx, state):
            assert a.flags.c_contiguous and a.shape == x.shape
        results.append((out, dx, state))
    for c_res, f_res, what in zip(*results, ("out", "dx", "state")):
        assert_identical(c_res, f_res, f"{layer_cls.__name__} {what} on {backend}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_shortcut_and_checked_path_agree(backend, dtype):
    """int64 labels with C-ordered float scores take SoftmaxWithLoss's shortcut; int32 labels
    and Fortran-ordered scores the checked path. Same loss, y and dx, bit for bit."""
    rng = np.random.default_rng(22)
    x = (rng.standard_normal((9, 5)) * 3).astype(dtype)
    labels = rng.integers(0, 5, 9)
    results = []
    for xs, t in ((x, labels), (np.asfortranarray(x), labels.astype(np.int32))):
        layer = bprop.SoftmaxWithLoss()
        loss = layer.forward(xs, t)
        assert layer.t is t and type(loss) is np.dtype(dtype).type
        results.append((np.asarray(loss), layer.y, layer.backward()))
    for a, b, what in zip(*results, ("loss", "y", "dx")):
        assert_identical(a, b, f"SoftmaxWithLoss {what} on {backend}")
