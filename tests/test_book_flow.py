"""The book's own chapter-5 scripts, unchanged, with ``common.layers`` resolving to bprop.

``tests/book/`` holds the book's ``two_layer_net.py`` and ``gradient_check.py``
as the book writes them (``from common.layers import *``,
``from dataset.mnist import load_mnist``). Here ``common.layers``,
``common.gradient`` and ``dataset.mnist`` are bprop's modules.
"""
import runpy
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import bprop.datasets
import bprop.gradient
import bprop.layers
from bprop.datasets import EmbeddedDataWarning
from bprop.network import TwoLayerNet

BOOK = Path(__file__).resolve().parent / "book"
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _package(name, **children):
    pkg = types.ModuleType(name)
    pkg.__path__ = []
    for attr, module in children.items():
        setattr(pkg, attr, module)
    return pkg


@pytest.fixture
def book(monkeypatch, tmp_path):
    """Make the book's imports resolve to bprop; yields the book's TwoLayerNet class."""
    aliases = {
        "common": _package("common", layers=bprop.layers, gradient=bprop.gradient),
        "common.layers": bprop.layers,
        "common.gradient": bprop.gradient,
        "dataset": _package("dataset", mnist=bprop.datasets),
        "dataset.mnist": bprop.datasets,
    }
    for name, module in aliases.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "two_layer_net", raising=False)
    monkeypatch.syspath_prepend(str(BOOK))  # also undoes the scripts' sys.path.append(os.pardir)
    monkeypatch.delenv("BPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    import two_layer_net

    yield two_layer_net.TwoLayerNet
    sys.modules.pop("two_layer_net", None)


def run_gradient_check(capsys):
    np.random.seed(0)
    runpy.run_path(str(BOOK / "gradient_check.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["W1", "b1", "W2", "b2"]
    return {key: float(value) for key, value in (line.split(":") for line in lines)}


def test_book_gradient_check_embedded(book, backend, capsys):
    with pytest.warns(EmbeddedDataWarning):
        diffs = run_gradient_check(capsys)
    for key, diff in diffs.items():
        assert diff < 1e-8, (key, diff)


def test_book_gradient_check_full_set(book, monkeypatch, capsys):
    if not MNIST_DIR.is_dir():
        pytest.skip(f"full MNIST not found at {MNIST_DIR} (the project's shared data folder)")
    monkeypatch.setenv("BPROP_DATA", str(MNIST_DIR))
    for key, diff in run_gradient_check(capsys).items():
        assert diff < 1e-8, (key, diff)


def test_book_net_is_bprop_net(book, backend):
    """The book's class on bprop's layers and bprop.TwoLayerNet train identically."""
    BookNet = book
    rng = np.random.default_rng(0)
    x = rng.random((200, 784)).astype(np.float32)  # float32 inputs, float64 weights, as in the book
    t = np.eye(10)[rng.integers(0, 10, 200)]
    nets = []
    for cls in (BookNet, TwoLayerNet):
        np.random.seed(7)
        net = cls(input_size=784, hidden_size=50, output_size=10)
        # train_neuralnet.py's update, a few steps
        for _ in range(20):
            batch_mask = np.random.choice(200, 50)
            grad = net.gradient(x[batch_mask], t[batch_mask])
            for key in ("W1", "b1", "W2", "b2"):
                net.params[key] -= 0.1 * grad[key]
        nets.append(net)
    book_net, ours = nets
    assert book_net.layers["Affine1"].W is book_net.params["W1"]
    for key in ours.params:
        np.testing.assert_array_equal(book_net.params[key], ours.params[key])
    assert np.abs(ours.params["b2"]).max() > 0  # the updates did reach the parameters
    assert book_net.loss(x, t) == ours.loss(x, t)
    assert book_net.accuracy(x, t) == ours.accuracy(x, t)
