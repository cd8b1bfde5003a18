"""The layers, sizes and implementations compared, their inputs, and each one ready to time."""
import contextlib
import functools
import math

import numpy as np

from .. import _backend, book
from .torch_cases import torch_case, torch_missing_reason

#: (N, D, M) for Affine (x is N x D, W is D x M), (N, C) for SoftmaxWithLoss.
SIZES = {
    "relu": [(100, 50), (100, 784), (1000, 1000), (4096, 4096)],
    "sigmoid": [(100, 50), (100, 784), (1000, 1000), (4096, 4096)],
    "affine": [(100, 784, 50), (100, 50, 10), (1024, 1024, 1024), (4096, 4096, 1024)],
    "softmax": [(100, 10), (100, 784), (1000, 1000), (4096, 4096)],
}
LAYERS = tuple(SIZES)
#: What ``--layers`` accepts: the layers plus the training-step comparison and
#: chapter 7 (convolution, pooling, im2col/col2im, the SimpleConvNet step),
#: chapter 6 (Adam, BatchNormalization) and chapter 8 (the DeepConvNet step).
CHOICES = LAYERS + ("train", "conv", "ch6", "ch8")
LAYER_TITLES = {"relu": "Relu", "sigmoid": "Sigmoid", "affine": "Affine", "softmax": "SoftmaxWithLoss"}
IMPLS = ("book", "numpy", "cython", "torch")
PASSES = ("forward", "backward", "both")
DTYPES = ("float64", "float32")
#: Sizes --quick leaves out: the largest of each layer.
QUICK_DROP = 1


def make_inputs(layer, size, dtype, seed=0):
    """The inputs every implementation of ``layer`` gets at ``size``, as NumPy arrays.

    Returns
    -------
    dict
        relu/sigmoid: ``x``, ``dout`` (N, D); affine: ``x`` (N, D), ``W``
        (D, M), ``b`` (M,), ``dout`` (N, M); softmax: ``x`` (N, C) scores
        and ``t`` (N,) int64 labels.
    """
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)

    def randn(*shape, scale=1.0):
        a = rng.standard_normal(shape, dtype=dt)  # drawn in dtype: no float64 copy at 4096 x 4096
        if scale != 1.0:
            a *= dt.type(scale)
        return a

    if layer in ("relu", "sigmoid"):
        n, d = size
        return {"x": randn(n, d), "dout": randn(n, d)}
    if layer == "affine":
        n, d, m = size
        return {"x": randn(n, d), "W": randn(d, m, scale=1 / math.sqrt(d)), "b": randn(m), "dout": randn(n, m)}
    if layer == "softmax":
        n, c = size
        return {"x": randn(n, c, scale=2.0), "t": rng.integers(0, c, n, dtype=np.int64)}
    raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(LAYERS)}")


class Case:
    """One implementation of one layer, ready to time.

    Attributes
    ----------
    forward, backward, both : callable
        Zero-argument callables for the three passes; ``backward`` relies on
        a forward already run (:meth:`prepare` does it).
    results : callable
        Runs forward then backward once and returns their results as a dict
        of NumPy arrays (copies), for :func:`check_results`.
    """

    def __init__(self, forward, backward, both, results):
        self.forward, self.backward, self.both, self.results = forward, backward, both, results

    def prepare(self):
        """Run forward once so that ``backward`` has the state it needs."""
        self.forward()

    def call(self, pass_):
        """The callable for ``pass_`` (forward, backward or both)."""
        return {"forward": self.forward, "backward": self.backward, "both": self.both}[pass_]


def backend_context(impl):
    """The context an implementation runs in: bprop's backend for numpy/cython."""
    if impl in ("numpy", "cython"):
        return _backend.use_backend(impl)
    return contextlib.nullcontext()


def impl_missing_reason(impl):
    """Why ``impl`` cannot run here, or None."""
    if impl == "cython" and not _backend.compiled_available():
        return "bprop's compiled kernels are not built (pure install)"
    if impl == "torch":
        return torch_missing_reason()
    return None


def make_case(layer, impl, inputs):
    """Build implementation ``impl`` of ``layer`` on ``inputs`` (from :func:`make_inputs`).

    bprop's implementations (``numpy``, ``cython``) must be built, checked
    and timed inside :func:`backend_context`.
    """
    if impl == "torch":
        return torch_case(layer, inputs)
    mod = book if impl == "book" else _bprop_layers()
    if layer == "relu":
        return _relu_case(mod, inputs, impl == "book")
    if layer == "sigmoid":
        return _sigmoid_case(mod, inputs)
    if layer == "affine":
        return _affine_case(mod, inputs)
    if layer == "softmax":
        return _softmax_case(mod, inputs)
    raise ValueError(f"unknown layer {layer!r}")

def _bprop_layers():
    from .. import layers
    return layers


def _layer_case(layer, fwd_args, bwd_args, results):
    """A Case timing ``layer.forward(*fwd_args)`` and ``layer.backward(*bwd_args)``."""
    forward = functools.partial(layer.forward, *fwd_args)
    backward = functools.partial(layer.backward, *bwd_args)

    def both():
        forward()
        return backward()

    return Case(forward, backward, both, results)


def _relu_case(mod, inp, is_book):
    x, dout = inp["x"], inp["dout"]
    if is_book:
        dout = dout.copy()  # the book's backward zeroes dout in place: keep the shared input intact
    layer = mod.Relu()

    def results():
        out = np.array(layer.forward(x))
        mask = np.array(layer.mask)
        dx = np.array(layer.backward(dout.copy()))
        return {"out": out, "mask": mask, "dx": dx}

    return _layer_case(layer, (x,), (dout,), results)


def _sigmoid_case(mod, inp):
    x, dout = inp["x"], inp["dout"]
    layer = mod.Sigmoid()

    def results():
        return {"out": np.array(layer.forward(x)), "dx": np.array(layer.backward(dout))}

    return _layer_case(layer, (x,), (dout,), results)


def _affine_case(mod, inp):
    x, W, b, dout = inp["x"], inp["W"], inp["b"], inp["dout"]
    layer = mod.Affine(W, b)

    def results():
        out = np.array(layer.forward(x))
        dx = np.array(layer.backward(dout))
        return {"out": out, "dx": dx, "dW": np.array(layer.dW), "db": np.array(layer.db)}

    return _layer_case(layer, (x,), (dout,), results)


def _softmax_case(mod, inp):
    x, t = inp["x"], inp["t"]
    layer = mod.SoftmaxWithLoss()

    def results():
        loss = np.array(layer.forward(x, t), dtype=np.float64)
        y = np.array(layer.y)
        return {"loss": loss, "y": y, "dx": np.array(layer.backward())}

    return _layer_case(layer, (x, t), (), results)
