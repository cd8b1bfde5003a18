"""One SGD step of the book's 784-50-10 network, per implementation."""
import numpy as np

from .. import book
from .cases import backend_context
from .check import TOLERANCES, Mismatch
from .timing import fmt_time, time_calls
from .torch_cases import torch_module

TRAIN = {"input": 784, "hidden": 50, "output": 10, "batch": 100, "lr": 0.1}


def _train_inputs(seed=0):
    rng = np.random.default_rng(seed)
    i, h, o, n = TRAIN["input"], TRAIN["hidden"], TRAIN["output"], TRAIN["batch"]
    params = {
        "W1": 0.01 * rng.standard_normal((i, h)), "b1": np.zeros(h),
        "W2": 0.01 * rng.standard_normal((h, o)), "b2": np.zeros(o),
    }
    x = rng.random((n, i))
    labels = rng.integers(0, o, n)
    t = np.zeros((n, o))
    t[np.arange(n), labels] = 1.0
    return params, x, t, labels


def train_step_case(impl, params, x, t, labels):
    """(step, get_params) for one SGD step of the 784-50-10 net with ``impl``.

    book / numpy / cython: ``TwoLayerNet.gradient`` (the book's code) with
    the book's layers or bprop's, then the book's update
    ``params[key] -= lr * grad[key]``; one-hot labels as in the book's
    ``train_neuralnet.py``. torch: the same network in autograd (``addmm``,
    ``relu``, ``cross_entropy`` on class indices, in-place SGD).
    """
    lr = TRAIN["lr"]
    if impl == "torch":
        torch = torch_module()
        P = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in params.items()}
        X, L = torch.from_numpy(x), torch.from_numpy(labels)
        W1, b1, W2, b2 = P["W1"], P["b1"], P["W2"], P["b2"]
        plist = [W1, b1, W2, b2]
        addmm, relu, xent = torch.addmm, torch.relu, torch.nn.functional.cross_entropy
        no_grad = torch.no_grad

        def step():
            loss = xent(addmm(b2, relu(addmm(b1, X, W1)), W2), L)
            loss.backward()
            with no_grad():
                for p in plist:
                    p.add_(p.grad, alpha=-lr)
                    p.grad = None

        return step, lambda: {k: v.detach().numpy().copy() for k, v in P.items()}

    from ..network import TwoLayerNet

    state = np.random.get_state()
    try:
        net = TwoLayerNet(TRAIN["input"], TRAIN["hidden"], TRAIN["output"])
    finally:
        np.random.set_state(state)
    for k, v in params.items():
        net.params[k][...] = v  # in place: the layers hold these arrays
    if impl == "book":
        p = net.params
        net.layers["Affine1"] = book.Affine(p["W1"], p["b1"])
        net.layers["Relu1"] = book.Relu()
        net.layers["Affine2"] = book.Affine(p["W2"], p["b2"])
        net.lastLayer = book.SoftmaxWithLoss()
    keys = tuple(params)
    netp, gradient = net.params, net.gradient

    def step():
        grad = gradient(x, t)
        for key in keys:
            netp[key] -= lr * grad[key]

    return step, lambda: {k: v.copy() for k, v in net.params.items()}


def measure_train_step(impls, timing, log=None):
    """Time one training step per implementation (interleaved), after checking that
    one step leaves the same parameters as the book's."""
    params, x, t, labels = _train_inputs()
    steps = {}
    ref = None
    for impl in impls:
        with backend_context(impl):
            step, get = train_step_case(impl, params, x, t, labels)
            step()
            after = get()
        if ref is None:
            ref = after
        else:
            rtol, atol_rel = TOLERANCES["float64"]["gemm"]
            for k in ref:
                scale = float(np.max(np.abs(ref[k]))) or 1.0
                if not np.allclose(after[k], ref[k], rtol=rtol, atol=atol_rel * scale):
                    raise Mismatch(f"training step {impl}: {k} after one SGD step disagrees with the book's "
                                   f"(max |diff| {float(np.max(np.abs(after[k] - ref[k]))):.3g})")
        steps[impl] = step
    names = list(steps)
    res = time_calls([steps[i] for i in names], *timing, contexts=[(lambda i=i: backend_context(i)) for i in names])
    out = dict(zip(names, res))
    if log:
        for impl in names:
            log(f"  train step {impl}: {fmt_time(out[impl]['median'])}")
    return out
