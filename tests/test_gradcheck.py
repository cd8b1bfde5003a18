"""Gradient checks: each layer's backward against central differences, in float64.

The numerical derivative is the fourth-order central difference

    f'(x) ~ (f(x - 2h) - 8 f(x - h) + 8 f(x + h) - f(x + 2h)) / (12 h),   h = 2**-17 (7.6e-6)

Its truncation error is h**4 |f'''''| / 30, about 1e-22 for the O(1)
derivatives here, and its rounding error about eps |f| / h, about 3e-11 |f|
(eps = 2.2e-16). The objectives are O(1) (a loss, or sum(out * R) for a fixed
random R), so a correct backward agrees to about 1e-10 relative (measured:
1e-11 .. 1e-9). ``RTOL_GRAD = 1e-7`` leaves two or more orders of margin
for that, and is still tight: a wrong formula (a transpose, a missing 1/N) is
off by O(1), and the book's 1e-7 inside the log of the cross-entropy already
fails it (``test_the_check_would_catch_the_books_1e7_in_the_log``). The
relative error is taken over the whole gradient,
``max |analytic - numerical| / max |numerical|``, so that entries that are
zero (ReLU's masked inputs) do not divide by zero.

Every check runs on both backends (``backend`` fixture).
"""
import numpy as np
import pytest

import bprop
from bprop import book

H = 2.0 ** -17
RTOL_GRAD = 1e-7


def numerical_gradient(f, x, h=H):
    """Fourth-order central differences of the scalar ``f()`` w.r.t. each entry of ``x``.

    ``x`` is perturbed in place and restored, as the book's numerical
    gradient does, so layers holding ``x`` by reference see the change.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        orig = x[idx]
        values = []
        for k in (-2, -1, 1, 2):
            x[idx] = orig + k * h
            values.append(float(f()))
        x[idx] = orig
        grad[idx] = (values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * h)
    return grad


def relative_error(analytic, numerical):
    analytic, numerical = np.asarray(analytic, np.float64), np.asarray(numerical, np.float64)
    assert analytic.shape == numerical.shape, (analytic.shape, numerical.shape)
    scale = max(np.max(np.abs(numerical), initial=0.0), np.max(np.abs(analytic), initial=0.0))
    return np.max(np.abs(analytic - numerical), initial=0.0) / scale if scale else 0.0


def assert_gradient(analytic, numerical, what):
    assert np.all(np.isfinite(analytic)), f"{what}: analytic gradient not finite"
    err = relative_error(analytic, numerical)
    assert err < RTOL_GRAD, f"{what}: relative error {err:.3g} >= {RTOL_GRAD:g}"
    return err


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def test_relu(backend, rng):
    # Away from the kink: |x| >= 0.1, far beyond the 2h steps.
    x = rng.uniform(0.1, 2.0, (4, 6)) * rng.choice([-1.0, 1.0], (4, 6))
    R = rng.standard_normal(x.shape)
    layer = bprop.Relu()
    numerical = numerical_gradient(lambda: np.sum(layer.forward(x) * R), x)
    layer.forward(x)
    assert_gradient(layer.backward(R), numerical, f"Relu dx on {backend}")


def test_sigmoid(backend, rng):
    x = rng.standard_normal((4, 6)) * 3
    R = rng.standard_normal(x.shape)
    layer = bprop.Sigmoid()
    numerical = numerical_gradient(lambda: np.sum(layer.forward(x) * R), x)
    layer.forward(x)
    assert_gradient(layer.backward(R), numerical, f"Sigmoid dx on {backend}")


@pytest.mark.parametrize("x_shape", [(4, 5), (3, 1, 2, 3)], ids=["2-D", "4-D"])
def test_affine(backend, rng, x_shape):
    x = rng.standard_normal(x_shape)
    d = int(np.prod(x_shape[1:]))
    W = rng.standard_normal((d, 3))
    b = rng.standard_normal(3)
    R = rng.standard_normal((x_shape[0], 3))
    layer = bprop.Affine(W, b)  # W and b by reference: perturbing them in place is seen

    def f():
        return np.sum(layer.forward(x) * R)

    numerical = {name: numerical_gradient(f, a) for name, a in (("dx", x), ("dW", W), ("db", b))}
    layer.forward(x)
    dx = layer.backward(R)
    assert dx.shape == x_shape
    assert_gradient(dx, numerical["dx"], f"Affine dx on {backend}")
    assert_gradient(layer.dW, numerical["dW"], f"Affine dW on {backend}")
    assert_gradient(layer.db, numerical["db"], f"Affine db on {backend}")


@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "one-hot"])
def test_softmax_with_loss(backend, rng, onehot):
    x = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, 5)
    t = np.eye(4)[labels] if onehot else labels
    layer = bprop.SoftmaxWithLoss()
    numerical = numerical_gradient(lambda: layer.forward(x, t), x)
    layer.forward(x, t)
    assert_gradient(layer.backward(), numerical, f"SoftmaxWithLoss dx ({'one-hot' if onehot else 'labels'}) on {backend}")


def test_softmax_with_loss_confident_wrong_prediction(backend, rng):
    # y[t] down to 1e-6: where the book's 1e-7 would matter most, the exact loss still matches.
    x = rng.standard_normal((3, 5))
    labels = np.array([0, 2, 4])
    x[np.arange(3), labels] -= 12.0
    layer = bprop.SoftmaxWithLoss()
    numerical = numerical_gradient(lambda: layer.forward(x, labels), x)
    layer.forward(x, labels)
    assert layer.y[np.arange(3), labels].min() < 1e-5
    assert_gradient(layer.backward(), numerical, f"SoftmaxWithLoss dx, confident and wrong, on {backend}")


@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "one-hot"])
def test_two_layer_network(backend, rng, onehot):
    """Affine - Relu - Affine - SoftmaxWithLoss, as the book's TwoLayerNet."""
    n, d, hidden, c = 6, 5, 7, 4
    x = rng.standard_normal((n, d))
    labels = rng.integers(0, c, n)
    t = np.eye(c)[labels] if onehot else labels
    params = {
        "W1": rng.standard_normal((d, hidden)) * 0.8,
        "b1": rng.standard_normal(hidden) * 0.5,
        "W2": rng.standard_normal((hidden, c)) * 0.8,
        "b2": rng.standard_normal(c) * 0.5,
    }
    affine1 = bprop.Affine(params["W1"], params["b1"])
    relu = bprop.Relu()
    affine2 = bprop.Affine(params["W2"], params["b2"])
    last = bprop.SoftmaxWithLoss()

    def loss():
        return last.forward(affine2.forward(relu.forward(affine1.forward(x))), t)

    # Keep the hidden pre-activations away from ReLU's kink, where the
    # difference quotient would straddle it.
    assert np.min(np.abs(affine1.forward(x))) > 10 * H

    numerical = {name: numerical_gradient(loss, p) for name, p in params.items()}
    loss()
    dout = affine1.backward(relu.backward(affine2.backward(last.backward())))
    assert dout.shape == x.shape
    analytic = {"W1": affine1.dW, "b1": affine1.db, "W2": affine2.dW, "b2": affine2.db}
    for name in params:
        assert_gradient(analytic[name], numerical[name], f"two-layer d{name} ({'one-hot' if onehot else 'labels'}) on {backend}")


def test_the_check_would_catch_the_books_1e7_in_the_log(rng):
    """The tolerance has teeth: the book's loss (1e-7 in the log) fails it against (y - t) / N."""
    x = rng.standard_normal((3, 5))
    labels = np.array([0, 2, 4])
    x[np.arange(3), labels] -= 8.0  # y[t] about 1e-4: the 1e-7 shifts the slope by about 1e-3
    ref = book.SoftmaxWithLoss()
    numerical = numerical_gradient(lambda: ref.forward(x, labels), x)
    ref.forward(x, labels)
    assert relative_error(ref.backward(), numerical) > 100 * RTOL_GRAD
