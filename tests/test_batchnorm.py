"""BatchNormalization and Dropout: the book's semantics on both backends."""
import re

import numpy as np
import pytest

import bprop
from bprop import BatchNormalization, Dropout, _numpy_kernels
from conftest import assert_close, book_module, require_compiled


def book_layers():
    """The book's own common/layers.py, or skip where the book is not beside the project."""
    return book_module("common/layers.py")


def reference_forward(x, gamma, beta, eps=1e-6):
    """Training forward in float64 from the definition: per-activation batch mean and biased variance."""
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    xn = (x - mu) / np.sqrt(var + eps)
    return gamma * xn + beta, xn, mu, var


def reference_backward(dout, xn, gamma, var, eps=1e-6):
    """The standard closed form of the batch-norm input gradient, in float64."""
    d = dout.reshape(xn.shape).astype(np.float64)
    n = d.shape[0]
    return (gamma / np.sqrt(var + eps)) / n * (n * d - d.sum(axis=0) - xn * (d * xn).sum(axis=0))


SHAPES = [(1, 5), (2, 3), (100, 100), (10, 3, 4, 4), (7, 37)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchnorm_training_matches_the_definition(backend, shape, dtype):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    d = int(np.prod(shape[1:]))
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    before = [a.copy() for a in (x, gamma, beta, dout)]
    layer = BatchNormalization(gamma, beta)
    out = layer.forward(x)
    dx = layer.backward(dout)
    for a, b in zip((x, gamma, beta, dout), before):
        np.testing.assert_array_equal(a, b)
    ref_out, xn, mu, var = reference_forward(x, gamma.astype(np.float64), beta.astype(np.float64))
    assert out.shape == shape and out.dtype == dtype and dx.shape == shape and dx.dtype == dtype
    # float32: the batch statistics are rounded to float32 before xn, so an
    # entry carries a few float32 ulp of |gamma * xn|.
    tol = dict(rtol=1e-7, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.reshape(ref_out.shape), ref_out, **tol)
    ref_dx = reference_backward(dout, xn, gamma.astype(np.float64), var)
    scale = np.abs(gamma.astype(np.float64)) / np.sqrt(var + 1e-6) * np.abs(dout).reshape(xn.shape).max(axis=0)
    # dx cancels three terms of the size of gamma / std * |dout|: its error is relative to that.
    err = np.abs(dx.reshape(ref_dx.shape) - ref_dx)
    assert np.all(err <= (1e-12 if dtype == np.float64 else 1e-5) * scale), err.max()
    np.testing.assert_allclose(layer.dbeta, dout.reshape(xn.shape).astype(np.float64).sum(axis=0), **tol)
    np.testing.assert_allclose(layer.dgamma, (dout.reshape(xn.shape) * xn).sum(axis=0), **tol)
    # Running statistics: float64 zeros on the first call, then the momentum update.
    np.testing.assert_allclose(layer.running_mean, 0.1 * mu, rtol=1e-6)
    np.testing.assert_allclose(layer.running_var, 0.1 * var, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert layer.running_mean.dtype == np.float64 and layer.batch_size == shape[0]
    assert layer.xn.shape == layer.xc.shape == (shape[0], d) and layer.std.shape == (d,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchnorm_backends_agree(dtype):
    require_compiled()
    rng = np.random.default_rng(7)
    x, dout = (rng.standard_normal((64, 48)) * 2).astype(dtype), rng.standard_normal((64, 48)).astype(dtype)
    gamma, beta = rng.standard_normal(48).astype(dtype), rng.standard_normal(48).astype(dtype)
    results = {}
    for name in ("cython", "numpy"):
        with bprop.use_backend(name):
            layer = BatchNormalization(gamma, beta)
            results[name] = (layer.forward(x), layer.backward(dout), layer.dgamma, layer.dbeta, layer.xn, layer.std)
    for a, b in zip(*results.values()):
        assert a.dtype == b.dtype
        assert_close(a, b)


def test_batchnorm_against_the_books_own_layer(backend):
    book = book_layers()
    rng = np.random.default_rng(3)
    for shape in [(100, 100), (20, 3, 5, 5)]:
        d = int(np.prod(shape[1:]))
        gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
        ours, theirs = BatchNormalization(gamma, beta), book.BatchNormalization(gamma, beta)
        for step in range(3):  # running statistics over several calls
            x, dout = rng.standard_normal(shape) * (step + 1), rng.standard_normal(shape)
            assert_close(ours.forward(x), theirs.forward(x))
            assert_close(ours.backward(dout), theirs.backward(dout))
            for name in ("dgamma", "dbeta", "running_mean", "running_var", "xc", "xn", "std"):
                assert_close(getattr(ours, name), getattr(theirs, name))
        x = rng.standard_normal(shape)
        assert_close(ours.forward(x, train_flg=False), theirs.forward(x, train_flg=False))


def test_batchnorm_evaluation_before_training_is_the_books(backend):
    # The running statistics start at zero, as in the book: an evaluation
    # pass first divides by sqrt(0 + 1e-6). Documented, not changed.
    x = np.array([[1.0, -2.0], [3.0, 0.5]])
    layer = BatchNormalization(np.ones(2), np.zeros(2))
    np.testing.assert_allclose(layer.forward(x, train_flg=False), x / np.sqrt(1e-6))
    assert layer.running_mean.dtype == np.float64 and not layer.running_mean.any()


def test_batchnorm_holds_gamma_and_beta_by_reference(backend):
    gamma, beta = np.ones(3), np.zeros(3)
    layer = BatchNormalization(gamma, beta)
    x = np.arange(12.0).reshape(4, 3)
    first = layer.forward(x)
    gamma *= 2  # an optimizer's in-place update
    beta += 1
    np.testing.assert_allclose(layer.forward(x), 2 * first + 1)


def test_batchnorm_backward_belongs_to_the_last_training_forward(backend):
    rng = np.random.default_rng(5)
    layer = BatchNormalization(np.ones(4), np.zeros(4))
    x = rng.standard_normal((6, 4))
    layer.forward(x)
    expected = BatchNormalization(np.ones(4), np.zeros(4))
    expected.forward(x)
    layer.forward(rng.standard_normal((2, 4)), train_flg=False)  # evaluation keeps no gradient state
    dout = rng.standard_normal((6, 4))
    np.testing.assert_array_equal(layer.backward(dout), expected.backward(dout))


@pytest.mark.parametrize("call, exc, message", [
    (lambda l: l.backward(np.ones((2, 3))), bprop.StateError, "BatchNormalization.backward: called before forward"),
    (lambda l: l.forward(np.ones(3)), ValueError, "x must be (N, D) or (N, C, H, W); got x.shape=(3,)"),
    (lambda l: l.forward(np.ones((2, 4))), ValueError, "gamma must have shape (4,)"),
    (lambda l: l.forward(np.ones((0, 3))), ValueError, "a training batch needs at least one sample"),
    (lambda l: l.forward([[1.0, 2.0, 3.0]]), TypeError, "x must be a numpy.ndarray, got list"),
    (lambda l: (l.forward(np.ones((2, 3))), l.backward(np.ones((3, 3)))), ValueError, "dout must have the shape"),
], ids=["before-forward", "1-D", "gamma", "empty", "list", "dout-shape"])
def test_batchnorm_bad_input(backend, call, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        call(BatchNormalization(np.ones(3), np.zeros(3)))


def test_batchnorm_nan_propagates_silently(backend):
    x = np.array([[1.0, np.nan], [2.0, 1.0], [0.0, 3.0]])
    layer = BatchNormalization(np.ones(2), np.zeros(2))
    out = layer.forward(x)
    assert np.all(np.isnan(out[:, 1])) and np.all(np.isfinite(out[:, 0]))
    assert np.all(np.isnan(layer.backward(np.ones((3, 2)))[:, 1]))


# -- Dropout -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchnorm_kernels_write_given_outputs_and_refuse_overlaps(dtype):
    """Outputs the layer passes in (its reused memory) are the ones written and returned;
    an output overlapping an input or another output is refused before any work."""
    require_compiled()
    k = bprop._backend.compiled_module()
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal((6, 5)).astype(dtype)
    gamma, beta = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    for kernels in (k, _numpy_kernels):
        out, xc, dx = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        got = kernels.batchnorm_forward(x, gamma, beta, 1e-6, out, xc)
        assert got[0] is out and got[1] is xc
        back = kernels.batchnorm_backward(dout, xc, gamma, got[4], dx)
        assert back[0] is dx
        fresh = kernels.batchnorm_forward(x, gamma, beta, 1e-6, None, None)
        for a, b in zip(got, fresh):
            assert_close(a, b)
        assert_close(dx, kernels.batchnorm_backward(dout, xc, gamma, got[4], None)[0])
    std = np.ones(5, dtype)
    both = np.empty((2, 6, 5), dtype)
    for args, message in [
        ((x, gamma, beta, 1e-6, x, None), "out overlaps x"),
        ((x, gamma, beta, 1e-6, None, x), "xc overlaps x"),
        ((x, gamma, beta, 1e-6, both[0], both[0]), "out overlaps xc"),
    ]:
        with pytest.raises(ValueError, match=f"batchnorm_forward: {message}"):
            k.batchnorm_forward(*args)
    for args, message in [((dout, x, gamma, std, dout), "dx overlaps dout"), ((dout, x, gamma, std, x), "dx overlaps xc")]:
        with pytest.raises(ValueError, match=f"batchnorm_backward: {message}"):
            k.batchnorm_backward(*args)


def test_batchnorm_xn_is_xc_over_std_and_can_be_set(backend):
    """xn, not stored by the training forward, is the book's xc / std, bit for bit; assigning
    it as to the book's attribute works."""
    rng = np.random.default_rng(12)
    layer = BatchNormalization(np.ones(7), np.zeros(7))
    assert layer.xn is None
    layer.forward(rng.standard_normal((9, 7)) * 4)
    assert layer.xn.tobytes() == (layer.xc / layer.std).tobytes()
    held = layer.xn
    layer.forward(rng.standard_normal((9, 7)))
    assert layer.xn is not held and layer.xn.tobytes() == (layer.xc / layer.std).tobytes()
    mine = np.zeros((9, 7))
    layer.xn = mine
    assert layer.xn is mine


def test_dropout_masks_come_from_numpys_global_generator():
    # The book draws with np.random.rand: a seed gives the book's masks.
    x = np.arange(1.0, 13.0).reshape(3, 4)
    np.random.seed(11)
    expected_mask = np.random.rand(3, 4) > 0.3
    np.random.seed(11)
    layer = Dropout(0.3)
    out = layer.forward(x)
    np.testing.assert_array_equal(layer.mask, expected_mask)
    np.testing.assert_array_equal(out, x * expected_mask)
    np.testing.assert_array_equal(layer.backward(x + 1), (x + 1) * expected_mask)
    np.testing.assert_array_equal(layer.forward(x, train_flg=False), x * 0.7)
    np.testing.assert_array_equal(layer.mask, expected_mask)  # evaluation leaves the mask
    assert np.array_equal(x, np.arange(1.0, 13.0).reshape(3, 4))


def test_dropout_against_the_books_own_layer():
    book = book_layers()
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    np.random.seed(3)
    theirs = book.Dropout(0.4)
    t_out, t_eval = theirs.forward(x), theirs.forward(x, train_flg=False)
    np.random.seed(3)
    ours = Dropout(0.4)
    o_out, o_eval = ours.forward(x), ours.forward(x, train_flg=False)
    for a, b in ((o_out, t_out), (o_eval, t_eval), (ours.backward(x), theirs.backward(x))):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call, exc, message", [
    (lambda: Dropout(1.5), ValueError, "dropout_ratio must lie in [0, 1]; got 1.5"),
    (lambda: Dropout().backward(np.ones(3)), bprop.StateError, "Dropout.backward: called before forward"),
    (lambda: Dropout().forward("x"), TypeError, "x must be a numpy.ndarray, got str"),
], ids=["ratio", "before-forward", "not-an-array"])
def test_dropout_bad_input(call, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        call()
