"""The book's chapter-7 network (``ch07/simple_convnet.py``): conv - relu - pool - affine - relu - affine - softmax."""
from collections import OrderedDict

import numpy as np

from . import _params_io
from .conv import Convolution, Pooling
from .gradient import numerical_gradient
from .layers import Affine, Relu, SoftmaxWithLoss
from .network import backward_through

__all__ = ["SimpleConvNet"]

_KEYS = ("W1", "b1", "W2", "b2", "W3", "b3")
_WEIGHTED = (("Conv1", "1"), ("Affine1", "2"), ("Affine2", "3"))


class SimpleConvNet:
    """Convolution - ReLU - 2x2 max pooling - Affine - ReLU - Affine - SoftmaxWithLoss.

    Parameters
    ----------
    input_dim : tuple of 3 ints
        (C, H, W) of one input image.
    conv_param : dict
        ``filter_num``, ``filter_size``, ``pad``, ``stride`` of the convolution
        (default 30 filters of 5 x 5, no padding, stride 1, as in the book).
    hidden_size, output_size : int
    weight_init_std : float
        Standard deviation of the Gaussian initial weights.
    dtype : numpy dtype
        dtype of the parameters: float64 (the book's) or float32. Feed inputs
        of the same dtype; a float32 network given float64 inputs computes in
        float64, as NumPy's promotion does.

    Attributes
    ----------
    params : dict
        ``W1, b1, W2, b2, W3, b3``, drawn with ``np.random.randn`` in the book's
        order, so a seeded run gives the book's initial weights.
    layers : OrderedDict
        ``Conv1, Relu1, Pool1, Affine1, Relu2, Affine2``; they hold the
        ``params`` arrays by reference.
    last_layer : SoftmaxWithLoss

    Notes
    -----
    Unlike the book, the pooled size is computed with floor division, so an
    odd convolution output (a 27 x 27 input) works, and the first layer's
    unused input gradient is not computed.
    """

    def __init__(self, input_dim=(1, 28, 28), conv_param=None, hidden_size=100, output_size=10,
                 weight_init_std=0.01, dtype=np.float64):
        param = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
        param.update(conv_param or {})
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"SimpleConvNet: dtype must be a floating type, got {dtype}")
        if len(input_dim) != 3:
            raise ValueError(f"SimpleConvNet: input_dim must be (C, H, W), got {input_dim!r}")
        filter_num, size = int(param["filter_num"]), int(param["filter_size"])
        pad, stride = int(param["pad"]), int(param["stride"])
        channels, height, width = (int(d) for d in input_dim)
        if stride < 1 or pad < 0 or size < 1:
            raise ValueError(f"SimpleConvNet: conv_param needs stride >= 1, pad >= 0, filter_size >= 1; got {param}")
        conv_h = (height + 2 * pad - size) // stride + 1
        conv_w = (width + 2 * pad - size) // stride + 1
        if conv_h < 2 or conv_w < 2:
            raise ValueError(
                f"SimpleConvNet: the convolution output ({conv_h} x {conv_w}) of a {height} x {width} input "
                f"is too small for 2 x 2 pooling (conv_param={param})"
            )
        pool_output_size = filter_num * (conv_h // 2) * (conv_w // 2)
        self.dtype = dtype

        self.params = {}
        self.params["W1"] = (weight_init_std * np.random.randn(filter_num, channels, size, size)).astype(dtype)
        self.params["b1"] = np.zeros(filter_num, dtype)
        self.params["W2"] = (weight_init_std * np.random.randn(pool_output_size, hidden_size)).astype(dtype)
        self.params["b2"] = np.zeros(hidden_size, dtype)
        self.params["W3"] = (weight_init_std * np.random.randn(hidden_size, output_size)).astype(dtype)
        self.params["b3"] = np.zeros(output_size, dtype)

        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(self.params["W1"], self.params["b1"], stride, pad)
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        """Scores (before softmax) for a batch ``x`` of shape (N, C, H, W)."""
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean cross-entropy loss for images ``x`` and labels or one-hot ``t``."""
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` whose highest score is the label ``t``, in batches of ``batch_size``.

        Every sample counts, the last partial batch too (the book's loop drops it
        but still divides by ``x.shape[0]``).
        """
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        hits = 0
        for start in range(0, x.shape[0], batch_size):
            y = self.predict(x[start:start + batch_size])
            hits += int(np.sum(np.argmax(y, axis=1) == t[start:start + batch_size]))
        return hits / x.shape[0]

    def numerical_gradient(self, x, t):
        """Gradients of the loss by central differences; dict keyed W1, b1, ..., b3."""
        loss_w = lambda w: self.loss(x, t)  # noqa: E731 - the book's form; w is read through self.params
        return {key: numerical_gradient(loss_w, self.params[key]) for key in _KEYS}

    def gradient(self, x, t):
        """Gradients of the loss by backpropagation; dict keyed W1, b1, ..., b3.

        The first layer's gradient with respect to ``x`` is not computed (the
        book computes it and throws it away).
        """
        self.loss(x, t)
        backward_through(list(self.layers.values()), self.last_layer.backward(1))
        grads = {}
        for name, i in _WEIGHTED:
            grads["W" + i], grads["b" + i] = self.layers[name].dW, self.layers[name].db
        return grads

    def save_params(self, file_name="params.pkl"):
        """Write ``params`` as the book does: a pickled dict, which the book's ``load_params`` reads."""
        _params_io.save(self.params, file_name)

    def load_params(self, file_name="params.pkl"):
        """Read parameters saved by the book's ``save_params`` (e.g. its ``ch07/params.pkl``) or by bprop.

        The file is read without running any code it may contain: only a dict
        of names to numeric NumPy arrays is accepted (see
        :class:`bprop._params_io.UnsafeParamsError`). Arrays are converted to
        the network's dtype; the layers then hold the new arrays.
        """
        loaded = _params_io.load(file_name)
        missing = [k for k in _KEYS if k not in loaded]
        if missing:
            raise ValueError(f"SimpleConvNet.load_params: {file_name} has no {', '.join(missing)}")
        for key, val in loaded.items():
            self.params[key] = np.ascontiguousarray(val, dtype=self.dtype) if key in _KEYS else val
        for name, i in _WEIGHTED:
            self.layers[name].W = self.params["W" + i]
            self.layers[name].b = self.params["b" + i]
