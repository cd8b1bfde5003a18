"""bprop: the backpropagation layers of "Deep Learning from Scratch" (chapter 5)
on typed Cython kernels, with a NumPy twin that computes the same thing.

Drop-in for the book's ``common.layers``::

    from bprop import MulLayer, AddLayer, Relu, Sigmoid, Affine, SoftmaxWithLoss
"""
from ._backend import BackendWarning, backend, set_backend, use_backend
from ._info import info, get_num_threads, set_num_threads
from ._threads import ThreadCountWarning, threads
from ._validate import StateError
from .batchnorm import BatchNormalization
from .dropout import Dropout
from .layers import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from .conv import Convolution, Pooling
from .convnet import SimpleConvNet

__version__ = "0.1.0"

__all__ = [
    "MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "BatchNormalization", "Dropout",
    "Convolution", "Pooling", "SimpleConvNet",
    "backend", "set_backend", "use_backend", "info", "get_num_threads", "set_num_threads", "threads",
    "BackendWarning", "StateError", "ThreadCountWarning", "__version__",
]


def __getattr__(name):
    # The network and data modules pull in more than the layers need; load
    # them on first use so ``import bprop`` stays cheap.
    if name == "TwoLayerNet":
        from .network import TwoLayerNet
        return TwoLayerNet
    if name in ("MultiLayerNet", "MultiLayerNetExtend"):
        from . import multi_layer_net
        return getattr(multi_layer_net, name)
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    if name in ("datasets", "gradient", "network", "functions", "cli", "optimizer", "multi_layer_net",
                "trainer", "run"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'bprop' has no attribute {name!r}")
