"""The book's fully connected networks: ``MultiLayerNet`` and ``MultiLayerNetExtend`` (chapter 6)."""
from collections import OrderedDict

import numpy as np

from .batchnorm import BatchNormalization
from .dropout import Dropout
from .gradient import numerical_gradient
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from .network import backward_through

__all__ = ["MultiLayerNet", "MultiLayerNetExtend"]

_ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid}


def _init_scale(weight_init_std, fan_in):
    """The book's initial weight scale: He for 'relu'/'he', Xavier for 'sigmoid'/'xavier', else the number."""
    name = str(weight_init_std).lower()
    if name in ("relu", "he"):
        return np.sqrt(2.0 / fan_in)
    if name in ("sigmoid", "xavier"):
        return np.sqrt(1.0 / fan_in)
    if isinstance(weight_init_std, str):
        raise ValueError(f"weight_init_std must be a number or one of 'relu', 'he', 'sigmoid', 'xavier'; "
                         f"got {weight_init_std!r}")
    return weight_init_std


class MultiLayerNetExtend:
    """Affine - [BatchNorm] - activation - [Dropout], repeated, then Affine and SoftmaxWithLoss.

    The book's ``common/multi_layer_net_extend.py``: weight decay, Dropout and
    Batch Normalization. Weights are drawn with ``np.random.randn`` layer by
    layer, as in the book, so a seeded run has the book's initial weights.

    Parameters
    ----------
    input_size, output_size : int
    hidden_size_list : list of int
    activation : {'relu', 'sigmoid'}
    weight_init_std : float or {'relu', 'he', 'sigmoid', 'xavier'}
    weight_decay_lambda : float
        Strength of the L2 penalty ``0.5 * lambda * sum(W**2)`` per weight.
    use_dropout : bool
    dropout_ration : float
        The book's spelling of the dropout ratio.
    use_batchnorm : bool

    Attributes
    ----------
    params : dict
        ``W1, b1, ...`` (and ``gamma1, beta1, ...`` with batch norm), held
        by reference by the layers.
    layers : OrderedDict
    last_layer : SoftmaxWithLoss
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu", weight_init_std="relu",
                 weight_decay_lambda=0, use_dropout=False, dropout_ration=0.5, use_batchnorm=False):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be 'relu' or 'sigmoid'; got {activation!r}")
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = hidden_size_list
        self.hidden_layer_num = len(hidden_size_list)
        self.use_dropout = use_dropout
        self.weight_decay_lambda = weight_decay_lambda
        self.use_batchnorm = use_batchnorm
        self.params = {}
        sizes = [input_size] + list(hidden_size_list) + [output_size]
        for idx in range(1, len(sizes)):
            scale = _init_scale(weight_init_std, sizes[idx - 1])
            self.params[f"W{idx}"] = scale * np.random.randn(sizes[idx - 1], sizes[idx])
            self.params[f"b{idx}"] = np.zeros(sizes[idx])

        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
            if use_batchnorm:
                self.params[f"gamma{idx}"] = np.ones(hidden_size_list[idx - 1])
                self.params[f"beta{idx}"] = np.zeros(hidden_size_list[idx - 1])
                self.layers[f"BatchNorm{idx}"] = BatchNormalization(self.params[f"gamma{idx}"],
                                                                    self.params[f"beta{idx}"])
            self.layers[f"Activation_function{idx}"] = _ACTIVATIONS[activation]()
            if use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(dropout_ration)
        idx = self.hidden_layer_num + 1
        self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        """Scores (before softmax); ``train_flg`` switches Dropout and BatchNorm to training."""
        return self._predict(x, train_flg)

    def _predict(self, x, train_flg):
        for layer in self.layers.values():
            if isinstance(layer, (Dropout, BatchNormalization)):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def _weight_decay(self):
        # With lambda 0 the book adds 0.5 * 0 * sum(W**2) = 0 to the loss: skipped,
        # which changes no finite loss and saves a pass over every weight.
        if not self.weight_decay_lambda:
            return 0
        return sum(0.5 * self.weight_decay_lambda * np.sum(self.params[f"W{idx}"] ** 2)
                   for idx in range(1, self.hidden_layer_num + 2))

    def loss(self, x, t, train_flg=False):
        """Mean cross-entropy plus the weight-decay penalty."""
        return self._loss(x, t, train_flg)

    def _loss(self, x, t, train_flg):
        y = self._predict(x, train_flg)
        return self.last_layer.forward(y, t) + self._weight_decay()

    def accuracy(self, x, t):
        """Fraction of ``x`` whose highest score is the label ``t`` (labels or one-hot)."""
        y = np.argmax(self._predict(x, False), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def _keys(self):
        for idx in range(1, self.hidden_layer_num + 2):
            yield f"W{idx}", f"b{idx}"
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                yield f"gamma{idx}", f"beta{idx}"

    def numerical_gradient(self, x, t):
        """Gradients of the (training-mode) loss by central differences, keyed as ``params``."""
        loss_W = lambda W: self._loss(x, t, True)  # noqa: E731 - W is read through self.params
        return {key: numerical_gradient(loss_W, self.params[key]) for pair in self._keys() for key in pair}

    def gradient(self, x, t):
        """Gradients by backpropagation, keyed as ``params``.

        The first Affine is asked for ``dW`` and ``db`` only: the input
        batch's gradient, which the book computes and discards, is skipped.
        """
        self._loss(x, t, True)
        backward_through(list(self.layers.values()), self.last_layer.backward(1))
        grads = {}
        lam = self.weight_decay_lambda
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers[f"Affine{idx}"]
            grads[f"W{idx}"] = affine.dW + lam * self.params[f"W{idx}"] if lam else affine.dW
            grads[f"b{idx}"] = affine.db
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                grads[f"gamma{idx}"] = self.layers[f"BatchNorm{idx}"].dgamma
                grads[f"beta{idx}"] = self.layers[f"BatchNorm{idx}"].dbeta
        return grads


class MultiLayerNet(MultiLayerNetExtend):
    """The book's ``common/multi_layer_net.py``: ``MultiLayerNetExtend`` without Dropout or BatchNorm.

    Parameters
    ----------
    input_size, output_size : int
    hidden_size_list : list of int
    activation : {'relu', 'sigmoid'}
    weight_init_std : float or {'relu', 'he', 'sigmoid', 'xavier'}
    weight_decay_lambda : float
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu", weight_init_std="relu",
                 weight_decay_lambda=0):
        super().__init__(input_size, hidden_size_list, output_size, activation, weight_init_std,
                         weight_decay_lambda)

    def predict(self, x):
        """Scores (before softmax)."""
        return self._predict(x, False)

    def loss(self, x, t):
        """Mean cross-entropy plus the weight-decay penalty."""
        return self._loss(x, t, False)
