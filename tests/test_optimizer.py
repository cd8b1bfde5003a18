"""The book's optimizers: the book's updates to the last bit, on both backends."""
import re

import numpy as np
import pytest

import bprop
from bprop import optimizer as O
from conftest import book_module, require_compiled

NAMES = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]
#: Non-default hyperparameters, so that each constant is exercised.
SETTINGS = {"SGD": {"lr": 0.03}, "Momentum": {"lr": 0.02, "momentum": 0.8}, "Nesterov": {"lr": 0.02, "momentum": 0.7},
            "AdaGrad": {"lr": 0.05}, "RMSprop": {"lr": 0.02, "decay_rate": 0.95},
            "Adam": {"lr": 0.002, "beta1": 0.85, "beta2": 0.99}}
SHAPES = {"W1": (30, 1, 5, 5), "b1": (30,), "W2": (130, 17), "b2": (17,), "one": (1,)}


def book_optimizers():
    return book_module("common/optimizer.py")


def run_steps(make, dtype, steps=40, seed=0, grad_dtype=None):
    """Parameters after ``steps`` updates of a fresh optimizer, from fixed data."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    opt = make()
    for _ in range(steps):
        grads = {k: rng.standard_normal(s).astype(grad_dtype or dtype) for k, s in SHAPES.items()}
        opt.update(params, grads)
    return params, opt


def assert_identical(a, b, what):
    for key in a:
        assert a[key].dtype == b[key].dtype, f"{what}: {key} dtype {a[key].dtype} vs {b[key].dtype}"
        assert np.array_equal(a[key], b[key]), (
            f"{what}: {key} differs by up to {np.max(np.abs(a[key].astype(float) - b[key])):.3g}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_bits_as_the_books_update(backend, name, dtype):
    book = book_optimizers()
    ours, _ = run_steps(lambda: getattr(O, name)(**SETTINGS[name]), dtype)
    theirs, _ = run_steps(lambda: getattr(book, name)(**SETTINGS[name]), dtype)
    assert_identical(ours, theirs, f"{name} on {backend}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backends_give_the_same_bits(name, dtype):
    # Needs no book: the NumPy twin is the book's expression, the compiled
    # loop must reproduce it exactly (no fused multiply-add, NumPy's order).
    require_compiled()
    results = {}
    for be in ("cython", "numpy"):
        with bprop.use_backend(be):
            results[be] = run_steps(lambda: getattr(O, name)(**SETTINGS[name]), dtype)[0]
    assert_identical(results["cython"], results["numpy"], name)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_dtypes_and_views_follow_the_book(backend, name):
    book = book_optimizers()
    # float32 parameters with float64 gradients, and a parameter that is a strided view.
    ours, _ = run_steps(lambda: getattr(O, name)(**SETTINGS[name]), np.float32, steps=5, grad_dtype=np.float64)
    theirs, _ = run_steps(lambda: getattr(book, name)(**SETTINGS[name]), np.float32, steps=5, grad_dtype=np.float64)
    assert_identical(ours, theirs, f"{name} mixed dtypes")
    base_ours, base_theirs = np.arange(20.0), np.arange(20.0)
    g = {"w": np.linspace(-1, 1, 10)}
    o, t = getattr(O, name)(**SETTINGS[name]), getattr(book, name)(**SETTINGS[name])
    for _ in range(3):
        o.update({"w": base_ours[::2]}, g)
        t.update({"w": base_theirs[::2]}, g)
    np.testing.assert_array_equal(base_ours, base_theirs)


@pytest.mark.parametrize("name", NAMES)
def test_params_in_place_grads_untouched(backend, name):
    params = {"W": np.ones((3, 4)), "b": np.zeros(4)}
    held = dict(params)
    grads = {"W": np.full((3, 4), 0.5), "b": np.full(4, -0.25)}
    before = {k: v.copy() for k, v in grads.items()}
    getattr(O, name)().update(params, grads)
    assert all(params[k] is held[k] for k in params)  # the same arrays, changed in place
    assert not np.array_equal(params["W"], np.ones((3, 4)))
    for k in grads:
        np.testing.assert_array_equal(grads[k], before[k])


def test_momentum_state_is_a_new_array_each_step(backend):
    # As in the book, v is replaced, not rewritten: a v the caller holds stays as it was.
    opt = O.Momentum()
    params, grads = {"w": np.ones(5)}, {"w": np.full(5, 2.0)}
    opt.update(params, grads)
    first = opt.v["w"]
    kept = first.copy()
    opt.update(params, grads)
    assert opt.v["w"] is not first
    np.testing.assert_array_equal(first, kept)


def test_state_for_a_parameter_added_later(backend):
    opt = O.Adam()
    params, grads = {"a": np.ones(3)}, {"a": np.ones(3)}
    opt.update(params, grads)
    params["b"], grads["b"] = np.ones(2), np.ones(2)
    opt.update(params, grads)  # the book raises KeyError here
    assert set(opt.m) == set(opt.v) == {"a", "b"} and opt.iter == 2


@pytest.mark.parametrize("params, grads, exc, message", [
    ({"w": np.ones(3)}, {}, KeyError, "grads has no 'w'"),
    ({"w": np.ones(3)}, {"w": np.ones(4)}, ValueError, "grads['w'] has shape (4,) but params['w'] has (3,)"),
    ({"w": np.ones(3, dtype=np.int64)}, {"w": np.ones(3)}, TypeError, "params['w'] must be a floating-point ndarray"),
    ({"w": [1.0, 2.0]}, {"w": np.ones(2)}, TypeError, "params['w'] must be a floating-point ndarray"),
    ({"w": np.ones(3)}, {"w": "x"}, TypeError, "grads['w'] must be a real ndarray"),
    ([np.ones(3)], {}, TypeError, "params and grads must be dicts of arrays"),
], ids=["missing-grad", "shape", "int-param", "list-param", "str-grad", "not-a-dict"])
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_refused_before_any_update(backend, name, params, grads, exc, message):
    first = {"a": np.ones(2)}
    if isinstance(params, dict):
        params = {**first, **params}
        grads = {**{"a": np.ones(2)}, **grads}
    with pytest.raises(exc, match=re.escape(message)):
        getattr(O, name)().update(params, grads)
    np.testing.assert_array_equal(first["a"], np.ones(2))  # nothing was updated


def test_read_only_param_is_refused(backend):
    w = np.ones(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match=re.escape("params['w'] is read-only")):
        O.SGD().update({"w": w}, {"w": np.ones(3)})
