"""SimpleConvNet (ch07) and Adam against the book's own code; the book's unmodified scripts on bprop."""
import pickle
import runpy
import sys

import numpy as np
import pytest

import bprop
from bprop import SimpleConvNet
from bprop.optimizer import Adam
from book_ch07 import BOOK_DIR, book, book_convnet_on_bprop, require_book

SMALL = dict(input_dim=(1, 10, 10), conv_param={"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1},
             hidden_size=8, output_size=5)


def _batch(n, shape=(1, 28, 28), classes=10, seed=0, dt=np.float64):
    r = np.random.default_rng(seed)
    return r.random((n,) + shape).astype(dt), r.integers(0, classes, n)


def _pair(seed=0, **kwargs):
    """The book's network and bprop's, with the same initial weights."""
    np.random.seed(seed)
    ref = book().simple_convnet.SimpleConvNet(**kwargs)
    np.random.seed(seed)
    net = SimpleConvNet(**kwargs)
    return ref, net


def _scaled_up(ref, net, scale=30.0):
    # The book's 0.01 weights make the gradients tiny; larger ones exercise every path (ReLU masks, ties).
    for key in ref.params:
        ref.params[key] *= scale
        net.params[key][...] = ref.params[key]


def test_initial_weights_are_the_books():
    ref, net = _pair()
    assert list(net.params) == list(ref.params)
    for key in ref.params:
        np.testing.assert_array_equal(net.params[key], ref.params[key])
    assert list(net.layers) == list(ref.layers)
    assert net.layers["Conv1"].W is net.params["W1"] and net.layers["Affine2"].b is net.params["b3"]


@pytest.mark.parametrize("kwargs", [{}, SMALL])
def test_gradient_matches_the_book(backend, kwargs):
    ref, net = _pair(**kwargs)
    _scaled_up(ref, net)
    shape, classes = kwargs.get("input_dim", (1, 28, 28)), kwargs.get("output_size", 10)
    x, t = _batch(20, shape, classes)
    expected = ref.gradient(x, t)
    got = net.gradient(x, t)
    for key in expected:
        assert got[key].shape == expected[key].shape and got[key].dtype == np.float64
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, atol=1e-9 * np.abs(expected[key]).max())
    np.testing.assert_allclose(net.predict(x), ref.predict(x), rtol=1e-9, atol=1e-12)


def test_numerical_gradient_agrees(backend):
    np.random.seed(1)
    net = SimpleConvNet(**SMALL)
    for key in net.params:
        net.params[key] += np.random.randn(*net.params[key].shape)  # away from the ReLU kinks' neighbourhood of 0
    x, t = _batch(3, (1, 10, 10), 5, seed=2)
    num, grad = net.numerical_gradient(x, t), net.gradient(x, t)
    for key in num:
        np.testing.assert_allclose(grad[key], num[key], rtol=1e-4, atol=1e-7)


def _run_gradient_check(capsys, monkeypatch, convnet_module):
    monkeypatch.setitem(sys.modules, "simple_convnet", convnet_module)
    np.random.seed(0)
    runpy.run_path(str(BOOK_DIR / "ch07" / "gradient_check.py"), run_name="__main__")
    lines = capsys.readouterr().out.split("\n")
    return {line.split()[0]: float(line.split()[1]) for line in lines if line.strip()}


def test_the_books_gradient_check_script_on_bprop(capsys, monkeypatch):
    """ch07/gradient_check.py, unmodified, with ``simple_convnet`` resolving to bprop.

    Its differences come from the numerical side: with the book's 0.01 weights
    a step of 1e-4 crosses ReLU kinks, which gives W1 and b1 about 1e-6 in the
    book's own run too. bprop's must be the book's there, and no larger
    elsewhere (bprop's exact cross-entropy makes W2..b3 smaller).
    """
    require_book()
    ours = _run_gradient_check(capsys, monkeypatch, sys.modules["bprop.convnet"])
    theirs = _run_gradient_check(capsys, monkeypatch, book().simple_convnet)
    assert sorted(ours) == sorted(theirs) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    for key in ("W1", "b1"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-2)
    for key in ours:
        assert ours[key] <= theirs[key] * 1.01 + 1e-12, (key, ours, theirs)


def test_the_books_convnet_on_bprops_layers_gives_the_books_gradients(backend):
    """ch07/simple_convnet.py, unmodified, with ``common.layers`` resolving to bprop."""
    module = book_convnet_on_bprop()
    np.random.seed(3)
    ours = module.SimpleConvNet()
    np.random.seed(3)
    ref = book().simple_convnet.SimpleConvNet()
    _scaled_up(ref, ours)
    x, t = _batch(30, seed=4)
    expected, got = ref.gradient(x, t), ours.gradient(x, t)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, atol=1e-9 * np.abs(expected[key]).max())


def test_odd_convolution_output_works():
    """A 27 x 27 input gives a 23 x 23 convolution output: the book's net breaks, bprop's pools 11 x 11."""
    np.random.seed(0)
    net = SimpleConvNet(input_dim=(1, 27, 27))
    assert net.params["W2"].shape == (30 * 11 * 11, 100)
    x, t = _batch(4, (1, 27, 27))
    grads = net.gradient(x, t)
    assert {k: v.shape for k, v in grads.items()} == {k: v.shape for k, v in net.params.items()}
    small = SimpleConvNet(input_dim=(1, 9, 9), conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                          hidden_size=4, output_size=3)
    for key in small.params:
        small.params[key] += np.random.randn(*small.params[key].shape)
    x, t = _batch(2, (1, 9, 9), 3, seed=5)
    num, grad = small.numerical_gradient(x, t), small.gradient(x, t)
    for key in num:
        np.testing.assert_allclose(grad[key], num[key], rtol=1e-4, atol=1e-7)


def test_accuracy_counts_the_last_partial_batch():
    np.random.seed(0)
    net = SimpleConvNet(**SMALL)
    x, t = _batch(25, (1, 10, 10), 5)
    y = np.argmax(net.predict(x), axis=1)
    t[:] = np.where(np.arange(25) % 2 == 0, y, (y + 1) % 5)  # 13 of 25 right
    assert net.accuracy(x, t, batch_size=10) == 13 / 25
    assert net.accuracy(x, np.eye(5)[t], batch_size=7) == 13 / 25


def test_float32_network():
    np.random.seed(0)
    net32 = SimpleConvNet(dtype=np.float32, **SMALL)
    np.random.seed(0)
    net64 = SimpleConvNet(**SMALL)
    assert all(v.dtype == np.float32 for v in net32.params.values())
    x, t = _batch(6, (1, 10, 10), 5)
    _scaled_up(net64, net32)
    g32, g64 = net32.gradient(x.astype(np.float32), t), net64.gradient(x, t)
    for key in g64:
        assert g32[key].dtype == np.float32
        np.testing.assert_allclose(g32[key], g64[key], rtol=2e-4, atol=2e-5 * np.abs(g64[key]).max())
    with pytest.raises(TypeError, match="dtype must be a floating type"):
        SimpleConvNet(dtype=np.int32)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="too small for 2 x 2 pooling"):
        SimpleConvNet(input_dim=(1, 5, 5))
    with pytest.raises(ValueError, match="stride >= 1"):
        SimpleConvNet(conv_param={"stride": 0})


def test_params_round_trip_and_the_book_reads_bprops_file(tmp_path):
    np.random.seed(0)
    net = SimpleConvNet(**SMALL)
    net.save_params(tmp_path / "p.pkl")
    np.random.seed(1)
    other = SimpleConvNet(**SMALL)
    other.load_params(tmp_path / "p.pkl")
    for key in net.params:
        np.testing.assert_array_equal(other.params[key], net.params[key])
    assert other.layers["Conv1"].W is other.params["W1"] and other.layers["Affine1"].b is other.params["b2"]
    x, _ = _batch(3, (1, 10, 10))
    np.testing.assert_array_equal(other.predict(x), net.predict(x))
    require_book()
    ref = book().simple_convnet.SimpleConvNet(**SMALL)
    ref.load_params(str(tmp_path / "p.pkl"))  # the book's own loader: pickle.load
    for key in net.params:
        np.testing.assert_array_equal(ref.params[key], net.params[key])


def test_load_params_reads_the_books_trained_weights():
    path = BOOK_DIR / "ch07" / "params.pkl"
    if not path.is_file():
        pytest.skip(f"the book's ch07/params.pkl is not at {path}")
    ref = book().simple_convnet.SimpleConvNet()
    ref.load_params(str(path))
    net = SimpleConvNet()
    net.load_params(path)
    x, _ = _batch(10, seed=7)
    np.testing.assert_allclose(net.predict(x), ref.predict(x), rtol=1e-9, atol=1e-12)
    net32 = SimpleConvNet(dtype=np.float32)
    net32.load_params(path)
    assert net32.params["W1"].dtype == np.float32


def test_load_params_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"W1": Evil()}, f)
    with pytest.raises(bprop._params_io.UnsafeParamsError, match="refusing to load builtins.print"):
        SimpleConvNet(**SMALL).load_params(tmp_path / "evil.pkl")


# --- bprop train --net convnet ------------------------------------------------------

def _train_cli(monkeypatch, tmp_path, capsys, *args):
    import json

    from bprop import cli

    monkeypatch.delenv("BPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # no full MNIST: the embedded set
    assert cli.main(["train", "--net", "convnet", "--json", "--quiet", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_train_convnet_one_epoch(monkeypatch, tmp_path, capsys, dtype):
    out = _train_cli(monkeypatch, tmp_path, capsys, "--epochs", "1", "--dtype", dtype)
    assert out["net"] == "convnet" and out["data"] == "embedded" and out["dtype"] == dtype
    assert out["iters"] == 80 and out["train_size"] == 8000 and out["test_size"] == 2000 and out["lr"] == 0.001
    assert len(out["records"]) == 1 and out["records"][0]["iter"] == 0
    assert out["test_acc"] > 0.85  # 0.9165 for seed 0 in float64 here


def test_train_convnet_rejects_zero_epochs(capsys):
    from bprop import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--net", "convnet", "--epochs", "0"])
    assert exc.value.code == 2
    assert "bprop train: error: --epochs must be a positive integer, got 0" in capsys.readouterr().err


#: ``bprop train --net convnet`` (the book's 20 epochs) on the embedded data, seed 0, float64:
#: the test accuracy on its 2,000 test images (measured on the development machine).
EMBEDDED_TEST_ACC = 0.9820


@pytest.mark.slow
def test_train_convnet_default_run_on_the_embedded_data(monkeypatch, tmp_path, capsys):
    out = _train_cli(monkeypatch, tmp_path, capsys)
    assert out["epochs"] == 20 and out["iters"] == 1600
    # Another BLAS rounds the products differently, which can move a few of 2,000 images.
    assert out["test_acc"] == pytest.approx(EMBEDDED_TEST_ACC, abs=0.003)
