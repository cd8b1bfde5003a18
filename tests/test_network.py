"""TwoLayerNet's book contract, its gradients, and the SGD loop."""
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import bprop
from bprop import Affine, Relu, SoftmaxWithLoss
from bprop.datasets import EmbeddedDataWarning, load_mnist
from bprop.network import TwoLayerNet, train

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The embedded split, one-hot labels, inputs as float64."""
    with pytest.MonkeyPatch.context() as mp:
        # Only the embedded copy, whatever the user has configured.
        mp.delenv("BPROP_DATA", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("empty-cache")))
        with pytest.warns(EmbeddedDataWarning):
            (x, t), (xt, tt) = load_mnist(normalize=True, one_hot_label=True)
    return x.astype(np.float64), t, xt.astype(np.float64), tt


def reference_forward(params, x):
    h = np.maximum(x @ params["W1"] + params["b1"], 0)
    return h @ params["W2"] + params["b2"]


def test_book_structure_and_seeded_weights():
    np.random.seed(42)
    net = TwoLayerNet(input_size=6, hidden_size=4, output_size=3)
    np.random.seed(42)
    W1 = 0.01 * np.random.randn(6, 4)
    W2 = 0.01 * np.random.randn(4, 3)
    np.testing.assert_array_equal(net.params["W1"], W1)
    np.testing.assert_array_equal(net.params["W2"], W2)
    np.testing.assert_array_equal(net.params["b1"], np.zeros(4))
    np.testing.assert_array_equal(net.params["b2"], np.zeros(3))
    assert all(p.dtype == np.float64 for p in net.params.values())
    assert list(net.layers) == ["Affine1", "Relu1", "Affine2"]
    assert [type(layer) for layer in net.layers.values()] == [Affine, Relu, Affine]
    assert isinstance(net.lastLayer, SoftmaxWithLoss)
    assert net.layers["Affine1"].W is net.params["W1"] and net.layers["Affine1"].b is net.params["b1"]
    assert net.layers["Affine2"].W is net.params["W2"] and net.layers["Affine2"].b is net.params["b2"]


def test_weight_init_std_and_dtype():
    np.random.seed(1)
    net = TwoLayerNet(5, 4, 3, weight_init_std=0.5, dtype=np.float32)
    np.random.seed(1)
    np.testing.assert_array_equal(net.params["W1"], (0.5 * np.random.randn(5, 4)).astype(np.float32))
    assert all(p.dtype == np.float32 for p in net.params.values())
    assert net.predict(np.ones((2, 5), dtype=np.float32)).dtype == np.float32
    with pytest.raises(TypeError, match="floating"):
        TwoLayerNet(5, 4, 3, dtype=np.int32)


def test_predict_loss_accuracy(backend):
    rng = np.random.default_rng(0)
    np.random.seed(0)
    net = TwoLayerNet(8, 6, 4, weight_init_std=1.0)
    x = rng.normal(size=(7, 8))
    labels = rng.integers(0, 4, size=7)
    one_hot = np.eye(4)[labels]
    y = reference_forward(net.params, x)
    np.testing.assert_allclose(net.predict(x), y, rtol=1e-12, atol=1e-12)
    m = y.max(axis=1)
    expected_loss = np.mean(m + np.log(np.exp(y - m[:, None]).sum(axis=1)) - y[np.arange(7), labels])
    np.testing.assert_allclose(net.loss(x, labels), expected_loss, rtol=1e-12)
    np.testing.assert_allclose(net.loss(x, one_hot), expected_loss, rtol=1e-12)
    expected_acc = np.mean(y.argmax(axis=1) == labels)
    assert net.accuracy(x, labels) == expected_acc == net.accuracy(x, one_hot)


def test_in_place_param_updates_reach_the_layers():
    np.random.seed(3)
    net = TwoLayerNet(4, 3, 2, weight_init_std=1.0)
    x = np.random.default_rng(3).normal(size=(5, 4))
    net.params["W1"] *= -2.0
    net.params["b2"] += 1.5
    np.testing.assert_allclose(net.predict(x), reference_forward(net.params, x), rtol=1e-12, atol=1e-12)


def test_gradient_matches_numerical_small(backend):
    rng = np.random.default_rng(5)
    np.random.seed(5)
    net = TwoLayerNet(5, 4, 3, weight_init_std=1.0)
    x = rng.normal(size=(6, 5))
    t = rng.integers(0, 3, size=6)
    num = net.numerical_gradient(x, t)
    grad = net.gradient(x, t)
    assert sorted(grad) == sorted(num) == ["W1", "W2", "b1", "b2"]
    for key in grad:
        assert grad[key].shape == net.params[key].shape
        np.testing.assert_allclose(grad[key], num[key], rtol=1e-6, atol=1e-8)


def test_gradient_check_book_figures(backend, embedded):
    """The book's gradient_check: 784-50-10, float64, 3 real images."""
    x, t, _, _ = embedded
    np.random.seed(0)
    net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    grad_numerical = net.numerical_gradient(x[:3], t[:3])
    grad_backprop = net.gradient(x[:3], t[:3])
    for key in ("W1", "b1", "W2", "b2"):
        diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
        assert diff < 1e-8, (key, diff)
        assert np.abs(grad_backprop[key]).max() > 1e-4  # a vanishing gradient would pass trivially


def run(x, t, xt, tt, seed, iters=300):
    np.random.seed(seed)
    net = TwoLayerNet(784, 50, 10)
    # One BLAS thread, as `bprop train` does: the book's matrices are small,
    # and a two-thread BLAS next to another busy process ran 10x slower.
    with threadpool_limits(1):
        return net, train(net, x, t, xt, tt, iters=iters, batch_size=100, learning_rate=0.1)


def test_training_is_deterministic_and_learns(backend, embedded):
    x, t, xt, tt = embedded
    net1, r1 = run(x, t, xt, tt, seed=0)
    net2, r2 = run(x, t, xt, tt, seed=0)
    for key in net1.params:
        np.testing.assert_array_equal(net1.params[key], net2.params[key])
    assert r1["loss"] == r2["loss"] and r1["test_acc"] == r2["test_acc"]
    assert r1["test_acc"] > 0.8  # chance is 0.1
    assert r1["test_acc"] == net1.accuracy(xt, tt)
    # 8000 / 100 = 80 iterations per epoch, evaluated from iteration 0.
    assert [e["iter"] for e in r1["epochs"]] == [0, 80, 160, 240]
    assert len(r1["loss"]) == 300 and r1["loss"][-1] < r1["loss"][0]
    _, r3 = run(x, t, xt, tt, seed=1)
    assert r3["loss"] != r1["loss"]


def test_backends_train_alike(embedded):
    x, t, xt, tt = embedded
    out = {}
    for name in ("cython", "numpy"):
        if name == "cython" and not bprop._backend.compiled_available():
            pytest.skip("compiled kernels not built")
        with bprop.use_backend(name):
            out[name] = run(x, t, xt, tt, seed=0, iters=200)
    (n1, r1), (n2, r2) = out["cython"], out["numpy"]
    assert abs(r1["test_acc"] - r2["test_acc"]) <= 0.005
    for key in n1.params:
        # Both compute the same formulas; only rounding (summation order, exp) differs.
        np.testing.assert_allclose(n1.params[key], n2.params[key], rtol=0, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("source, target", [("embedded", 0.93), ("full", 0.97)])
def test_book_settings_reach_the_book_accuracy(source, target, embedded, monkeypatch):
    """train_neuralnet.py's settings (10000 steps, batch 100, lr 0.1, 50 hidden), seed 0, both backends."""
    if source == "embedded":
        x, t, xt, tt = embedded
    else:
        if not MNIST_DIR.is_dir():
            pytest.skip(f"full MNIST not found at {MNIST_DIR} (the project's shared data folder)")
        (x, t), (xt, tt) = load_mnist(one_hot_label=True, data_dir=MNIST_DIR)
        x, xt = x.astype(np.float64), xt.astype(np.float64)
    acc = {}
    for name in ("cython", "numpy"):
        if name == "cython" and not bprop._backend.compiled_available():
            continue
        with bprop.use_backend(name):
            acc[name] = run(x, t, xt, tt, seed=0, iters=10000)[1]["test_acc"]
    # Seed 0 measured 0.9704 (full) and 0.9530 (embedded); other seeds give
    # 0.969-0.972 and 0.948-0.952, so the full-set target holds for the seed, not every seed.
    assert min(acc.values()) >= target, acc
    assert max(acc.values()) - min(acc.values()) <= 0.005, acc


def test_gradient_skips_only_the_discarded_input_gradient(backend):
    """The book's loop (every layer's backward, the first one's dx thrown away)
    gives exactly the gradients TwoLayerNet.gradient returns without that dx."""
    rng = np.random.default_rng(8)
    np.random.seed(8)
    net = TwoLayerNet(7, 5, 3, weight_init_std=1.0)
    x, t = rng.normal(size=(4, 7)), rng.integers(0, 3, size=4)
    calls = []
    first = net.layers["Affine1"]
    original = first.backward
    first.backward = lambda dout, **kw: calls.append(kw) or original(dout, **kw)
    grads = net.gradient(x, t)
    assert calls == [{"input_grad": False}]

    net.loss(x, t)
    dout = net.lastLayer.backward(1)
    for layer in reversed(list(net.layers.values())):
        dout = layer.backward(dout)
    assert dout.shape == x.shape
    book = {"W1": first.dW, "b1": first.db, "W2": net.layers["Affine2"].dW, "b2": net.layers["Affine2"].db}
    for key in book:
        np.testing.assert_array_equal(grads[key], book[key], err_msg=key)
