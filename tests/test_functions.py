"""bprop.functions: softmax, cross_entropy_error, sigmoid and relu (book ch. 3-4, common/functions.py)."""
import warnings

import numpy as np
import pytest

from bprop import book
from bprop import functions as F
from conftest import RTOL, assert_close

FLOATS = [np.dtype(np.float32), np.dtype(np.float64)]


def dtype_ids(dt):
    return np.dtype(dt).name


# --- softmax ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_ids)
@pytest.mark.parametrize("shape", [(7,), (4, 9), (3, 2, 5), (1, 1), (5, 1)], ids=str)
def test_softmax_matches_the_book_along_the_last_axis(backend, dtype, shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    before = x.copy()
    y = F.softmax(x)
    assert y.dtype == dtype and y.shape == shape
    assert_close(y, book.softmax(x.astype(np.float64)), dtype)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=0, atol=8 * np.finfo(dtype).eps * shape[-1])
    assert np.all(y >= 0)
    np.testing.assert_array_equal(x, before)
    # Row by row: the last axis only.
    rows = x.reshape(-1, shape[-1])
    for i, row in enumerate(rows):
        assert_close(y.reshape(rows.shape)[i], book.softmax(row.astype(np.float64)), dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_ids)
def test_softmax_of_huge_scores_does_not_overflow(backend, dtype):
    big = 1e20 if dtype == np.float64 else 1e30
    cases = [
        ([1000.0, 1001.0, 1002.0], [0.09003057317038046, 0.24472847105479764, 0.6652409557748219]),
        ([100.0, 200.0, 300.0], [np.exp(-200.0), np.exp(-100.0), 1.0]),  # exp(300) overflows float32
        ([-1000.0, -1000.0], [0.5, 0.5]),  # every exp underflows without the shift
        ([big, big, -big], [0.5, 0.5, 0.0]),
        ([-0.0, 0.0], [0.5, 0.5]),
    ]
    for x, expected in cases:
        x = np.array(x, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = F.softmax(x)
            y2 = F.softmax(np.stack([x, x[::-1]]))
        assert y.dtype == dtype
        assert np.all(np.isfinite(y)), (x, y)
        assert_close(y, expected, dtype)
        assert_close(y2, [expected, expected[::-1]], dtype)


def test_softmax_is_shift_invariant(backend):
    x = np.random.default_rng(2).standard_normal((3, 6))
    assert_close(F.softmax(x + 1000.0), F.softmax(x), np.float64)


def test_softmax_of_integers_and_lists(backend):
    x = np.array([[1, 2, 3], [0, 0, 0]])
    y = F.softmax(x)
    assert y.dtype == np.float64 == book.softmax(x).dtype
    assert_close(y, book.softmax(x.astype(np.float64)), np.float64)
    assert_close(F.softmax([1.0, 2.0, 3.0]), book.softmax(np.array([1.0, 2.0, 3.0])), np.float64)


def test_softmax_propagates_nan_and_inf_like_the_book(backend):
    x = np.array([[np.nan, 1.0, 2.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 0.0]])
    with np.errstate(all="ignore"):
        expected = book.softmax(x)
    assert_close(F.softmax(x), expected, np.float64)
    np.testing.assert_array_equal(F.softmax(x)[2], [0.0, 0.5, 0.5])


# --- cross_entropy_error: the book's formula, 1e-7 included, bit for bit -------------

def _probabilities(rng, n, c, dtype):
    y = rng.random((n, c)) + 0.05
    return (y / y.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_ids)
def test_cross_entropy_error_is_the_books_formula(dtype):
    rng = np.random.default_rng(3)
    y = _probabilities(rng, 6, 5, dtype)
    y[2, 1] = 0.0  # log(0 + 1e-7): the 1e-7 keeps it finite
    labels = rng.integers(0, 5, 6)
    labels[2] = 1
    onehot = np.eye(5, dtype=dtype)[labels]
    cases = [
        (y, labels),
        (y, onehot),
        (y, onehot.astype(np.int64)),
        (y[0], labels[0:1]),  # one sample, 1-D
        (y[0], onehot[0]),  # one sample, one-hot, 1-D
        (y[:1], labels[:1]),
    ]
    for yy, tt in cases:
        got = F.cross_entropy_error(yy, tt)
        want = book.cross_entropy_error(yy, tt)
        assert type(got) is type(want), (type(got), type(want))
        assert np.array_equal(got, want) and got.tobytes() == want.tobytes(), (yy.shape, np.shape(tt), got, want)
        # And the formula itself, written out: -sum(log(y[t] + 1e-7)) / N.
        y2 = yy.reshape(1, -1) if yy.ndim == 1 else yy
        t2 = np.reshape(tt, (y2.shape[0], -1))
        t2 = t2.argmax(axis=1) if t2.size == y2.size else t2.reshape(-1)
        assert got == -np.sum(np.log(y2[np.arange(y2.shape[0]), t2] + 1e-7)) / y2.shape[0]
    assert np.isfinite(F.cross_entropy_error(y, labels))


def test_cross_entropy_error_reproduces_the_books_printed_examples():
    # Chapter 4.2.2: t is "2", one-hot; the book prints these two values.
    t = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    assert F.cross_entropy_error(y, t) == 0.510825457099338
    y = np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0])
    assert F.cross_entropy_error(y, t) == 2.302584092994546


def test_cross_entropy_error_leaves_its_arguments_alone():
    y = np.array([[0.2, 0.8], [0.6, 0.4]])
    t = np.array([[0.0, 1.0], [1.0, 0.0]])
    y0, t0 = y.copy(), t.copy()
    F.cross_entropy_error(y, t)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(t, t0)


# --- sigmoid ------------------------------------------------------------------------

def exact_sigmoid(x):
    """float64 sigmoid without overflow: exp(x) / (1 + exp(x)) for negative x."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_ids)
def test_sigmoid_values(backend, dtype):
    x = np.concatenate([np.linspace(-30, 30, 121), [0.0, -0.0, 1e-8, -1e-8]]).astype(dtype)
    y = F.sigmoid(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, exact_sigmoid(x), dtype)
    with np.errstate(over="ignore"):
        assert_close(y, book.sigmoid(x.astype(np.float64)), dtype)
    assert y[x == 0].tolist() == [0.5] * int(np.sum(x == 0))
    # sigmoid(-x) = 1 - sigmoid(x)
    np.testing.assert_allclose(F.sigmoid(-x) + y, 1.0, rtol=0, atol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_ids)
def test_sigmoid_tails_without_overflow(backend, dtype):
    # The book's 1 / (1 + exp(-x)) overflows (and warns) below -710 in
    # float64 and -89 in float32; bprop must not warn and stays accurate.
    x = np.array([-1e20, -1000.0, -745.0, -720.0, -200.0, -104.0, -100.0, -89.0, -88.0, 40.0, 100.0, 1000.0, 1e20,
                  np.inf, -np.inf, np.nan], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.sigmoid(x)
    assert y.dtype == dtype
    assert_close(y, exact_sigmoid(x), dtype)
    assert np.all((y[:-1] >= 0) & (y[:-1] <= 1))
    assert y[-3] == 1.0 and y[-2] == 0.0 and np.isnan(y[-1])
    # Where the exact value is a normal number, it is relatively accurate too.
    tiny = np.finfo(dtype).tiny
    ref = exact_sigmoid(x)
    normal = (ref > tiny) & np.isfinite(ref)
    np.testing.assert_allclose(y[normal], ref[normal], rtol=RTOL[np.dtype(dtype)] * 4)


def test_sigmoid_of_integers_and_lists(backend):
    assert F.sigmoid(np.array([0, 1, -1])).dtype == np.float64 == book.sigmoid(np.array([0, 1, -1])).dtype
    assert F.sigmoid(np.array([0, 1], np.int8)).dtype == np.float16 == book.sigmoid(np.array([0, 1], np.int8)).dtype
    assert_close(F.sigmoid([0.0, 2.0]), exact_sigmoid([0.0, 2.0]), np.float64)


# --- relu ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS + [np.dtype(np.int64), np.dtype(np.int8), np.dtype(np.float16)], ids=dtype_ids)
def test_relu_is_max_with_zero(backend, dtype):
    x = np.array([[-3, -1, 0, 1, 2], [4, 0, -2, 3, 1]]).astype(dtype)
    y = F.relu(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert not np.shares_memory(y, x)


@pytest.mark.parametrize("dtype", FLOATS, ids=dtype_ids)
def test_relu_special_values(backend, dtype):
    x = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 1e20, -1e20, 2.5], dtype=dtype)
    y = F.relu(x)
    expected = np.array([0.0, 0.0, np.nan, np.inf, 0.0, 1e20, 0.0, 2.5], dtype=dtype)
    np.testing.assert_array_equal(y, expected)  # NaN passes through, as in the book
    assert not np.signbit(y[:2]).any(), "-0.0 must become +0.0, as the book's out[x <= 0] = 0 does"
    assert_close(y, book.Relu().forward(x), dtype)


def test_functions_accept_non_contiguous_input(backend):
    x = (np.arange(24.0).reshape(4, 6) - 11)[:, ::2].T
    assert_close(F.softmax(x), book.softmax(np.ascontiguousarray(x)), np.float64)
    assert_close(F.sigmoid(x), exact_sigmoid(x), np.float64)
    np.testing.assert_array_equal(F.relu(x), np.maximum(x, 0))
