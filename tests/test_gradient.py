"""numerical_gradient: the book's central difference, in place and restored."""
import numpy as np
import pytest

from bprop.gradient import numerical_gradient

H = 1e-4


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 4)])
def test_quadratic_any_ndim(shape):
    x = np.random.default_rng(0).normal(size=shape)
    g = numerical_gradient(lambda a: np.sum(a ** 2), x)
    assert g.shape == x.shape and g.dtype == x.dtype
    # ((x+h)^2 - (x-h)^2) / 2h is exactly 2x; only rounding remains.
    np.testing.assert_allclose(g, 2 * x, rtol=0, atol=1e-9)


def test_central_difference_with_h_1e4():
    x = np.array([[-1.5, 0.0], [0.5, 2.0]])
    g = numerical_gradient(lambda a: np.sum(a ** 3), x)
    # For x^3 the central difference is 3x^2 + h^2 exactly (a forward
    # difference would be off by 3xh, about 1e-4 here).
    np.testing.assert_allclose(g, 3 * x ** 2 + H ** 2, rtol=0, atol=1e-10)


def test_perturbs_in_place_one_entry_at_a_time():
    x = np.array([0.1, 1 / 3, -2.7])
    original = x.copy()
    seen = []
    numerical_gradient(lambda a: seen.append(a.copy()) or 0.0, x)
    assert len(seen) == 2 * x.size
    for k, a in enumerate(seen):
        i, sign = divmod(k, 2)
        expected = original.copy()
        expected[i] = original[i] + H if sign == 0 else original[i] - H
        np.testing.assert_array_equal(a, expected)


def test_restores_x_bit_for_bit():
    # 0.1 + 1e-4 - 1e-4 != 0.1 in floating point: restoring must not recompute.
    x = np.array([0.1, 1 / 3, 1e-20, -7.3], dtype=np.float64)
    bits = x.view(np.uint64).copy()
    numerical_gradient(lambda a: float(np.sum(np.sin(a))), x)
    np.testing.assert_array_equal(x.view(np.uint64), bits)


def test_restores_x_when_f_raises():
    x = np.array([0.1, 0.2])
    bits = x.view(np.uint64).copy()
    calls = []

    def f(a):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x.view(np.uint64), bits)


def test_strided_view_is_perturbed_through_the_base():
    base = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    before = base.copy()
    view = base[:, ::2]
    g = numerical_gradient(lambda a: np.sum(base ** 2), view)  # f reads the base array
    np.testing.assert_allclose(g, 2 * before[:, ::2], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(base, before)


def test_float32_keeps_dtype():
    x = np.array([1.0, 2.0], dtype=np.float32)
    g = numerical_gradient(lambda a: float(np.sum(a.astype(np.float64) ** 2)), x)
    assert g.dtype == np.float32
    # The book's float32 step: x[idx] = x + h is rounded to float32, so the
    # derivative estimate is accurate only to float32's spacing near x over h.
    np.testing.assert_allclose(g, [2.0, 4.0], rtol=2e-3)


@pytest.mark.parametrize("x", [np.arange(3), np.array([1, 2], dtype=np.uint8), np.array([True, False])])
def test_integer_and_bool_arrays_are_refused(x):
    with pytest.raises(TypeError, match=r"floating dtype; got (int64|uint8|bool)"):
        numerical_gradient(lambda a: 0.0, x)


def test_non_array_is_refused():
    with pytest.raises(TypeError, match="NumPy array"):
        numerical_gradient(lambda a: 0.0, [1.0, 2.0])


def test_read_only_array_is_refused():
    x = np.zeros(3)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        numerical_gradient(lambda a: 0.0, x)
