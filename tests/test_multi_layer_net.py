"""MultiLayerNet, MultiLayerNetExtend and Trainer against the book's own classes."""
import contextlib
import io

import numpy as np
import pytest

import bprop
from bprop.multi_layer_net import MultiLayerNet, MultiLayerNetExtend
from bprop.trainer import Trainer
from conftest import book_module


def book_common(name):
    """The book's own common/<name>.py, or skip."""
    return book_module(f"common/{name}.py")


def data(n=40, d=20, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, c, n)


CONFIGS = [
    dict(activation="relu", weight_init_std="relu"),
    dict(activation="sigmoid", weight_init_std="xavier", weight_decay_lambda=0.1),
    dict(activation="relu", weight_init_std=0.05, use_batchnorm=True),
    dict(activation="relu", weight_init_std="he", use_dropout=True, dropout_ration=0.3, use_batchnorm=True,
         weight_decay_lambda=0.01),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_extend_matches_the_book(backend, config):
    book = book_common("multi_layer_net_extend")
    x, t = data()
    np.random.seed(1)
    ours = MultiLayerNetExtend(20, [16, 12], 5, **config)
    np.random.seed(1)
    theirs = book.MultiLayerNetExtend(20, [16, 12], 5, **config)
    assert list(ours.params) == list(theirs.params) and list(ours.layers) == list(theirs.layers)
    for key in ours.params:  # the same np.random.randn calls in the same order
        np.testing.assert_array_equal(ours.params[key], theirs.params[key])
    np.random.seed(2)  # the same Dropout masks
    g_ours = ours.gradient(x, t)
    np.random.seed(2)
    g_theirs = theirs.gradient(x, t)
    assert list(g_ours) == list(g_theirs)
    for key in g_ours:
        np.testing.assert_allclose(g_ours[key], g_theirs[key], rtol=1e-7, atol=1e-12, err_msg=key)
    # The book adds 1e-7 inside the log, which lowers each sample's loss by
    # log(1 + 1e-7 / y[t]); bprop's loss is exact.
    book_loss = theirs.loss(x, t)
    offset = np.mean(np.log1p(1e-7 / theirs.last_layer.y[np.arange(len(t)), t]))
    np.testing.assert_allclose(ours.loss(x, t) - offset, book_loss, rtol=1e-9, atol=1e-12)
    assert ours.accuracy(x, t) == theirs.accuracy(x, t)


def test_plain_net_matches_the_book_and_its_numerical_gradient(backend):
    book = book_common("multi_layer_net")
    x, t = data(n=6, d=8, c=3)
    np.random.seed(4)
    ours = MultiLayerNet(8, [6, 5], 3, activation="sigmoid", weight_init_std=0.5, weight_decay_lambda=0.05)
    np.random.seed(4)
    theirs = book.MultiLayerNet(8, [6, 5], 3, activation="sigmoid", weight_init_std=0.5, weight_decay_lambda=0.05)
    grads, numerical = ours.gradient(x, t), ours.numerical_gradient(x, t)
    book_grads = theirs.gradient(x, t)
    for key in grads:
        np.testing.assert_allclose(grads[key], book_grads[key], rtol=1e-7, atol=1e-12)
        # Exact loss: central differences agree to about h**2 (1e-8), far below the book's 1e-7 offset.
        np.testing.assert_allclose(numerical[key], grads[key], rtol=0, atol=1e-8)


def test_the_input_batch_gradient_is_not_computed(backend):
    net = MultiLayerNetExtend(6, [4], 3, use_batchnorm=True)
    calls = []
    first = net.layers["Affine1"]
    original = first.backward
    first.backward = lambda dout, **kw: calls.append(kw) or original(dout, **kw)
    net.gradient(*data(n=5, d=6, c=3))
    assert calls == [{"input_grad": False}]


@pytest.mark.parametrize("kwargs, message", [
    (dict(activation="tanh"), "activation must be 'relu' or 'sigmoid'; got 'tanh'"),
    (dict(weight_init_std="gauss"), "weight_init_std must be a number or one of"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiLayerNetExtend(4, [3], 2, **kwargs)


def _train(trainer_class, net_class, x, t, **kw):
    np.random.seed(5)
    net = net_class(20, [10], 5)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trainer = trainer_class(net, x, t, x[:10], t[:10], **kw)
        trainer.train()
    return trainer, out.getvalue().splitlines()


def test_trainer_prints_and_trains_as_the_book(backend):
    book_trainer = book_common("trainer")
    book_net = book_common("multi_layer_net")
    x, t = data(n=200, d=20, c=5)
    ours, lines = _train(Trainer, MultiLayerNet, x, t, epochs=2, mini_batch_size=50, optimizer="Adam",
                         optimizer_param={"lr": 0.01})
    theirs, book_lines = _train(book_trainer.Trainer, book_net.MultiLayerNet, x, t, epochs=2, mini_batch_size=50,
                                optimizer="Adam", optimizer_param={"lr": 0.01})
    assert len(lines) == len(book_lines)
    for a, b in zip(lines, book_lines):
        assert a.split(":")[0] == b.split(":")[0]  # the same kind of line in the same place
    # Losses differ by the book's 1e-7 inside the log (about 1e-7 / y[t] a sample).
    np.testing.assert_allclose(ours.train_loss_list, theirs.train_loss_list, rtol=1e-4)
    assert ours.train_acc_list == theirs.train_acc_list and ours.test_acc_list == theirs.test_acc_list
    assert lines[-2:] == ["=============== Final Test Accuracy ===============", f"test acc:{ours.network.accuracy(x[:10], t[:10])}"]


def test_trainer_counts_fractional_epochs(backend):
    # 200 samples in batches of 64: 3.125 iterations an epoch. The book's
    # current_iter % 3.125 == 0 holds at iteration 0 only (one epoch line for
    # three epochs); bprop evaluates at iterations 0, 4 and 7.
    x, t = data(n=200, d=20, c=5)
    trainer, lines = _train(Trainer, MultiLayerNet, x, t, epochs=3, mini_batch_size=64)
    assert trainer.max_iter == 9
    assert [l.split(",")[0] for l in lines if l.startswith("===")][:3] == ["=== epoch:1", "=== epoch:2", "=== epoch:3"]
    assert len(trainer.train_acc_list) == 3


def test_trainer_bad_settings():
    x, t = data()
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        Trainer(MultiLayerNet(20, [4], 5), x, t, x, t, optimizer="adamw")
    with pytest.raises(ValueError, match="mini_batch_size must be a positive integer"):
        Trainer(MultiLayerNet(20, [4], 5), x, t, x, t, mini_batch_size=0)


def test_exports():
    assert bprop.MultiLayerNet is MultiLayerNet and bprop.Trainer is Trainer
