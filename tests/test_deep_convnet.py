"""DeepConvNet (chapter 8) against the book's own class and its trained weights."""
import pickle

import numpy as np
import pytest

from bprop.deep_convnet import DeepConvNet
from conftest import BOOK_DIR as BOOK, book_module


def book_deep_convnet():
    return book_module("ch08/deep_convnet.py")


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)), rng.integers(0, 10, n)


def test_same_weights_predictions_and_gradients_as_the_book(backend):
    book = book_deep_convnet()
    np.random.seed(3)
    ours = DeepConvNet()
    np.random.seed(3)
    theirs = book.DeepConvNet()
    assert list(ours.params) == list(theirs.params)
    for key in ours.params:
        np.testing.assert_array_equal(ours.params[key], theirs.params[key])
    assert [type(l).__name__ for l in ours.layers] == [type(l).__name__ for l in theirs.layers]
    x, t = images(6)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-9, atol=1e-12)
    np.random.seed(4)  # the same Dropout masks
    g_ours = ours.gradient(x, t)
    np.random.seed(4)
    g_theirs = theirs.gradient(x, t)
    for key in g_theirs:
        np.testing.assert_allclose(g_ours[key], g_theirs[key], rtol=1e-7, atol=1e-12, err_msg=key)


def test_the_books_trained_weights(tmp_path):
    weights = BOOK / "ch08" / "deep_convnet_params.pkl"
    if not weights.is_file():
        pytest.skip(f"the book's weights are not beside the project (looked for {weights})")
    book = book_deep_convnet()
    ours, theirs = DeepConvNet(), book.DeepConvNet()
    ours.load_params(weights)
    theirs.load_params(str(weights))
    x, t = images(7, seed=1)
    np.testing.assert_allclose(ours.predict(x), theirs.predict(x), rtol=1e-9, atol=1e-12)
    # A partial last batch counts (the book's loop drops it but divides by all seven).
    labels = np.argmax(theirs.predict(x), axis=1)
    assert ours.accuracy(x, labels, batch_size=5) == 1.0
    assert theirs.accuracy(x, labels, batch_size=5) == 5 / 7
    # save_params writes what the book's load_params reads.
    ours.save_params(tmp_path / "p.pkl")
    with open(tmp_path / "p.pkl", "rb") as f:
        saved = pickle.load(f)
    assert set(saved) == set(ours.params)


def test_float32_network_stays_float32(backend):
    net = DeepConvNet(dtype=np.float32)
    x, t = images(2)
    assert net.predict(x.astype(np.float32)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in net.gradient(x.astype(np.float32), t).values())
