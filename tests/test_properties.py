"""Property tests: random shapes, strides, dtypes and values never crash.

For every layer and function, on both backends, hypothesis draws arrays of
any real dtype (and some that are not real), in either byte order and in
C, Fortran, reversed, strided, unaligned, broadcast or read-only layouts,
with NaN and inf among the values. Each call must either return the right
result (checked against a float64 reference and against the NumPy backend)
or raise TypeError/ValueError with a message that names the caller; both
backends must agree on which.

Failures hypothesis found are kept as ``@example`` regression cases.
"""
import os

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import bprop
from bprop import Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from bprop import functions as F

SETTINGS = settings(
    max_examples=int(os.environ.get("BPROP_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,  # sanitizer and -O0 builds are slow
    derandomize=bool(os.environ.get("CI")),  # reproducible CI runs; local runs explore
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

REAL = ["float64", "float32", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint64"]
NOT_REAL = ["bool", "complex128", "object"]
LAYOUTS = ["C", "F", "reversed", "strided", "unaligned", "broadcast", "read-only"]

# Tolerances against the float64 reference, by result dtype (as tests/conftest.py, float16 added).
TOL = {"f8": (1e-7, 1e-12), "f4": (1.3e-6, 1e-6), "f2": (4e-3, 1e-3)}


def layout(a, kind):
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "reversed" and a.ndim:
        return np.flip(np.flip(a).copy())
    if kind == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "unaligned" and a.dtype.itemsize > 1 and a.dtype != object:
        buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
        u = buf[1:].view(a.dtype).reshape(a.shape)
        u[...] = a
        return u
    if kind == "broadcast" and a.ndim and a.shape[0]:
        return np.broadcast_to(a[:1], a.shape)
    if kind == "read-only":
        a = a.copy()
        a.flags.writeable = False
    return a


@st.composite
def arrays(draw, shape=None, dtypes=REAL, bound=None, not_real=0.05, min_dims=0, max_dims=3, nonneg=False):
    """An array of a drawn dtype, byte order, layout and values (NaN/inf unless ``bound``)."""
    if draw(st.integers(0, 99)) >= 100 - 100 * not_real:  # 0, the simplest draw, is a real dtype
        dt = np.dtype(draw(st.sampled_from(NOT_REAL)))
    else:
        dt = np.dtype(draw(st.sampled_from(dtypes)))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=5))
    if dt.kind == "f":
        if nonneg:
            elements = st.floats(min_value=0, width=8 * dt.itemsize) | st.just(np.nan)
        elif bound is None:
            elements = st.floats(width=8 * dt.itemsize)
        else:
            elements = st.floats(-bound, bound, width=8 * dt.itemsize) | st.just(np.nan)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        lim = bound if bound is not None else 1000
        elements = st.integers(max(int(info.min), -lim), min(int(info.max), lim))
    elif dt.kind == "c":
        elements = st.complex_numbers(max_magnitude=10)
    elif dt.kind == "b":
        elements = st.booleans()
    else:
        elements = st.just(1.0)
    a = draw(hnp.arrays(dt, shape, elements=elements))
    if dt.kind in "iufc" and dt.itemsize > 1 and draw(st.booleans()):
        a = a.astype(dt.newbyteorder(">"))
    return layout(a, draw(st.sampled_from(LAYOUTS)))


def outcome(fn, *args):
    """("ok", result) or ("raise", type, message); anything but TypeError/ValueError fails the test."""
    try:
        result = ("ok", fn(*args))
    except (TypeError, ValueError) as exc:
        event(f"raised {type(exc).__name__}")
        return ("raise", type(exc), str(exc))
    event("returned")
    return result


def on_numpy(fn, *args):
    with bprop.use_backend("numpy"):
        return outcome(fn, *args)


def native(dt):
    return np.dtype(dt).newbyteorder("=")


def close(actual, expected, dtype=None, scale=None, inputs=()):
    """``actual`` (any dtype) vs a float64 ``expected``; NaN matches NaN, inf matches inf.

    The tolerance is that of the least precise floating dtype among the
    result and ``inputs``: NumPy computes mixed-precision expressions such as
    ``dout * (1 - out)`` partly in the narrower dtype, as the book's code does.
    """
    a = np.asarray(actual)
    dt = native(dtype or a.dtype)
    floats = [native(d) for d in [dt] + [np.asarray(i).dtype for i in inputs] if np.dtype(d).kind == "f"]
    if floats:
        dt = min(floats, key=lambda d: d.itemsize)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    key = f"{dt.kind}{dt.itemsize}"
    if key not in TOL:  # integer results are exact
        np.testing.assert_array_equal(a, e)
        return
    rtol, atol = TOL[key]
    a = a.astype(np.float64)
    atol = atol if scale is None else atol + rtol * np.asarray(scale, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf
        ok = (a == e) | (np.isnan(a) & np.isnan(e)) | (np.abs(a - e) <= atol + rtol * np.abs(e))
    if not np.all(ok):
        bad = np.argwhere(~np.asarray(ok))[:5].tolist()
        raise AssertionError(f"{dt} results differ at {bad}:\nactual   {a[~ok][:5]}\nexpected {e[~ok][:5]}")


def agree(got, ref_numpy, where, inputs=(), scales=None):
    """The active backend and the NumPy backend: the same error, or results equal within tolerance.

    ``inputs`` and ``scales`` (one per result; None: the result's magnitude)
    are passed on to :func:`close`.
    """
    if got[0] == "raise" or ref_numpy[0] == "raise":
        assert got == ref_numpy
        assert got[2].startswith(where), got[2]
        return False
    results = list(zip(_flat(got[1]), _flat(ref_numpy[1])))
    for (a, b), scale in zip(results, scales or [None] * len(results)):
        a, b = np.asarray(a), np.asarray(b)
        assert native(a.dtype) == native(b.dtype)
        b = b.astype(np.float64)
        close(a, b, a.dtype, scale=np.abs(b) if scale is None else scale, inputs=inputs)
    return True


def _flat(r):
    return list(r) if isinstance(r, tuple) else [r]


def f64(a):
    return np.asarray(a).astype(np.float64)


def ieee(fn):
    def wrapped(*args):
        with np.errstate(all="ignore"):
            return fn(*args)

    return wrapped


@ieee
def ref_sigmoid(x):
    x = f64(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@ieee
def ref_softmax_rows(x):
    """Row-wise softmax of 2-D float64 ``x`` and its log-sum-exp, IEEE semantics (NaN rows stay NaN)."""
    m = np.max(x, axis=1, keepdims=True) if x.shape[1] else np.zeros((x.shape[0], 1))
    e = np.exp(x - m)
    s = np.sum(e, axis=1, keepdims=True)
    return e / s, (np.log(s) + m)[:, 0]


def result_float(dt):
    """The dtype NumPy's exp gives for ``dt``."""
    dt = native(dt)
    return dt if dt.kind == "f" else np.exp(np.zeros(1, dt)).dtype


# --------------------------------------------------------------------------
# Relu and Sigmoid (layers and functions)


@st.composite
def elementwise_case(draw):
    x = draw(arrays())
    if draw(st.integers(0, 9)) == 9:
        return x, draw(arrays())  # usually a different shape: must be a ValueError
    return x, draw(arrays(shape=x.shape))


def _unaligned_0d(v):
    u = np.zeros(9, np.uint8)[1:].view(np.float64).reshape(())
    u[...] = v
    return u


@SETTINGS
@given(case=elementwise_case())
@example(case=(np.array([np.nan, -np.inf, np.inf, -0.0]), np.ones(4)))  # NaN passes through, as in the book
@example(case=(np.array(3, dtype=np.uint8), np.array(2.0)))  # unsigned: mask is x == 0
def test_relu(backend, case):
    x, dout = case

    def run(x, dout):
        lay = Relu()
        out = lay.forward(x)
        return out, lay.backward(dout), F.relu(x)

    got = outcome(run, x, dout)
    if not agree(got, on_numpy(run, x, dout), "Relu"):
        return
    out, dx, out_fn = got[1]
    assert native(out.dtype) == native(x.dtype) and out.shape == x.shape
    assert native(dx.dtype) == native(dout.dtype) and dx.shape == x.shape
    with np.errstate(invalid="ignore"):
        mask = x <= 0
    np.testing.assert_array_equal(out, np.where(mask, 0, x))  # exact, NaN passes through
    np.testing.assert_array_equal(dx, np.where(mask, 0, dout))
    np.testing.assert_array_equal(out_fn, out)


@SETTINGS
@given(case=elementwise_case())
@example(case=(np.array(-2, dtype=np.int8), np.array(1.0)))  # float16 out, float64 dout: 1 - out rounds in float16
@example(case=(_unaligned_0d(2.015625), np.array(1.0)))  # layer and function may take different kernels
@example(case=(np.array([-1e308, -745.0, -40.0, 40.0, 1e308]), np.ones(5)))  # no overflow, no warning
@example(case=(np.array([-60000.0, 60000.0], np.float16), np.full(2, np.inf, np.float16)))  # inf * 0: NaN
@example(case=(np.array(1.5, np.float32), np.array(1.0)))  # float32 out an ulp apart across backends
@example(case=(np.array([4.9125, 5.069, 5.6275], np.float32), np.ones(3)))  # 1 - out cancels: 3e-5 apart
def test_sigmoid(backend, case):
    x, dout = case

    def run(x, dout):
        lay = Sigmoid()
        out = lay.forward(x)
        return out, lay.backward(dout), F.sigmoid(x)

    got = outcome(run, x, dout)
    # Each backend's backward starts from its own forward output, and the two
    # may differ by an ulp of out's dtype; 1 - out then cancels, so dx agrees
    # only to out's precision, relative to dout.
    ok = got[0] != "raise"  # else dout may not even be real
    if not agree(got, on_numpy(run, x, dout), "Sigmoid", inputs=(x, dout, got[1][0]) if ok else (),
                 scales=[None, np.abs(f64(dout)), None] if ok else None):
        return
    out, dx, out_fn = got[1]
    assert native(out.dtype) == result_float(x.dtype) and out.shape == x.shape
    close(out, ref_sigmoid(x))
    assert np.all((out >= 0) | np.isnan(out)) and np.all((out <= 1) | np.isnan(out))
    with np.errstate(all="ignore"):
        expected_dx = f64(dout) * (1 - f64(out)) * f64(out)
    assert native(dx.dtype) == native(np.result_type(native(dout.dtype), native(out.dtype)))
    close(dx, expected_dx, scale=np.abs(f64(dout)), inputs=(dout, out))
    # The layer and the function may take different kernels (e.g. an unaligned x): equal within rounding.
    close(out_fn, f64(out))


# --------------------------------------------------------------------------
# Affine


@st.composite
def affine_case(draw):
    n = draw(st.integers(0, 4))
    feat = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
    d = int(np.prod(feat))
    m = draw(st.integers(0, 4))
    # Mostly consistent shapes; sometimes not (must be a ValueError).
    wshape = (d, m) if draw(st.integers(0, 5)) < 5 else draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    bshape = (m,) if draw(st.integers(0, 5)) < 5 else draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=4))
    xshape = (n,) + feat if draw(st.integers(0, 9)) < 9 else draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    # Finite values in [-3, 3] (and NaN): sums of at most 9 products fit int8 and stay exact.
    x = draw(arrays(shape=xshape, bound=3))
    W = draw(arrays(shape=wshape, bound=3))
    b = draw(arrays(shape=bshape, bound=3))
    dout = draw(arrays(shape=(n, m), bound=3)) if draw(st.integers(0, 9)) < 9 else draw(arrays(bound=3))
    return x, W, b, dout


@SETTINGS
@given(case=affine_case())
@example(case=(np.zeros((0, 3)), np.ones((3, 2)), np.ones(2), np.zeros((0, 2))))  # empty batch: zero dW, db
@example(case=(np.ones((2, 0)), np.ones((0, 2)), np.ones(2), np.ones((2, 2))))  # no features
@example(case=(np.array([1.5], np.float16), np.array([[0.5396]], np.float16), np.zeros(1), np.zeros((1, 1))))  # f16 x @ W, f64 b
@example(case=(np.ones((2, 3), np.int8), np.full((3, 2), 3, np.int8), np.zeros(2, np.uint8), np.ones((2, 2), np.int8)))
def test_affine(backend, case):
    x, W, b, dout = case

    def run(x, W, b, dout):
        lay = Affine(W, b)
        out = lay.forward(x)
        return out, lay.backward(dout), lay.dW, lay.db

    got = outcome(run, x, W, b, dout)
    if not agree(got, on_numpy(run, x, W, b, dout), "Affine"):
        return
    out, dx, dW, db = got[1]
    n = x.shape[0]
    x2 = f64(x).reshape(n, int(np.prod(x.shape[1:])))
    # The book's dtype: np.dot(x, W) + b, promoted in that order (NumPy's
    # promotion is not associative: int8, uint16, float32 give float64 here).
    assert native(out.dtype) == np.result_type(np.result_type(native(x.dtype), native(W.dtype)), native(b.dtype))
    scale = np.abs(x2) @ np.abs(f64(W)) + np.abs(f64(b))
    close(out, x2 @ f64(W) + f64(b), scale=scale, inputs=(x, W, b))
    close(dx, (f64(dout) @ f64(W).T).reshape(x.shape), scale=(np.abs(f64(dout)) @ np.abs(f64(W)).T).reshape(x.shape),
          inputs=(dout, W))
    close(dW, x2.T @ f64(dout), scale=np.abs(x2).T @ np.abs(f64(dout)), inputs=(x, dout))
    close(db, f64(dout).sum(axis=0), scale=np.abs(f64(dout)).sum(axis=0), inputs=(dout,))
    assert dW.shape == W.shape and db.shape == (W.shape[1],) and dx.shape == x.shape


# --------------------------------------------------------------------------
# Softmax, SoftmaxWithLoss, cross_entropy_error


@st.composite
def softmax_case(draw):
    n, c = draw(st.integers(0, 4)), draw(st.integers(0, 5))
    xshape = (n, c) if draw(st.integers(0, 9)) < 9 else draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    x = draw(arrays(shape=xshape))
    kind = draw(st.sampled_from(["labels", "labels", "one-hot", "other"]))
    if kind == "labels":
        # Labels mostly in range; -1 and C test the range check.
        t = draw(arrays(shape=(n,), dtypes=["int64", "int32", "int8", "uint8", "uint64"], bound=max(c, 1), not_real=0.02))
    elif kind == "one-hot":
        t = draw(arrays(shape=(n, c), dtypes=["float64", "float32", "float16", "int64", "uint8"], bound=2, not_real=0.02))
    else:
        t = draw(arrays())
    return x, t


def _label_outcome(x, t):
    """What the loss must do with these arguments before any arithmetic."""
    if t.dtype.kind not in "iuf" or x.dtype.kind not in "iuf":
        return TypeError
    if x.ndim != 2 or 0 in x.shape:
        return ValueError
    if t.ndim == 1:
        if t.dtype.kind == "f":
            return TypeError
        if t.shape[0] != x.shape[0] or np.any((t < 0) | (t >= x.shape[1])):
            return ValueError
        return None
    return None if t.shape == x.shape else ValueError


@SETTINGS
@given(case=softmax_case())
@example(case=(np.array([[-np.inf, 0.0]]), np.array([0])))  # -inf at the target: loss inf, not the book's 16.1
@example(case=(np.array([[np.inf, 0.0]]), np.array([1])))  # inf - inf: NaN row
@example(case=(np.array([[1e308, -1e308]]), np.array([1])))  # huge scores: no overflow
@example(case=(np.array([[0.0, 1.0]]), np.array([-1])))  # a negative label never wraps
@example(case=(np.array([[0.0, 1.0]]), np.array([2**64 - 1], dtype=np.uint64)))  # not a negative int64
@example(case=(np.array([[-np.inf, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)))  # 0 * inf skipped
@example(case=(np.array([[2.0**127, 0, 0]], np.float32), np.ones((1, 3), np.uint8)))  # float32 loss 2^128: inf
def test_softmax_with_loss(backend, case):
    x, t = case

    def run(x, t):
        lay = SoftmaxWithLoss()
        loss = lay.forward(x, t)
        return loss, lay.y, lay.backward()

    got = outcome(run, x, t)
    agreed = agree(got, on_numpy(run, x, t), "SoftmaxWithLoss")
    expected = _label_outcome(x, t)
    if not agreed:
        assert got[1] is expected, (got, expected)
        return
    assert expected is None, expected
    loss, y, dx = got[1]
    dt = result_float(x.dtype)
    assert native(np.asarray(loss).dtype) == dt and native(y.dtype) == dt
    xs = f64(x)
    ref_y, lse = ref_softmax_rows(xs)
    close(y, ref_y, dt)
    n, c = x.shape
    with np.errstate(all="ignore"):
        if t.ndim == 1:
            ti = t.astype(np.int64)
            ref_loss = np.mean(lse - xs[np.arange(n), ti])
            onehot = np.zeros((n, c))
            onehot[np.arange(n), ti] = 1
            ref_dx = (f64(y) - onehot) / n
        else:
            tf = f64(t)
            ref_loss = np.mean(np.where(tf != 0, tf * (lse[:, None] - xs), 0.0).sum(axis=1))
            ref_dx = (f64(y) - tf) / n
        scale = (np.mean(np.abs(lse) + np.abs(xs[np.arange(n), ti])) if t.ndim == 1
                 else np.mean(np.where(tf != 0, np.abs(tf) * (np.abs(lse[:, None]) + np.abs(xs)), 0.0).sum(axis=1)))
    with np.errstate(over="ignore"):  # the loss is rounded to x's dtype last: past its max, inf
        if np.isinf(np.asarray(ref_loss).astype(dt)):
            ref_loss = np.copysign(np.inf, ref_loss)
    close(loss, ref_loss, dt, scale=scale)
    close(dx, ref_dx, dx.dtype, scale=(np.abs(f64(y)) + (1 if t.ndim == 1 else np.abs(f64(t)))) / n, inputs=(y, t))


@SETTINGS
@given(x=arrays(min_dims=0))
@example(x=np.array([[1e308, -1e308, np.nan]]))
@example(x=np.zeros((3, 0)))
def test_softmax_function(backend, x):
    got = outcome(F.softmax, x)
    if not agree(got, on_numpy(F.softmax, x), "softmax"):
        expected = TypeError if x.dtype.kind not in "iuf" else ValueError
        assert got[1] is expected and (expected is TypeError or x.ndim == 0)
        return
    y = got[1]
    assert native(y.dtype) == result_float(x.dtype) and y.shape == x.shape
    if x.size:
        close(y, ref_softmax_rows(f64(x).reshape(-1, x.shape[-1]))[0].reshape(x.shape))


@st.composite
def cross_entropy_case(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    one = draw(st.booleans())  # the book's single-sample form: y is (C,)
    yshape = (c,) if one else (n, c)
    if draw(st.integers(0, 9)) == 9:
        yshape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    # Probabilities: non-negative (log of a negative warns, as in the book), NaN/inf allowed.
    y = draw(arrays(shape=yshape, dtypes=["float64", "float32", "float16"], not_real=0.02, nonneg=True))
    kind = draw(st.sampled_from(["labels", "one-hot", "other"]))
    if kind == "labels":
        t = draw(arrays(shape=() if one and draw(st.booleans()) else ((1,) if one else (n,)),
                        dtypes=["int64", "int8", "uint64"], bound=c, not_real=0.02))
    elif kind == "one-hot":
        t = draw(arrays(shape=yshape, dtypes=["float64", "int64"], bound=1, not_real=0.02))
    else:
        t = draw(arrays(dtypes=["int64", "float64"], bound=6))
    return y, t


def ref_cross_entropy(y, t):
    """The book's formula in y's own dtype; t is one-hot when it has y's shape (1-D y: any shape of its size)."""
    y = np.asarray(y).astype(native(y.dtype))
    y2, t2 = (y.reshape(1, -1), t.reshape(1, t.size)) if y.ndim == 1 else (y, t)
    n = y2.shape[0]
    labels = t2.argmax(axis=1) if t2.shape == y2.shape else t2.reshape(n).astype(np.int64)
    return -np.sum(np.log(y2[np.arange(n), labels] + 1e-7)) / n


@SETTINGS
@given(case=cross_entropy_case())
@example(case=(np.array([0.2, 0.8]), np.array(-1)))  # the book would read y[-1]
@example(case=(np.array([[0.3], [0.5]]), np.array([0, 0])))  # one class, labels: the book fails here
def test_cross_entropy_error(backend, case):
    y, t = case
    got = outcome(F.cross_entropy_error, y, t)
    if not agree(got, on_numpy(F.cross_entropy_error, y, t), "cross_entropy_error"):
        return
    expected = ref_cross_entropy(y, t)
    assert native(np.asarray(got[1]).dtype) == native(np.asarray(expected).dtype)
    np.testing.assert_array_equal(got[1], expected)  # the same formula in the same dtype: bit for bit


# --------------------------------------------------------------------------
# MulLayer: plain NumPy arithmetic, as in the book


@SETTINGS
@given(x=arrays(dtypes=["float64", "float32", "int32"], bound=100, not_real=0), y=arrays(dtypes=["float64", "int64"], bound=100, not_real=0))
def test_mul_layer(backend, x, y):
    lay = MulLayer()
    got = outcome(lay.forward, x, y)
    try:
        expected = x * y
    except ValueError:  # shapes that do not broadcast
        assert got[0] == "raise" and got[1] is ValueError
        return
    np.testing.assert_array_equal(got[1], expected)
    dx, dy = lay.backward(np.ones(expected.shape))
    np.testing.assert_array_equal(dx, np.ones(expected.shape) * y)
    np.testing.assert_array_equal(dy, np.ones(expected.shape) * x)
