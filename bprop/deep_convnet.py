"""The book's chapter-8 network (``ch08/deep_convnet.py``): six 3x3 convolutions, three poolings, two Affine layers."""
import numpy as np

from . import _params_io
from .conv import Convolution, Pooling
from .dropout import Dropout
from .layers import Affine, Relu, SoftmaxWithLoss
from .network import backward_through

__all__ = ["DeepConvNet"]

_CONV_DEFAULTS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)
#: Indices in ``layers`` of the layers holding W1..W8, as in the book.
_WEIGHTED = (0, 2, 5, 7, 10, 12, 15, 18)


class DeepConvNet:
    """conv-relu-conv-relu-pool, three times, then affine-relu-dropout-affine-dropout-softmax.

    Parameters
    ----------
    input_dim : tuple of 3 ints
        (C, H, W) of one image; the book's defaults need 28 x 28.
    conv_param_1 ... conv_param_6 : dict
        ``filter_num``, ``filter_size``, ``pad``, ``stride`` of each convolution.
    hidden_size, output_size : int
    dtype : numpy dtype
        float64 (the book's) or float32.

    Attributes
    ----------
    params : dict
        ``W1, b1, ..., W8, b8``, He-initialised with ``np.random.randn`` in the
        book's order (a seeded run gives the book's weights).
    layers : list
        The book's 21 layers, holding the ``params`` arrays by reference.
    last_layer : SoftmaxWithLoss

    Notes
    -----
    As in the book, ``loss`` runs Dropout in training mode; ``accuracy``
    counts every sample (the book drops the last partial batch but divides
    by all); ``gradient`` skips the first convolution's unused input
    gradient; ``load_params`` runs no code from the file.
    """

    def __init__(self, input_dim=(1, 28, 28), conv_param_1=None, conv_param_2=None, conv_param_3=None,
                 conv_param_4=None, conv_param_5=None, conv_param_6=None, hidden_size=50, output_size=10,
                 dtype=np.float64):
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        conv = [dict(default, **(p or {})) for default, p in zip(_CONV_DEFAULTS, given)]
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"DeepConvNet: dtype must be a floating type, got {self.dtype}")
        # The book's fan-ins, 64*4*4 included (its default geometry).
        fan_in = np.array([1 * 3 * 3, 16 * 3 * 3, 16 * 3 * 3, 32 * 3 * 3, 32 * 3 * 3, 64 * 3 * 3, 64 * 4 * 4,
                           hidden_size])
        scales = np.sqrt(2.0 / fan_in)
        self.params = {}
        channels = input_dim[0]
        for idx, p in enumerate(conv):
            w = scales[idx] * np.random.randn(p["filter_num"], channels, p["filter_size"], p["filter_size"])
            self.params[f"W{idx + 1}"] = w.astype(self.dtype)
            self.params[f"b{idx + 1}"] = np.zeros(p["filter_num"], self.dtype)
            channels = p["filter_num"]
        self.params["W7"] = (scales[6] * np.random.randn(64 * 4 * 4, hidden_size)).astype(self.dtype)
        self.params["b7"] = np.zeros(hidden_size, self.dtype)
        self.params["W8"] = (scales[7] * np.random.randn(hidden_size, output_size)).astype(self.dtype)
        self.params["b8"] = np.zeros(output_size, self.dtype)

        def conv_layer(i):
            return Convolution(self.params[f"W{i}"], self.params[f"b{i}"], conv[i - 1]["stride"], conv[i - 1]["pad"])

        self.layers = []
        for block in range(3):
            first = 2 * block + 1
            self.layers += [conv_layer(first), Relu(), conv_layer(first + 1), Relu(),
                            Pooling(pool_h=2, pool_w=2, stride=2)]
        self.layers += [Affine(self.params["W7"], self.params["b7"]), Relu(), Dropout(0.5),
                        Affine(self.params["W8"], self.params["b8"]), Dropout(0.5)]
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        """Scores (before softmax); ``train_flg`` puts the Dropout layers in training mode."""
        for layer in self.layers:
            x = layer.forward(x, train_flg) if isinstance(layer, Dropout) else layer.forward(x)
        return x

    def loss(self, x, t):
        """Mean cross-entropy with Dropout in training mode, as the book's."""
        return self.last_layer.forward(self.predict(x, train_flg=True), t)

    def accuracy(self, x, t, batch_size=100):
        """Fraction of ``x`` whose highest score is the label ``t``, in batches; every sample counts."""
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        hits = 0
        for start in range(0, x.shape[0], batch_size):
            y = self.predict(x[start:start + batch_size], train_flg=False)
            hits += int(np.sum(np.argmax(y, axis=1) == t[start:start + batch_size]))
        return hits / x.shape[0]

    def gradient(self, x, t):
        """Gradients by backpropagation; dict keyed W1, b1, ..., W8, b8."""
        self.loss(x, t)
        backward_through(self.layers, self.last_layer.backward(1))
        grads = {}
        for i, idx in enumerate(_WEIGHTED, start=1):
            grads[f"W{i}"], grads[f"b{i}"] = self.layers[idx].dW, self.layers[idx].db
        return grads

    def save_params(self, file_name="params.pkl"):
        """Write ``params`` as a pickled dict, which the book's ``load_params`` reads."""
        _params_io.save(self.params, file_name)

    def load_params(self, file_name="params.pkl"):
        """Read the book's ``ch08/deep_convnet_params.pkl`` (or bprop's own), running no code from it."""
        loaded = _params_io.load(file_name)
        keys = [f"{k}{i}" for i in range(1, 9) for k in "Wb"]
        missing = [k for k in keys if k not in loaded]
        if missing:
            raise ValueError(f"DeepConvNet.load_params: {file_name} has no {', '.join(missing)}")
        for key in keys:
            self.params[key] = np.ascontiguousarray(loaded[key], dtype=self.dtype)
        for i, idx in enumerate(_WEIGHTED, start=1):
            self.layers[idx].W = self.params[f"W{i}"]
            self.layers[idx].b = self.params[f"b{i}"]
