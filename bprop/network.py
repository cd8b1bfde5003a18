"""The book's two-layer network (ch05 ``two_layer_net.py``) and its SGD loop (``train_neuralnet.py``)."""
import time
from collections import OrderedDict

import numpy as np

from .gradient import numerical_gradient
from .layers import Affine, Relu, SoftmaxWithLoss

__all__ = ["TwoLayerNet", "train"]

_KEYS = ("W1", "b1", "W2", "b2")


def backward_through(layers, dout):
    """Run ``backward`` from the last layer to the first, without the input batch's gradient.

    A bprop ``Affine`` as the first layer is asked for ``dW`` and ``db`` only:
    the book computes ``dx`` there and throws it away.
    """
    for layer in reversed(layers[1:]):
        dout = layer.backward(dout)
    if isinstance(layers[0], Affine):
        layers[0].backward(dout, input_grad=False)
    else:  # e.g. the book's Affine, swapped in by a user
        layers[0].backward(dout)


class TwoLayerNet:
    """Affine - ReLU - Affine - SoftmaxWithLoss, with the book's attributes.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        Layer widths, e.g. 784, 50, 10 for MNIST.
    weight_init_std : float
        Standard deviation of the Gaussian initial weights.
    dtype : numpy dtype
        dtype of the parameters (float64, as in the book, or float32).

    Attributes
    ----------
    params : dict
        ``W1, b1, W2, b2``. ``W1`` is drawn from ``np.random.randn`` before
        ``W2``, as in the book, so a seeded run reproduces the book's weights.
    layers : OrderedDict
        ``Affine1, Relu1, Affine2``; the Affine layers hold the ``params``
        arrays by reference, so updating ``params`` in place updates them.
    lastLayer : SoftmaxWithLoss

    Examples
    --------
    >>> import numpy as np
    >>> np.random.seed(0)
    >>> net = TwoLayerNet(input_size=4, hidden_size=3, output_size=2)
    >>> sorted(net.params), list(net.layers)
    (['W1', 'W2', 'b1', 'b2'], ['Affine1', 'Relu1', 'Affine2'])
    """

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, dtype=np.float64):
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"TwoLayerNet: dtype must be a floating type, got {dtype}")
        self.params = {}
        self.params["W1"] = (weight_init_std * np.random.randn(input_size, hidden_size)).astype(dtype)
        self.params["b1"] = np.zeros(hidden_size, dtype=dtype)
        self.params["W2"] = (weight_init_std * np.random.randn(hidden_size, output_size)).astype(dtype)
        self.params["b2"] = np.zeros(output_size, dtype=dtype)

        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        """Scores (before softmax) for a batch ``x`` of shape (N, input_size)."""
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean cross-entropy loss for inputs ``x`` and labels or one-hot ``t``."""
        y = self.predict(x)
        return self.lastLayer.forward(y, t)

    def accuracy(self, x, t):
        """Fraction of ``x`` whose highest score is the label ``t`` (labels or one-hot)."""
        y = self.predict(x)
        y = np.argmax(y, axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        """Gradients of the loss by central differences; dict keyed W1, b1, W2, b2."""
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 - the book's form; W is read through self.params
        return {key: numerical_gradient(loss_W, self.params[key]) for key in _KEYS}

    def gradient(self, x, t):
        """Gradients of the loss by backpropagation; dict keyed W1, b1, W2, b2.

        Unlike the book, the gradient with respect to ``x`` is not computed
        (the book computes it and throws it away): a bprop ``Affine`` as the
        first layer is asked for ``dW`` and ``db`` only.
        """
        self.loss(x, t)
        backward_through(list(self.layers.values()), self.lastLayer.backward(1))
        grads = {}
        grads["W1"], grads["b1"] = self.layers["Affine1"].dW, self.layers["Affine1"].db
        grads["W2"], grads["b2"] = self.layers["Affine2"].dW, self.layers["Affine2"].db
        return grads


def train(network, x_train, t_train, x_test, t_test, iters=10000, batch_size=100, learning_rate=0.1,
          on_epoch=None, on_iter=None):
    """The book's ``train_neuralnet.py`` loop: SGD on minibatches drawn with replacement.

    Batches come from ``np.random.choice(train_size, batch_size)``, so seed
    NumPy's global generator (before building the network, as the book's
    random weights do) for a reproducible run.

    Parameters
    ----------
    network : TwoLayerNet
        Updated in place.
    x_train, t_train, x_test, t_test : numpy.ndarray
        Inputs and labels (class indices or one-hot).
    iters, batch_size : int
    learning_rate : float
    on_epoch : callable, optional
        ``on_epoch(record)`` after each accuracy evaluation; ``record`` is a
        dict with ``epoch, iter, train_acc, test_acc, loss``.
    on_iter : callable, optional
        ``on_iter(i)`` after each SGD step (for progress display).

    Returns
    -------
    dict
        ``loss`` (per iteration), ``epochs`` (records as above, one per
        ``max(train_size / batch_size, 1)`` iterations starting at 0),
        ``train_acc`` and ``test_acc`` after the last step, and ``step_time``:
        seconds spent in SGD steps (accuracy evaluation excluded).
    """
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size / batch_size, 1)
    losses, epochs, step_time = [], [], 0.0
    for i in range(iters):
        start = time.perf_counter()
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch = x_train[batch_mask]
        t_batch = t_train[batch_mask]
        grad = network.gradient(x_batch, t_batch)
        for key in _KEYS:
            network.params[key] -= learning_rate * grad[key]
        loss = network.loss(x_batch, t_batch)
        step_time += time.perf_counter() - start
        losses.append(float(loss))
        if i % iter_per_epoch == 0:
            record = {
                "epoch": len(epochs), "iter": i, "loss": float(loss),
                "train_acc": float(network.accuracy(x_train, t_train)),
                "test_acc": float(network.accuracy(x_test, t_test)),
            }
            epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
        if on_iter is not None:
            on_iter(i)
    return {
        "loss": losses,
        "epochs": epochs,
        "train_acc": float(network.accuracy(x_train, t_train)),
        "test_acc": float(network.accuracy(x_test, t_test)),
        "step_time": step_time,
    }
