"""Bad input gives a clear exception, modifies nothing, and never crashes.

Issue 5's list, for every public layer and function on both backends:
wrong types, dtypes and memory layouts, shapes, labels, call order and
non-finite values. Error messages must name the argument and the shapes.

Crash isolation: every case that can reach compiled code (the "cython"
backend and direct calls into ``bprop._kernels``) runs in a forked child
(:func:`run_isolated`, ``os.fork``), with ``faulthandler`` on; a segfault, an abort or a
sanitizer report there fails that one test instead of killing the run.
Every call also checks that no array the caller passed was modified.
"""
import faulthandler
import os
import pickle
import re
import select
import signal
import time
import traceback
import warnings

import numpy as np
import pytest

import bprop
from conftest import KERNELS, NOT_KERNELS
from bprop import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss, StateError, book
from bprop import _backend
from bprop import functions as F

# --------------------------------------------------------------------------
# Isolation and "nothing modified" helpers

_TIMEOUT = 120  # seconds; generous for sanitizer and -O0 builds


def _child(fn, args, wfd):
    faulthandler.enable()  # a crash prints the Python stack into the test's captured stderr
    try:
        msg = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 - handed back to the parent as is
        msg = ("raise", exc)
    try:
        data = pickle.dumps(msg)
    except Exception:  # an unpicklable result or exception
        data = pickle.dumps(("raise", AssertionError(f"child outcome {msg[1]!r} could not be sent back:\n{traceback.format_exc()}")))
    with os.fdopen(wfd, "wb") as f:
        f.write(data)


def run_isolated(fn, *args):
    """Call ``fn(*args)`` in a forked child; return its result or raise its exception here.

    A child that dies (signal, abort, sanitizer report) or hangs fails the
    calling test with its exit status; the test run goes on.
    """
    rfd, wfd = os.pipe()
    with warnings.catch_warnings():
        # Python >= 3.12 warns when forking a process that has threads (BLAS,
        # OpenMP pools); the child makes one call and exits, taking no locks.
        warnings.filterwarnings("ignore", r".*use of fork\(\) may lead to deadlocks", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 70
        try:
            os.close(rfd)
            _child(fn, args, wfd)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    chunks, deadline = [], time.monotonic() + _TIMEOUT
    with os.fdopen(rfd, "rb", buffering=0) as f:
        while True:
            if not select.select([f], [], [], max(0.0, deadline - time.monotonic()))[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"child running {fn!r} hung for {_TIMEOUT} s")
            chunk = f.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        pytest.fail(f"child running {fn!r} crashed with signal {signal.Signals(os.WTERMSIG(status)).name}; "
                    "its stderr is in the captured output")
    if os.WEXITSTATUS(status) != 0 or not chunks:
        pytest.fail(f"child running {fn!r} exited with code {os.WEXITSTATUS(status)}; its stderr is in the captured output")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "raise":
        raise value
    return value


def _fingerprint(obj):
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape, obj.strides, obj.flags.writeable, obj.tobytes())
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(_fingerprint(o) for o in obj))
    return ("object", type(obj).__name__, repr(obj))


def call(fn, *args):
    """``fn(*args)``; then assert no argument changed (values, dtype, shape, strides, flags)."""
    before = [_fingerprint(a) for a in args]
    try:
        return fn(*args)
    finally:
        changed = [i for i, (a, fp) in enumerate(zip(args, before)) if _fingerprint(a) != fp]
        assert not changed, f"{fn!r} modified the caller's argument(s) at position(s) {changed}"


def run(backend, fn, *args):
    """:func:`call`, in a forked child when the compiled kernels are active."""
    if backend == "cython":
        return run_isolated(call, fn, *args)
    return call(fn, *args)


def raises(exc, *parts):
    """``pytest.raises(exc, match=...)`` requiring every literal part, in order."""
    return pytest.raises(exc, match=".*".join(re.escape(p) for p in parts))


# --------------------------------------------------------------------------
# Data and reference helpers

X = np.array([[-1.5, 0.0, 2.0], [0.5, -0.25, 3.0]])  # (N, D) = (2, 3)
W = np.array([[0.2, -0.4, 0.1, 0.0], [0.3, 0.5, -0.2, 0.7], [-0.6, 0.1, 0.4, -0.3]])  # (3, 4)
B = np.array([0.1, -0.2, 0.3, 0.0])
DOUT_X = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])  # shape of X
DOUT_A = np.array([[1.0, -0.5, 0.25, 2.0], [-1.0, 0.5, 1.5, 0.0]])  # shape of X @ W
LABELS = np.array([2, 0])
ONEHOT = np.eye(3)[LABELS]
Y = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])  # probabilities for cross_entropy_error


def fb(layer, x, dout):
    """forward(x) then backward(dout); returns dx (and dW, db for Affine)."""
    layer.forward(x)
    dx = layer.backward(dout)
    return (dx, layer.dW, layer.db) if isinstance(layer, (Affine, book.Affine)) else dx


def swl(x, t, layer=SoftmaxWithLoss):
    lay = layer()
    loss = lay.forward(x, t)
    return loss, lay.backward()


def book_call(fn, *args):
    """The book's code on copies (its Relu.backward writes into dout), IEEE without warnings."""
    with np.errstate(all="ignore"):
        return fn(*(a.copy() if isinstance(a, np.ndarray) else a for a in args))


def _cast_like(value, like):
    if isinstance(like, tuple):
        return tuple(_cast_like(v, k) for v, k in zip(value, like))
    return np.asarray(value).astype(native(np.asarray(like).dtype))


def reference(ref, args, which):
    """The book's values, computed in float64, in the dtype the book's code gives.

    The book's own arithmetic is not a reference for unsigned integers
    (``-x`` and ``x - max`` wrap around), nor exact in float16.
    """
    exact = book_call(ref, *(a.astype(np.float64) if i in which else a for i, a in enumerate(args)))
    return _cast_like(exact, book_call(ref, *args))


def native(dtype):
    return np.dtype(dtype).newbyteorder("=")


TOL = {"f8": (1e-6, 1e-5), "f4": (1e-5, 1e-5), "f2": (5e-3, 5e-3)}


def assert_matches(actual, expected):
    """Same structure, dtype up to byte order, values within the dtype's tolerance (NaN == NaN)."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_matches(a, e)
        return
    a, e = np.asarray(actual), np.asarray(expected)
    assert native(a.dtype) == native(e.dtype), (a.dtype, e.dtype)
    assert a.shape == e.shape, (a.shape, e.shape)
    key = f"{a.dtype.kind}{a.dtype.itemsize}"
    if key in TOL:
        rtol, atol = TOL[key]
        np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(a, e)


def unaligned(a):
    """A copy of ``a`` whose data starts one byte into a buffer: not aligned for its dtype."""
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    u = buf[1:].view(a.dtype).reshape(a.shape)
    u[...] = a
    assert not u.flags.aligned or a.dtype.itemsize == 1
    return u


def negative_strides(a):
    return np.flip(np.flip(a).copy())


def strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype) if a.ndim else np.zeros(2, a.dtype)
    if a.ndim == 0:
        return a.copy()
    big[..., ::2] = a
    return big[..., ::2]


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


#: dtype and memory-layout conversions of a float array with values in [-3, 3].
CONVERSIONS = {
    "float32": lambda a: a.astype(np.float32),
    "float16": lambda a: a.astype(np.float16),
    "int8": lambda a: np.round(a).astype(np.int8),
    "int32": lambda a: np.round(a).astype(np.int32),
    "int64": lambda a: np.round(a).astype(np.int64),
    "uint8": lambda a: np.round(np.abs(a)).astype(np.uint8),
    "big-endian f8": lambda a: a.astype(">f8"),
    "big-endian f4": lambda a: a.astype(">f4"),
    "unaligned f8": lambda a: unaligned(a),
    "unaligned f4": lambda a: unaligned(a.astype(np.float32)),
    "fortran": np.asfortranarray,
    "negative strides": negative_strides,
    "strided": strided,
    "read-only": read_only,
}

#: Integer label arrays in other dtypes and layouts.
LABEL_CONVERSIONS = {
    "int8": lambda t: t.astype(np.int8),
    "int32": lambda t: t.astype(np.int32),
    "uint8": lambda t: t.astype(np.uint8),
    "uint64": lambda t: t.astype(np.uint64),
    "big-endian i8": lambda t: t.astype(">i8"),
    "unaligned i8": unaligned,
    "negative strides": negative_strides,
    "strided": strided,
    "read-only": read_only,
}

# --------------------------------------------------------------------------
# Wrong types

#: (where, argument, fn(bad, *good), good arguments, the valid value of the argument)
ENTRIES = {
    "Relu.forward(x)": ("Relu.forward", "x", lambda x: Relu().forward(x), (), X),
    "Relu.backward(dout)": ("Relu.backward", "dout", lambda d, x: fb(Relu(), x, d), (X,), DOUT_X),
    "Sigmoid.forward(x)": ("Sigmoid.forward", "x", lambda x: Sigmoid().forward(x), (), X),
    "Sigmoid.backward(dout)": ("Sigmoid.backward", "dout", lambda d, x: fb(Sigmoid(), x, d), (X,), DOUT_X),
    "Affine.forward(x)": ("Affine.forward", "x", lambda x, w, b: Affine(w, b).forward(x), (W, B), X),
    "Affine(W)": ("Affine.forward", "W", lambda w, x, b: Affine(w, b).forward(x), (X, B), W),
    "Affine(b)": ("Affine.forward", "b", lambda b, x, w: Affine(w, b).forward(x), (X, W), B),
    "Affine.backward(dout)": ("Affine.backward", "dout", lambda d, x, w, b: fb(Affine(w, b), x, d), (X, W, B), DOUT_A),
    "SoftmaxWithLoss.forward(x)": ("SoftmaxWithLoss.forward", "x", lambda x, t: swl(x, t), (LABELS,), X),
    "SoftmaxWithLoss.forward(t)": ("SoftmaxWithLoss.forward", "t", lambda t, x: swl(x, t), (X,), LABELS),
    "sigmoid(x)": ("sigmoid", "x", F.sigmoid, (), X),
    "relu(x)": ("relu", "x", F.relu, (), X),
    "softmax(x)": ("softmax", "x", F.softmax, (), X),
    "cross_entropy_error(y)": ("cross_entropy_error", "y", lambda y, t: F.cross_entropy_error(y, t), (LABELS,), Y),
    "cross_entropy_error(t)": ("cross_entropy_error", "t", lambda t, y: F.cross_entropy_error(y, t), (Y,), LABELS),
}

#: The book's functions take array-likes (``np.exp`` does); its layers need arrays.
TAKES_ARRAY_LIKE = {"sigmoid", "relu", "softmax"}

NOT_ARRAYS = {"None": None, "str": "abc", "object": object(), "float": 1.5}
BAD_DTYPES = {
    "object array": lambda v: v.astype(object),
    "complex array": lambda v: v.astype(np.complex128),
    "bool array": lambda v: v > 0,
    "str array": lambda v: v.astype(str),
    "datetime array": lambda v: v.astype(np.int64).astype("datetime64[s]"),
}


@pytest.mark.parametrize("bad", NOT_ARRAYS, ids=str)
@pytest.mark.parametrize("entry", ENTRIES)
def test_non_array_is_a_type_error(backend, entry, bad):
    where, name, fn, good, _ = ENTRIES[entry]
    value = NOT_ARRAYS[bad]
    if where in TAKES_ARRAY_LIKE:
        if bad == "float":  # a Python scalar is a valid 0-d array-like
            if where == "softmax":
                with raises(ValueError, "softmax: x must have at least one axis", "0-d"):
                    run(backend, fn, value, *good)
            else:
                ref = {"sigmoid": book.sigmoid, "relu": lambda x: book.Relu().forward(x)}[where]
                assert_matches(run(backend, fn, value, *good), book_call(ref, np.asarray(value)))
            return
        expected = (f"{where}: {name} must be a real array or array-like, got {type(value).__name__}",)
    else:
        expected = (f"{where}: {name} must be a numpy.ndarray, got {type(value).__name__}",)
    with raises(TypeError, *expected):
        run(backend, fn, value, *good)


@pytest.mark.parametrize("entry", ENTRIES)
def test_list(backend, entry):
    where, name, fn, good, valid = ENTRIES[entry]
    if where in TAKES_ARRAY_LIKE:
        assert_matches(run(backend, fn, valid.tolist(), *good), run(backend, fn, valid, *good))
    else:
        with raises(TypeError, f"{where}: {name} must be a numpy.ndarray, got list"):
            run(backend, fn, valid.tolist(), *good)


def test_ragged_list_is_a_value_error(backend):
    for fn in (F.sigmoid, F.relu, F.softmax):
        with raises(ValueError, f"{fn.__name__}: x (list) does not convert to an array"):
            run(backend, fn, [[1.0, 2.0], [3.0]])


@pytest.mark.parametrize("bad", BAD_DTYPES)
@pytest.mark.parametrize("entry", ENTRIES)
def test_non_real_dtype_is_a_type_error(backend, entry, bad):
    where, name, fn, good, valid = ENTRIES[entry]
    value = BAD_DTYPES[bad](valid)
    with raises(TypeError, f"{where}: {name} has dtype {value.dtype}; expected a real"):
        run(backend, fn, value, *good)


class Sub(np.ndarray):
    """An ndarray subclass; layers treat it as a plain ndarray."""


def test_ndarray_subclass_is_treated_as_an_array(backend):
    m = X.view(Sub)
    assert_matches(run(backend, lambda x: Relu().forward(x), m), book_call(book.Relu().forward, X))
    assert_matches(run(backend, lambda x, w, b: Affine(w, b).forward(x), m, W, B), book_call(book.Affine(W, B).forward, X))


@pytest.mark.parametrize(
    "args, message",
    [
        ((None, 2.0), "unsupported operand"),
        (("ab", "cd"), "can't multiply sequence"),
        ((np.ones(2), object()), "unsupported operand"),
    ],
    ids=["None", "str", "object"],
)
def test_mul_layer_wrong_types(backend, args, message):
    # MulLayer and AddLayer are plain Python, as in the book: whatever ``*``
    # takes works, anything else is Python's own TypeError.
    with pytest.raises(TypeError, match=message):
        run(backend, lambda a, b: MulLayer().forward(a, b), *args)


@pytest.mark.parametrize(
    "args, message",
    [((None, 2.0), "unsupported operand"), ((1.0, "cd"), "unsupported operand")],
    ids=["None", "str"],
)
def test_add_layer_wrong_types(backend, args, message):
    with pytest.raises(TypeError, match=message):
        run(backend, lambda a, b: AddLayer().forward(a, b), *args)


# --------------------------------------------------------------------------
# Dtypes and memory layouts: the same result as the book's NumPy code


#: name -> (bprop fn, book fn, arguments, indices of the arguments to convert)
NUMERIC = {
    "Relu.forward": (lambda x: Relu().forward(x), lambda x: book.Relu().forward(x), (X,), (0,)),
    "Relu.backward": (lambda x, d: fb(Relu(), x, d), lambda x, d: fb(book.Relu(), x, d), (X, DOUT_X), (0, 1)),
    "Sigmoid.forward": (lambda x: Sigmoid().forward(x), lambda x: book.Sigmoid().forward(x), (X,), (0,)),
    "Sigmoid.backward": (lambda x, d: fb(Sigmoid(), x, d), lambda x, d: fb(book.Sigmoid(), x, d), (X, DOUT_X), (0, 1)),
    "Affine.forward": (
        lambda x, w, b: Affine(w, b).forward(x), lambda x, w, b: book.Affine(w, b).forward(x), (X, W, B), (0, 1, 2)
    ),
    "Affine.forward(x only)": (
        lambda x, w, b: Affine(w, b).forward(x), lambda x, w, b: book.Affine(w, b).forward(x), (X, W, B), (0,)
    ),
    "Affine.backward": (
        lambda x, d, w, b: fb(Affine(w, b), x, d), lambda x, d, w, b: fb(book.Affine(w, b), x, d),
        (X, DOUT_A, W, B), (0, 1, 2, 3),
    ),
    "SoftmaxWithLoss(labels)": (swl, lambda x, t: swl(x, t, book.SoftmaxWithLoss), (X, LABELS), (0,)),
    "SoftmaxWithLoss(one-hot)": (swl, lambda x, t: swl(x, t, book.SoftmaxWithLoss), (X, ONEHOT), (0, 1)),
    "sigmoid": (F.sigmoid, book.sigmoid, (X,), (0,)),
    "relu": (F.relu, lambda x: book.Relu().forward(x), (X,), (0,)),
    "softmax": (F.softmax, book.softmax, (X,), (0,)),
    "cross_entropy_error(labels)": (F.cross_entropy_error, book.cross_entropy_error, (Y, LABELS), (0,)),
    "cross_entropy_error(one-hot)": (F.cross_entropy_error, book.cross_entropy_error, (Y, ONEHOT), (0, 1)),
}


@pytest.mark.parametrize("conv", CONVERSIONS)
@pytest.mark.parametrize("entry", NUMERIC)
def test_dtype_and_layout_match_the_book(backend, entry, conv):
    fn, ref, args, which = NUMERIC[entry]
    args = tuple(CONVERSIONS[conv](a) if i in which else a for i, a in enumerate(args))
    assert_matches(run(backend, fn, *args), reference(ref, args, which))


@pytest.mark.parametrize("conv", LABEL_CONVERSIONS)
@pytest.mark.parametrize("entry", ["SoftmaxWithLoss(labels)", "cross_entropy_error(labels)"])
def test_label_dtype_and_layout(backend, entry, conv):
    fn, ref, (a, t), _ = NUMERIC[entry]
    t = LABEL_CONVERSIONS[conv](t)
    assert_matches(run(backend, fn, a, t), book_call(ref, a, t))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mixed_float_dtypes(backend, dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    x, w, b, d = X.astype(dtype), W.astype(other), B.astype(dtype), DOUT_A.astype(other)
    assert_matches(
        run(backend, lambda *a: fb(Affine(a[1], a[2]), a[0], a[3]), x, w, b, d),
        book_call(lambda *a: fb(book.Affine(a[1], a[2]), a[0], a[3]), x, w, b, d),
    )
    xs, ds = X.astype(dtype), DOUT_X.astype(other)
    for layer, ref in ((Relu, book.Relu), (Sigmoid, book.Sigmoid)):
        assert_matches(run(backend, lambda x, d: fb(layer(), x, d), xs, ds), book_call(lambda x, d: fb(ref(), x, d), xs, ds))
    onehot = ONEHOT.astype(other)
    assert_matches(run(backend, swl, xs, onehot), book_call(lambda x, t: swl(x, t, book.SoftmaxWithLoss), xs, onehot))


# --------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize(
    "xshape, wshape", [((2, 5), (4, 3)), ((2, 3, 2), (5, 4)), ((2, 0), (1, 3))], ids=str
)
def test_affine_x_vs_w(backend, xshape, wshape):
    x, w, b = np.ones(xshape), np.ones(wshape), np.zeros(wshape[1])
    features = int(np.prod(xshape[1:]))
    with raises(
        ValueError,
        f"Affine.forward: x has {features} features per sample but W has {wshape[0]} rows",
        f"x.shape={xshape}, W.shape={wshape}",
    ):
        run(backend, lambda x, w, b: Affine(w, b).forward(x), x, w, b)


def test_affine_one_dimensional_x_needs_a_batch_axis(backend):
    # One sample passed without its batch axis: the message says how to add it.
    x, w, b = np.ones(4), np.ones((4, 3)), np.zeros(3)
    with raises(ValueError, "Affine.forward: x must have a batch axis, shape (N, 4)", "x.shape=(4,)", "x.reshape(1, -1)"):
        run(backend, lambda x, w, b: Affine(w, b).forward(x), x, w, b)
    # As in the book, 1-D x is N samples of one feature when W has one row.
    out = run(backend, lambda x, w, b: Affine(w, b).forward(x), np.arange(3.0), np.ones((1, 2)), np.zeros(2))
    np.testing.assert_array_equal(out, np.outer(np.arange(3.0), np.ones(2)))


@pytest.mark.parametrize("bshape", [(3,), (5,), (1, 4), (4, 1), ()], ids=str)
def test_affine_bias_shape(backend, bshape):
    with raises(ValueError, "Affine.forward: b must have shape (4,)", f"b.shape={bshape}, W.shape=(3, 4)"):
        run(backend, lambda x, w, b: Affine(w, b).forward(x), X, W, np.zeros(bshape))


@pytest.mark.parametrize("wshape", [(12,), (3, 4, 1), ()], ids=str)
def test_affine_w_not_2d(backend, wshape):
    with raises(ValueError, "Affine.forward: W must be 2-D", f"W.shape={wshape}"):
        run(backend, lambda x, w, b: Affine(w, b).forward(x), X, np.ones(wshape), B)


def test_affine_1d_x_is_a_batch_of_scalars_as_in_the_book(backend):
    # The book reshapes x to (x.shape[0], -1): a 1-D x is N samples of 1 feature.
    x, w, b = np.array([1.0, -2.0, 3.0]), np.array([[0.5, -1.0]]), np.array([0.1, 0.2])
    d = np.ones((3, 2))
    assert_matches(run(backend, lambda *a: fb(Affine(a[1], a[2]), a[0], a[3]), x, w, b, d),
                   book_call(lambda *a: fb(book.Affine(a[1], a[2]), a[0], a[3]), x, w, b, d))


def test_affine_w_changed_shape_between_forward_and_backward(backend):
    def scenario(x, w, b, d):
        layer = Affine(w, b)
        layer.forward(x)
        layer.W = np.ones((5, 4))
        return layer.backward(d)

    with raises(ValueError, "Affine.backward: W changed shape since forward", "W.shape=(5, 4)", "x.shape=(2, 3)"):
        run(backend, scenario, X, W, B, DOUT_A)


@pytest.mark.parametrize("xshape", [(3,), (2, 3, 1), ()], ids=str)
def test_softmax_with_loss_x_not_2d(backend, xshape):
    with raises(ValueError, "SoftmaxWithLoss.forward: x must be 2-D (N, C)", f"x.shape={xshape}"):
        run(backend, swl, np.ones(xshape), np.array([0]))


#: (layer name, forward input, layer factory, valid dout shape); dout is checked against the forward output.
BACKWARDS = {
    "Relu": (lambda: Relu(), X, "x (from forward)", (2, 3)),
    "Sigmoid": (lambda: Sigmoid(), X, "out", (2, 3)),
    "Affine": (lambda: Affine(W, B), X, "the forward output", (2, 4)),
}


def _bad_dout_shapes(shape):
    n, m = shape
    return {
        "transposed": (m, n),  # same size: must not be read as a flat buffer
        "row": (1, m),  # broadcastable: must not broadcast
        "1-D": (m,),
        "wrong batch": (n + 1, m),
        "smaller batch": (n - 1, m),
        "flat": (n * m,),
        "extra axis": (n, m, 1),
        "0-d": (),
        "empty": (0, m),
    }


@pytest.mark.parametrize("case", list(_bad_dout_shapes((2, 3))))
@pytest.mark.parametrize("layer", BACKWARDS)
def test_dout_shape_differs_from_forward(backend, layer, case):
    make, x, ref_name, shape = BACKWARDS[layer]
    bad = _bad_dout_shapes(shape)[case]
    with raises(ValueError, f"{layer}.backward: dout must have the shape of {ref_name}", f"dout.shape={bad}",
                f"{ref_name}.shape={shape}"):
        run(backend, lambda x, d: fb(make(), x, d), x, np.ones(bad))


@pytest.mark.parametrize("shape", [(0,), (0, 3), (0, 2, 3)], ids=str)
@pytest.mark.parametrize("layer", ["Relu", "Sigmoid"])
def test_empty_batch_elementwise(backend, layer, shape):
    cls, ref = {"Relu": (Relu, book.Relu), "Sigmoid": (Sigmoid, book.Sigmoid)}[layer]
    x = np.zeros(shape)
    out, dx = run(backend, lambda x: (cls().forward(x), fb(cls(), x, x)), x)
    assert out.shape == dx.shape == shape and out.dtype == dx.dtype == np.float64
    assert_matches((out, dx), book_call(lambda x: (ref().forward(x), fb(ref(), x, x)), x))


@pytest.mark.parametrize("xshape", [(0, 3), (0, 1, 3)], ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_batch_affine(backend, xshape, dtype):
    x, w, b = np.zeros(xshape, dtype), W.astype(dtype), B.astype(dtype)
    out, (dx, dW, db) = run(backend, lambda x, w, b: (Affine(w, b).forward(x), fb(Affine(w, b), x, np.zeros((0, 4), dtype))), x, w, b)
    assert out.shape == (0, 4) and out.dtype == dtype
    assert dx.shape == xshape and dx.dtype == dtype
    np.testing.assert_array_equal(dW, np.zeros((3, 4), dtype))
    np.testing.assert_array_equal(db, np.zeros(4, dtype))
    assert dW.dtype == db.dtype == dtype


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0,), (0, 0)], ids=str)
def test_empty_functions(backend, shape):
    x = np.zeros(shape)
    for fn in (F.sigmoid, F.relu, F.softmax):
        y = run(backend, fn, x)
        assert y.shape == shape and y.dtype == np.float64


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0, 0)], ids=str)
def test_empty_softmax_with_loss_is_an_error(backend, shape):
    # A mean over no samples (or a softmax over no classes) is undefined.
    with raises(ValueError, "SoftmaxWithLoss.forward: the loss needs at least one sample and one class", f"x.shape={shape}"):
        run(backend, swl, np.zeros(shape), np.zeros(shape[0], dtype=np.int64))
    with raises(ValueError, "cross_entropy_error: y must be (C,) or (N, C) with N, C >= 1", f"y.shape={shape}"):
        run(backend, F.cross_entropy_error, np.zeros(shape), np.zeros(shape[0], dtype=np.int64))


@pytest.mark.parametrize("layer", ["Relu", "Sigmoid"])
def test_0d_elementwise(backend, layer):
    cls, ref = {"Relu": (Relu, book.Relu), "Sigmoid": (Sigmoid, book.Sigmoid)}[layer]
    for v in (-1.5, 0.0, 2.0):
        x, d = np.array(v), np.array(3.0)
        got = run(backend, lambda x, d: (cls().forward(x), fb(cls(), x, d)), x, d)
        assert got[0].shape == got[1].shape == ()
        assert_matches(got, book_call(lambda x, d: (ref().forward(x), fb(ref(), x, d)), x, d))
    for fn in (F.sigmoid, F.relu):
        assert run(backend, fn, np.array(-2.0)).shape == ()


def test_0d_where_an_axis_is_needed(backend):
    z = np.array(1.0)
    with raises(ValueError, "Affine.forward: x must have a batch axis", "0-d"):
        run(backend, lambda x, w, b: Affine(w, b).forward(x), z, W, B)
    with raises(ValueError, "SoftmaxWithLoss.forward: x must be 2-D (N, C); got x.shape=()"):
        run(backend, swl, z, LABELS)
    with raises(ValueError, "softmax: x must have at least one axis; got a 0-d array"):
        run(backend, F.softmax, z)
    with raises(ValueError, "cross_entropy_error: y must be (C,) or (N, C)", "y.shape=()"):
        run(backend, F.cross_entropy_error, z, LABELS)


def test_relu_dout_for_0d_forward(backend):
    with raises(ValueError, "Relu.backward: dout must have the shape of x (from forward)", "dout.shape=(1,)"):
        run(backend, lambda x, d: fb(Relu(), x, d), np.array(1.0), np.ones(1))


# --------------------------------------------------------------------------
# Labels


def _out_of_range():
    cases = {"C": ([0, 3], 3), "-1": ([0, -1], -1), "-C": ([-3, 0], -3), "far": ([7, 0], 7), "huge": ([0, 2**40], 2**40)}
    for dtype in ("int64", "int32", "int8", ">i8"):
        for name, (labels, bad) in cases.items():
            if np.array(labels).astype(dtype).tolist() == labels:  # the value fits the dtype
                yield pytest.param(labels, bad, dtype, id=f"{dtype}-{name}")


@pytest.mark.parametrize("labels, bad, dtype", list(_out_of_range()))
def test_labels_out_of_range(backend, labels, bad, dtype):
    t = np.array(labels).astype(dtype)
    index = [i for i, v in enumerate(labels) if v == bad][0]
    with raises(ValueError, "SoftmaxWithLoss.forward: labels must lie in [0, 3) for x.shape=(2, 3)", f"got {bad} at index {index}"):
        run(backend, swl, X, t)
    with raises(ValueError, "cross_entropy_error: labels must lie in [0, 3) for y.shape=(2, 3)", f"got {bad} at index {index}"):
        run(backend, F.cross_entropy_error, Y, t)


def test_negative_label_does_not_wrap(backend):
    # The book's y[np.arange(N), t] would silently read class C-1 for t = -1.
    with raises(ValueError, "got -1"):
        run(backend, swl, X, np.array([-1, -1]))
    with raises(ValueError, "got -1"):
        run(backend, F.cross_entropy_error, Y, np.array([-1, -1]))
    with raises(ValueError, "got -1"):
        run(backend, F.cross_entropy_error, Y[0], np.array(-1))


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32])
def test_unsigned_labels_above_int64(backend, dtype):
    big = np.iinfo(dtype).max
    with raises(ValueError, f"got {big} at index 1"):
        run(backend, swl, X, np.array([0, big], dtype=dtype))
    with raises(ValueError, f"got {big} at index 1"):
        run(backend, F.cross_entropy_error, Y, np.array([0, big], dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_float_labels(backend, dtype):
    t = LABELS.astype(dtype)
    with raises(TypeError, "SoftmaxWithLoss.forward: 1-D t holds class labels and must be integers", f"got dtype {t.dtype}"):
        run(backend, swl, X, t)
    with raises(TypeError, "cross_entropy_error: t of shape (2,) holds class labels and must be integers", f"got dtype {t.dtype}"):
        run(backend, F.cross_entropy_error, Y, t)


@pytest.mark.parametrize("count", [0, 1, 3, 6])
def test_wrong_label_count(backend, count):
    t = np.zeros(count, dtype=np.int64)
    with raises(ValueError, f"SoftmaxWithLoss.forward: t has {count} labels for 2 samples", f"x.shape=(2, 3), t.shape=({count},)"):
        run(backend, swl, X, t)
    with raises(ValueError, "cross_entropy_error: t must be 2 class labels or one-hot of y's shape", f"t.shape=({count},), y.shape=(2, 3)"):
        run(backend, F.cross_entropy_error, Y, t)


@pytest.mark.parametrize("tshape", [(3, 2), (2, 4), (1, 3), (2, 1), (3, 3)], ids=str)
def test_one_hot_of_wrong_shape(backend, tshape):
    t = np.zeros(tshape)
    with raises(ValueError, "SoftmaxWithLoss.forward: one-hot t must have the shape of x", f"t.shape={tshape}, x.shape=(2, 3)"):
        run(backend, swl, X, t)
    with raises(ValueError, "cross_entropy_error: t must be 2 class labels or one-hot of y's shape", f"t.shape={tshape}, y.shape=(2, 3)"):
        run(backend, F.cross_entropy_error, Y, t.astype(np.int64))


@pytest.mark.parametrize("tshape", [(), (2, 3, 1)], ids=str)
def test_labels_of_wrong_rank(backend, tshape):
    with raises(ValueError, "SoftmaxWithLoss.forward: t must be (N,) labels or (N, C) one-hot", f"t.shape={tshape}, x.shape=(2, 3)"):
        run(backend, swl, X, np.zeros(tshape, dtype=np.int64))


def test_one_sample_forms_of_cross_entropy_error_match_the_book(backend):
    # The book's 1-D y is one sample; t is then one label (any shape of size 1) or one-hot.
    for y, t in [(Y[0], np.array(2)), (Y[0], np.array([2])), (Y[0], ONEHOT[0]), (Y[:1], LABELS[:1])]:
        assert_matches(run(backend, F.cross_entropy_error, y, t), book_call(book.cross_entropy_error, y, t))
    # One class: the book fails on (N, 1) y with labels (argmax over a missing axis); bprop computes it.
    assert_matches(run(backend, F.cross_entropy_error, Y[:, :1], np.zeros(2, np.int64)),
                   -np.sum(np.log(Y[:, 0] + 1e-7)) / 2)


# --------------------------------------------------------------------------
# Call order and state

STATEFUL = {
    "Relu": (lambda: Relu(), (DOUT_X,)),
    "Sigmoid": (lambda: Sigmoid(), (DOUT_X,)),
    "Affine": (lambda: Affine(W, B), (DOUT_A,)),
    "SoftmaxWithLoss": (lambda: SoftmaxWithLoss(), ()),
    "MulLayer": (lambda: MulLayer(), (1.0,)),
}


@pytest.mark.parametrize("layer", STATEFUL)
def test_backward_before_forward(backend, layer):
    make, args = STATEFUL[layer]
    with raises(StateError, f"{layer}.backward: called before forward") as info:
        run(backend, lambda *a: make().backward(*a), *args)
    assert isinstance(info.value, ValueError)  # the book-era ``except ValueError`` still catches it


def test_state_error_is_public_and_a_value_error():
    assert bprop.StateError is StateError and issubclass(StateError, ValueError)


def test_add_layer_is_stateless_as_in_the_book(backend):
    d = np.array([1.0, -2.0])
    dx, dy = run(backend, lambda d: AddLayer().backward(d), d)
    np.testing.assert_array_equal(dx, d)
    np.testing.assert_array_equal(dy, d)


def _forward(layer, name):
    if name == "SoftmaxWithLoss":
        return layer.forward(X, LABELS)
    if name == "MulLayer":
        return layer.forward(np.array([2.0, -3.0]), np.array([0.5, 4.0]))
    return layer.forward(X)


def _grads(layer, name, dout):
    dx = layer.backward(*dout)
    return (dx, layer.dW, layer.db) if name == "Affine" else dx


@pytest.mark.parametrize("layer", STATEFUL)
def test_backward_twice_gives_the_same_result(backend, layer):
    make, dout = STATEFUL[layer]

    def scenario(*dout):
        lay = make()
        _forward(lay, layer)
        return _grads(lay, layer, dout), _grads(lay, layer, dout)

    first, second = run(backend, scenario, *dout)
    assert_matches(first, second)


BAD_FORWARD = {
    "Relu": lambda lay: lay.forward(X.astype(complex)),  # elementwise layers take any shape: a bad dtype
    "Sigmoid": lambda lay: lay.forward(X.astype(complex)),
    "Affine": lambda lay: lay.forward(np.ones((5, 7))),
    "SoftmaxWithLoss": lambda lay: lay.forward(X, np.array([0, 9])),
}


@pytest.mark.parametrize("layer", BAD_FORWARD)
def test_failed_forward_keeps_the_previous_state(backend, layer):
    make, dout = STATEFUL[layer]

    def scenario(*dout):
        good = make()
        _forward(good, layer)
        expected = _grads(good, layer, dout)
        lay = make()
        _forward(lay, layer)
        with pytest.raises((TypeError, ValueError)):
            BAD_FORWARD[layer](lay)
        return expected, _grads(lay, layer, dout)

    expected, got = run(backend, scenario, *dout)
    assert_matches(got, expected)


def test_results_the_caller_holds_are_never_rewritten(backend):
    """Large results may be recycled once the caller drops them: never while held, viewed or passed back in."""
    r = np.random.default_rng(0)
    x, d = r.standard_normal((1024, 1024)), r.standard_normal((1024, 1024))  # 8 MiB: above the reuse threshold
    t = r.integers(0, 1024, 1024)

    def scenario(x, d, t):
        ok = {}
        for cls in (Relu, Sigmoid):
            name = cls.__name__
            lay = cls()
            held = lay.forward(x)
            view = lay.forward(-x)[:3]
            kept, kept_view = held.copy(), view.copy()
            lay.forward(2 * x)
            ok[f"{name}: held result"] = np.array_equal(held, kept)
            ok[f"{name}: view of a result"] = np.array_equal(view, kept_view)
            ok[f"{name}: nested forward"] = np.array_equal(cls().forward(cls().forward(x)), lay.forward(lay.forward(x)))
            ref = cls()
            ref.forward(x)
            lay = cls()
            lay.forward(x)
            ok[f"{name}: nested backward"] = np.array_equal(lay.backward(lay.backward(d)), ref.backward(ref.backward(d).copy()))
        lay = Sigmoid()
        lay.forward(x)
        ok["Sigmoid: forward(layer.out)"] = np.array_equal(lay.forward(lay.out), Sigmoid().forward(Sigmoid().forward(x)))
        lay = SoftmaxWithLoss()
        lay.forward(x, t)
        dx, y = lay.backward(), lay.y
        kept_dx, kept_y = dx.copy(), y.copy()
        lay.forward(-x, t)
        lay.backward()
        ok["SoftmaxWithLoss: held dx and y"] = np.array_equal(dx, kept_dx) and np.array_equal(y, kept_y)
        return ok

    ok = run(backend, scenario, x, d, t)
    assert all(ok.values()), [k for k, v in ok.items() if not v]


def test_softmax_with_loss_backward_ignores_dout_as_in_the_book(backend):
    def scenario(x, t):
        lay = SoftmaxWithLoss()
        lay.forward(x, t)
        return lay.backward(), lay.backward(5.0), lay.backward(dout=np.ones(3))

    a, b, c = run(backend, scenario, X, LABELS)
    assert_matches(a, b)
    assert_matches(a, c)


# --------------------------------------------------------------------------
# Non-finite values: IEEE results, no warnings

SPECIAL = np.array([[np.nan, np.inf, -np.inf, 0.0], [-0.0, 1e30, -1e30, 2.5], [-800.0, 800.0, 5e-324, -1.0]])
SPECIAL_DOUT = np.array([[1.0, np.inf, -np.inf, np.nan], [2.0, np.inf, 1.0, -1.0], [np.nan, 0.0, 1.0, np.inf]])
PROBS = np.array([[np.nan, 0.5, 0.5], [0.0, np.inf, 1.0], [0.2, 0.3, 0.5]])


def no_warnings(fn):
    def wrapped(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return fn(*args)

    return wrapped


def _special(dtype):
    with np.errstate(all="ignore"):
        return SPECIAL.astype(dtype), SPECIAL_DOUT.astype(dtype)


VALUE_CASES = {
    "Relu": (lambda x, d: (Relu().forward(x), fb(Relu(), x, d)), lambda x, d: (book.Relu().forward(x), fb(book.Relu(), x, d))),
    "Sigmoid": (
        lambda x, d: (Sigmoid().forward(x), fb(Sigmoid(), x, d)),
        lambda x, d: (book.Sigmoid().forward(x), fb(book.Sigmoid(), x, d)),
    ),
    "sigmoid": (lambda x, d: F.sigmoid(x), lambda x, d: book.sigmoid(x)),
    "relu": (lambda x, d: F.relu(x), lambda x, d: book.Relu().forward(x)),
    "softmax": (lambda x, d: F.softmax(x), lambda x, d: book.softmax(x)),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", VALUE_CASES)
def test_nan_inf_propagate_without_warnings(backend, case, dtype):
    fn, ref = VALUE_CASES[case]
    x, d = _special(dtype)
    assert_matches(run(backend, no_warnings(fn), x, d), book_call(ref, x, d))


def test_sigmoid_saturates_exactly(backend):
    x = np.array([-1e308, -800.0, -40.0, 0.0, 40.0, 800.0, 1e308, -np.inf, np.inf])
    out = run(backend, no_warnings(F.sigmoid), x)
    assert out[0] == out[1] == 0.0 and out[-2] == 0.0 and out[-1] == 1.0 and out[3] == 0.5
    assert out[2] > 0  # exp(-40) is representable; no underflow to 0 from 1/(1+exp(40))
    assert_matches(out, 1 / (1 + np.exp(-np.clip(x, -700, 700))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_affine_nan_and_large_values(backend, dtype):
    x = np.array([[np.nan, 1.0, 2.0], [1e15, -1e15, 3.0]], dtype)  # products stay below float32's max
    d = np.array([[np.nan, 1.0, 0.0, -1.0], [1e15, 2.0, -2.0, 0.5]], dtype)
    fn = no_warnings(lambda *a: (Affine(a[1], a[2]).forward(a[0]), fb(Affine(a[1], a[2]), a[0], a[3])))
    ref = lambda *a: (book.Affine(a[1], a[2]).forward(a[0]), fb(book.Affine(a[1], a[2]), a[0], a[3]))  # noqa: E731
    w, b = W.astype(dtype), B.astype(dtype)
    assert_matches(run(backend, fn, x, w, b, d), book_call(ref, x, w, b, d))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_affine_inf(backend, dtype):
    x = np.array([[np.inf, 1.0, 2.0], [1.0, -np.inf, 3.0]], dtype)
    d = np.array([[np.inf, 1.0, 0.0, -1.0], [1.0, 2.0, -np.inf, 0.5]], dtype)

    def fn(x, w, b, d):
        # The BLAS behind np.matmul may multiply inf by the zero padding of its
        # SIMD blocks and raise the invalid flag, which NumPy reports as a
        # warning (the book's np.dot too); bprop's Affine must not pass it on.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return Affine(w, b).forward(x), fb(Affine(w, b), x, d)

    ref = lambda *a: (book.Affine(a[1], a[2]).forward(a[0]), fb(book.Affine(a[1], a[2]), a[0], a[3]))  # noqa: E731
    w, b = W.astype(dtype), B.astype(dtype)
    assert_matches(run(backend, fn, x, w, b, d), book_call(ref, x, w, b, d))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("targets", ["labels", "one-hot"])
def test_softmax_with_loss_nan_inf(backend, dtype, targets):
    # Rows: NaN; +inf (inf - inf is NaN); -inf at a non-target class (exactly 0);
    # huge finite scores (no overflow); all -inf (NaN).
    x = np.array([[np.nan, 1, 2], [np.inf, 1, 2], [-np.inf, 1, 2], [1e30, -1e30, 0], [-np.inf, -np.inf, -np.inf]], dtype)
    t = np.array([2, 1, 2, 0, 1])
    t = np.eye(3, dtype=dtype)[t] if targets == "one-hot" else t
    loss, dx = run(backend, no_warnings(swl), x, t)
    ref_loss, ref_dx = book_call(lambda x, t: swl(x, t, book.SoftmaxWithLoss), x, t)
    assert np.isnan(loss) and np.isnan(ref_loss)
    assert_matches(dx, ref_dx)
    finite = slice(2, 4)  # rows whose loss is finite: compare with the exact cross-entropy
    loss, dx = run(backend, no_warnings(swl), x[finite], t[finite])
    assert_matches(dx, book_call(lambda x, t: swl(x, t, book.SoftmaxWithLoss), x[finite], t[finite])[1])
    exact = np.mean([np.log(np.exp(1.0) + np.exp(2.0)) - 2.0, 0.0])
    np.testing.assert_allclose(loss, exact, rtol=1e-6)


def test_softmax_with_loss_minus_inf_at_the_target_is_an_infinite_loss(backend):
    # Exact cross-entropy; the book adds 1e-7 in the log and reports 16.1 instead.
    loss = run(backend, no_warnings(lambda x, t: SoftmaxWithLoss().forward(x, t)), np.array([[-np.inf, 0.0]]), np.array([0]))
    assert loss == np.inf


@pytest.mark.parametrize("targets", ["labels", "one-hot"])
def test_float32_loss_past_float32_max_is_inf_without_a_warning(backend, targets):
    # The loss is summed in float64 (2 * 3e38 here) and only then rounded to
    # float32, where it overflows: inf, silently, as IEEE arithmetic gives.
    big = np.finfo(np.float32).max
    x = np.array([[big, 0, -big]], np.float32)
    t = np.array([2]) if targets == "labels" else np.array([[0, 0, 1]], np.float32)
    loss = run(backend, no_warnings(lambda x, t: SoftmaxWithLoss().forward(x, t)), x, t)
    assert loss.dtype == np.float32 and loss == np.inf
    # Just under float32's max, the loss stays finite and correctly rounded.
    x = np.array([[big / 2, 0, -big / 2]], np.float32)
    loss = run(backend, no_warnings(lambda x, t: SoftmaxWithLoss().forward(x, t)), x, t)
    assert loss == np.float32(float(big))


def test_cross_entropy_error_nan_inf(backend):
    for t in (np.array([0, 1, 2]), np.eye(3)[[0, 1, 2]]):
        got = run(backend, no_warnings(F.cross_entropy_error), PROBS, t)
        assert_matches(got, book_call(book.cross_entropy_error, PROBS, t))
    assert np.isnan(run(backend, no_warnings(F.cross_entropy_error), PROBS[:1], np.array([0])))
    assert run(backend, no_warnings(F.cross_entropy_error), PROBS[1:2], np.array([1])) == -np.inf


def test_mul_and_add_layers_propagate_nan_inf(backend):
    def scenario(x, y, d):
        m, a = MulLayer(), AddLayer()
        return m.forward(x, y), m.backward(d), a.forward(x, y), a.backward(d)

    x, y, d = np.array([np.nan, np.inf, 2.0]), np.array([1.0, 0.0, -np.inf]), np.array([1.0, 1.0, np.nan])
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN and NumPy says so: plain NumPy arithmetic, as in the book
        got = run(backend, scenario, x, y, d)
        np.testing.assert_array_equal(got[0], x * y)
        np.testing.assert_array_equal(got[1][0], d * y)
        np.testing.assert_array_equal(got[1][1], d * x)
        np.testing.assert_array_equal(got[2], x + y)


# --------------------------------------------------------------------------
# Direct calls into the compiled kernels: sizes are checked at entry

compiled = _backend.compiled_module()
needs_compiled = pytest.mark.skipif(compiled is None, reason="bprop._kernels is not built")


def _kernel_args(name, dt, n=3, c=4):
    """Valid arguments for one kernel: inputs and caller-allocated outputs."""
    r = np.random.default_rng(0)
    v = lambda *s: r.standard_normal(s).astype(dt)  # noqa: E731
    labels = np.arange(n, dtype=np.int64) % max(c, 1)
    onehot = np.zeros((n, c), dtype=dt)
    if c:
        onehot[np.arange(n), labels] = 1
    return {
        "relu_forward": lambda: (v(n * c), v(n * c), np.zeros(n * c, bool)),
        "relu_backward": lambda: (v(n * c), np.zeros(n * c, bool), v(n * c)),
        "sigmoid_forward": lambda: (v(n * c), v(n * c)),
        "sigmoid_backward": lambda: (v(n * c), v(n * c), v(n * c)),
        "add_bias": lambda: (v(n, c), v(c)),
        "column_sum": lambda: (v(n, c), v(c)),
        "affine_forward": lambda: (v(n, 5), v(5, c), v(c), v(n, c)),
        "affine_backward": lambda: (v(n, c), v(n, 5), v(5, c), True),
        "softmax_forward": lambda: (v(n, c), v(n, c)),
        "softmax_xent_labels_forward": lambda: (v(n, c), labels, v(n, c)),
        "softmax_xent_onehot_forward": lambda: (v(n, c), onehot, v(n, c)),
        "softmax_xent_labels_backward": lambda: (v(n, c), labels, v(n, c)),
        "softmax_xent_onehot_backward": lambda: (v(n, c), onehot, v(n, c)),
        "batchnorm_forward": lambda: (v(n, c), v(c), v(c), 1e-6, v(n, c), v(n, c)),
        "batchnorm_backward": lambda: (v(n, c), v(n, c), v(c), np.abs(v(c)) + 1, v(n, c)),
        "sgd_update": lambda: (v(n, c), v(n, c), 0.1),
        "momentum_update": lambda: (v(n, c), v(n, c), v(n, c), v(n, c), 0.1, 0.9),
        "nesterov_update": lambda: (v(n, c), v(n, c), v(n, c), 0.1, 0.9),
        "adagrad_update": lambda: (v(n, c), v(n, c), np.abs(v(n, c)), 0.1),
        "rmsprop_update": lambda: (v(n, c), v(n, c), np.abs(v(n, c)), 0.1, 0.9),
        "adam_update": lambda: (v(n, c), v(n, c), v(n, c), np.abs(v(n, c)), 0.01, 0.9, 0.999),
        **_conv_kernel_args(v, n, c),
    }[name]()


def _conv_kernel_args(v, n, c):
    """Convolution and pooling kernels on (n, c, 6, 5) images: 3x2 windows, stride 1, pad 1
    (stride 1, so that any change of H or W changes the output size), pooling 2x3 likewise.
    Every array is drawn only when its kernel's case is built, so the other kernels' values
    do not change with these cases."""
    from bprop import _numpy_kernels

    col_rows, col_kp, pooled = (n * 6 * 6, c * 6), (n, c * 6, 6 * 6), (n, c, 7, 5)

    def pool_backward():
        x = v(n, c, 6, 5)
        _, arg = _numpy_kernels.pool_forward(x, 2, 3, 1, 1, None, None)
        return v(*pooled), arg, 2, 3, 1, 1, np.zeros(x.shape, x.dtype)

    return {
        "im2col_rows": lambda: (v(n, c, 6, 5), 3, 2, 1, 1, v(*col_rows)),
        "col2im_rows": lambda: (v(*col_rows), 3, 2, 1, 1, v(n, c, 6, 5)),
        "im2col_kp": lambda: (v(n, c, 6, 5), 3, 2, 1, 1, v(*col_kp)),
        "col2im_kp": lambda: (v(*col_kp), 3, 2, 1, 1, v(n, c, 6, 5)),
        "pool_forward": lambda: (v(n, c, 6, 5), 2, 3, 1, 1, v(*pooled), np.zeros(pooled, np.uint8)),
        "pool_backward": pool_backward,
        "conv_bias_add": lambda: (v(n, c, 4, 3), v(c)),
        "conv_bias_grad": lambda: (v(n, c, 4, 3), v(c)),
        # Positive values: sums without cancellation, so the two backends' different
        # summation orders stay within the relative tolerance of the comparisons here.
        "conv_forward": lambda: (abs(v(n, c, 6, 5)), abs(v(2, c, 3, 2)), abs(v(2)), 1, 1, v(*col_kp), v(n, 2, 6, 6)),
        "conv_backward_data": lambda: (abs(v(n, 2, 6, 6)), abs(v(2, c, 3, 2)), 1, 1, v(n, c, 6, 5)),
    }


#: Kernels that treat their arrays as flat: any shapes of equal size are valid.
ELEMENTWISE = {"relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward",
               "sgd_update", "momentum_update", "nesterov_update", "adagrad_update", "rmsprop_update", "adam_update"}
#: Indices of each kernel's input (const) buffers; the others are written.
INPUTS = {
    "relu_forward": {0}, "relu_backward": {0, 1}, "sigmoid_forward": {0}, "sigmoid_backward": {0, 1},
    "add_bias": {1}, "column_sum": {0}, "affine_forward": {0, 1, 2}, "affine_backward": {0, 1, 2},
    "softmax_forward": {0},
    "softmax_xent_labels_forward": {0, 1}, "softmax_xent_onehot_forward": {0, 1},
    "softmax_xent_labels_backward": {0, 1}, "softmax_xent_onehot_backward": {0, 1},
    "batchnorm_forward": {0, 1, 2}, "batchnorm_backward": {0, 1, 2, 3},
    "sgd_update": {1}, "momentum_update": {1, 2}, "nesterov_update": {1}, "adagrad_update": {1},
    "rmsprop_update": {1}, "adam_update": {1},
    "im2col_rows": {0}, "col2im_rows": {0}, "im2col_kp": {0}, "col2im_kp": {0}, "pool_forward": {0},
    "pool_backward": {0, 1}, "conv_bias_add": {1}, "conv_bias_grad": {0}, "conv_forward": {0, 1, 2},
    "conv_backward_data": {0, 1},
}
#: (kernel, argument, axis) whose size the kernel reads from that argument alone: any size is valid.
FREE_SIZES = {("add_bias", 0, 0), ("column_sum", 0, 0)} | {
    (name, 0, axis) for name in ("conv_bias_add", "conv_bias_grad") for axis in (0, 2, 3)
}


@needs_compiled
def test_every_kernel_has_bad_size_cases():
    public = {n for n in dir(compiled) if not n.startswith("_") and callable(getattr(compiled, n))}
    missing = public - NOT_KERNELS - set(KERNELS)
    assert not missing, f"add entry-size cases to this module (and tests/test_threads.py) for: {sorted(missing)}"


def _resized(a, axis, delta):
    shape = list(a.shape)
    shape[axis] += delta
    return np.zeros(shape, dtype=a.dtype)


def _size_cases():
    for name in KERNELS:
        for dt in (np.float64, np.float32):
            args = _kernel_args(name, dt)
            for i, a in enumerate(args):
                for axis in range(np.ndim(a)):
                    for delta in (-1, +1):
                        yield pytest.param(name, dt, i, axis, delta, id=f"{name}-{np.dtype(dt).name}-arg{i}-axis{axis}{delta:+d}")


def _call_kernel(name, *args):
    return getattr(compiled, name)(*args)


def kernel_call(name, *args):
    """A direct kernel call; its input buffers (not its outputs) must come back unchanged."""
    inputs = [i for i in INPUTS[name] if i < len(args)]
    return call(lambda *ins: _call_kernel(name, *[ins[inputs.index(i)] if i in inputs else a for i, a in enumerate(args)]),
                *[args[i] for i in inputs])


@needs_compiled
@pytest.mark.parametrize("name, dt, i, axis, delta", list(_size_cases()))
def test_kernel_checks_buffer_sizes(name, dt, i, axis, delta):
    if not hasattr(compiled, name):
        pytest.skip(f"{name} is gone from bprop._kernels")
    args = list(_kernel_args(name, dt))
    args[i] = _resized(args[i], axis, delta)
    if (name, i, axis) in FREE_SIZES:
        run_isolated(kernel_call, name, *args)
        return
    with pytest.raises(ValueError, match=name):
        run_isolated(kernel_call, name, *args)


# Regression: the kernels' `cnp.ndarray x` arguments once let None through
# (no `not None`), and the entry checks read array fields from the None
# object itself.
#: (kernel, argument) outputs that may be None: the kernel allocates them.
ALLOCATED = {("relu_forward", 1), ("relu_forward", 2), ("relu_backward", 2), ("sigmoid_forward", 1),
             ("sigmoid_backward", 2), ("affine_forward", 3), ("softmax_xent_labels_backward", 2),
             ("softmax_xent_onehot_backward", 2), ("batchnorm_forward", 4), ("batchnorm_forward", 5),
             ("batchnorm_backward", 4)}
#: (kernel, argument) flags, not arrays: None is falsy there, as for any bint.
FLAGS = {("affine_backward", 3), ("batchnorm_forward", 3), ("sgd_update", 2), ("momentum_update", 4),
         ("momentum_update", 5), ("nesterov_update", 3), ("nesterov_update", 4), ("adagrad_update", 3),
         ("rmsprop_update", 3), ("rmsprop_update", 4), ("adam_update", 4), ("adam_update", 5), ("adam_update", 6)}
#: (kernel, argument) outputs that may be None, in another shape than the input's
#: (tests/test_conv_kernels.py checks what they allocate).
RESHAPED_ALLOCATED = {("im2col_rows", 5), ("im2col_kp", 5), ("pool_forward", 5), ("pool_forward", 6),
                      ("conv_bias_grad", 1), ("conv_forward", 5), ("conv_forward", 6)}
#: (kernel, argument) window sizes, strides and pads: integers, checked in tests/test_conv_kernels.py.
SCALARS = {(name, i) for name in ("im2col_rows", "col2im_rows", "im2col_kp", "col2im_kp") for i in (1, 2, 3, 4)} | {
    (name, i) for name, first in (("pool_forward", 1), ("pool_backward", 2)) for i in range(first, first + 4)
} | {("conv_forward", 3), ("conv_forward", 4), ("conv_backward_data", 2), ("conv_backward_data", 3)}


@needs_compiled
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_none_is_a_type_error(name):
    if not hasattr(compiled, name):
        pytest.skip(f"{name} is gone from bprop._kernels")
    good = _kernel_args(name, np.float64)
    for i in range(len(good)):
        if (name, i) in ALLOCATED or (name, i) in FLAGS or (name, i) in RESHAPED_ALLOCATED or (name, i) in SCALARS:
            continue
        args = list(good)
        args[i] = None
        with pytest.raises(TypeError, match="None"):
            run_isolated(kernel_call, name, *args)


@needs_compiled
@pytest.mark.parametrize("name, i", sorted(ALLOCATED))
@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_kernel_allocates_a_none_output(name, i, dt):
    """A None output comes back allocated (C-ordered, with the shape and dtype of the
    caller-allocated call's result) with the values that call writes, on both backends."""
    from bprop import _numpy_kernels

    good = _kernel_args(name, dt)
    # outputs take the first input's shape
    shaped = [a.reshape(3, 4) if isinstance(a, np.ndarray) and a.size == 12 else a for a in good]
    expected = run_isolated(kernel_call, name, *shaped)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for module in (compiled, _numpy_kernels):
        args = [a.copy() if isinstance(a, np.ndarray) else a for a in shaped]
        args[i] = None
        got = getattr(module, name)(*args)
        got = got if isinstance(got, tuple) else (got,)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.flags.c_contiguous and g.shape == e.shape and g.dtype == e.dtype, (module.__name__, g.dtype)
            np.testing.assert_allclose(g, e, rtol=1e-5 if dt == np.float32 else 1e-12)


@needs_compiled
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_valid_call_matches_numpy_twin(name):
    """The valid arguments used above are valid: the compiled and NumPy kernels agree on them."""
    from bprop import _numpy_kernels

    for dt in (np.float64, np.float32):
        a = _kernel_args(name, dt)
        b = tuple(np.copy(x) if isinstance(x, np.ndarray) else x for x in a)
        ra = run_isolated(lambda *a: (_call_kernel(name, *a), a), *a)
        rb = getattr(_numpy_kernels, name)(*b)
        rtol = 1e-12 if dt == np.float64 else 1e-5
        for x, y in zip(ra[1], b):
            np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=rtol, atol=rtol)
        if rb is not None:
            for x, y in zip(*(r if isinstance(r, tuple) else (r,) for r in (ra[0], rb))):
                np.testing.assert_allclose(x, y, rtol=rtol)


def _hostile(name):
    """Wrong dtypes, layouts and flags for one kernel; each must raise, never crash."""
    good = _kernel_args(name, np.float64)
    for i, a in enumerate(good):
        if (name, i) in FLAGS or (name, i) in SCALARS:
            continue
        if a.dtype == np.float64:
            alternatives = {
                "float32": a.astype(np.float32),
                "int64": a.astype(np.int64),
                "non-contiguous": strided(a),
                "big-endian": a.astype(">f8"),
                "read-only": read_only(a),
                "wrong rank": a.reshape(-1, 1) if a.ndim == 1 else a.reshape(-1),
                "list": a.tolist(),
            }
        else:
            alternatives = {"int32": a.astype(np.int32), "float64": a.astype(np.float64), "non-contiguous": strided(a)}
        for label, bad in alternatives.items():
            yield i, label, bad


@needs_compiled
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_hostile_arguments(name):
    if not hasattr(compiled, name):
        pytest.skip(f"{name} is gone from bprop._kernels")
    good = _kernel_args(name, np.float64)
    for i, label, bad in _hostile(name):
        args = list(good)
        args[i] = bad
        if (label == "read-only" and i in INPUTS[name]) or (label == "wrong rank" and name in ELEMENTWISE):
            run_isolated(kernel_call, name, *args)  # read-only inputs, any shape of the right size: valid
            continue
        with pytest.raises((ValueError, TypeError)):
            run_isolated(kernel_call, name, *args)


@needs_compiled
@pytest.mark.parametrize("name", ["softmax_xent_labels_forward", "softmax_xent_labels_backward"])
@pytest.mark.parametrize("label", [-1, 4, -(2**62), 2**62])
def test_kernel_checks_labels(name, label):
    x, t, y = _kernel_args(name, np.float64)
    t = t.copy()
    t[1] = label
    with pytest.raises(ValueError, match=f"{name}: label {label} out of range"):
        run_isolated(kernel_call, name, x, t, y)


@needs_compiled
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_zero_sizes(name):
    """Zero rows or zero classes: a defined result or a ValueError, never a read of x[0]."""
    if not hasattr(compiled, name):
        pytest.skip(f"{name} is gone from bprop._kernels")
    for n, c in ((0, 4), (3, 0), (0, 0)):
        args = _kernel_args(name, np.float64, n=n, c=c)
        try:
            run_isolated(kernel_call, name, *args)
        except ValueError:
            pass


# --------------------------------------------------------------------------
# The isolation itself


def test_isolation_turns_a_crash_into_one_failure():
    import ctypes

    with pytest.raises(pytest.fail.Exception, match="crashed with signal"):
        run_isolated(ctypes.string_at, 0)  # reads address 0: SIGSEGV
    with pytest.raises(pytest.fail.Exception, match="crashed with signal SIGABRT"):
        run_isolated(os.abort)


def test_isolation_hands_back_results_and_exceptions():
    assert_matches(run_isolated(np.add, X, 1.0), X + 1.0)
    with pytest.raises(StateError, match="before forward"):
        run_isolated(Relu().backward, X)
    with pytest.raises(AssertionError, match="modified the caller's argument"):
        run_isolated(call, np.negative, X.copy(), X.copy())  # np.negative(x, out) writes its second argument
