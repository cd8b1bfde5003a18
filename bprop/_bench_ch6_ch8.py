"""Timings for chapters 6 and 8: Adam, BatchNormalization and the DeepConvNet training step.

:func:`measure` returns rows of (case, dtype, book, bprop, torch) median CPU
seconds per call, for ``bprop bench --layers ch6,ch8`` to print with chapter
7's :func:`bprop._bench_conv.format_rows`. The book column runs the book's
own ``common/optimizer.py``, ``common/layers.py`` and ``ch08/deep_convnet.py``
from a clone of its repository (``book_dir`` or ``BPROP_BOOK_DIR``), in
float64 as the book computes; without one it is None. The torch column is
PyTorch's own CPU code for the same work, None when torch does not import.
Everything runs on one thread and the implementations take turns within
each repeat (:func:`bprop._bench_conv.measure_calls`).
"""
import numpy as np

from . import _book_code
from ._bench_conv import format_rows, measure_calls, torch_adam_step, torch_module

__all__ = ["CASES", "make_calls", "measure", "format_rows"]

_ADAM = "Adam update, SimpleConvNet's parameters"
_BN = "BatchNormalization forward+backward {}"
_DEEP = "DeepConvNet step (gradient + Adam), batch 100"

#: (case, dtype) pairs; the DeepConvNet step's rows come last (the slow ones).
CASES = tuple(
    [(_ADAM, dt) for dt in ("float64", "float32")]
    + [(_BN.format(shape), dt) for shape in ("(100, 100)", "(100, 4320)") for dt in ("float64", "float32")]
    + [(_DEEP, dt) for dt in ("float64", "float32")]
)
#: The chapters each case belongs to, for ``--layers``.
CHAPTER = {case: ("ch8" if case[0] == _DEEP else "ch6") for case in CASES}


def _adam_calls(book, torch, dt):
    from .convnet import SimpleConvNet
    from .optimizer import Adam

    np.random.seed(0)
    params = SimpleConvNet(dtype=dt).params
    rng = np.random.default_rng(1)
    grads = {k: rng.standard_normal(v.shape).astype(dt) * 0.01 for k, v in params.items()}

    def step(opt_class):
        ps = {k: v.copy() for k, v in params.items()}
        opt = opt_class(lr=0.001)
        return lambda: opt.update(ps, grads)

    calls = {"book": step(book["optimizer"].Adam) if book and dt == np.float64 else None, "bprop": step(Adam)}
    if torch is not None:
        tp = [torch.from_numpy(v.copy()) for v in params.values()]
        for p, g in zip(tp, grads.values()):
            p.grad = torch.from_numpy(g)
        opt = torch.optim.Adam(tp, lr=0.001, eps=1e-7)
        calls["torch"] = opt.step
    return calls


def _bn_calls(book, torch, dt, d):
    from .batchnorm import BatchNormalization

    rng = np.random.default_rng(2)
    x = rng.standard_normal((100, d)).astype(dt) * 3 + 1
    dout = rng.standard_normal((100, d)).astype(dt)
    gamma, beta = np.ones(d, dt), np.zeros(d, dt)

    def both(cls):
        layer = cls(gamma.copy(), beta.copy())
        return lambda: (layer.forward(x, train_flg=True), layer.backward(dout))

    calls = {"book": both(book["layers"].BatchNormalization) if book and dt == np.float64 else None,
             "bprop": both(BatchNormalization)}
    if torch is not None:
        aten = torch.ops.aten
        tx, tdout = torch.from_numpy(x), torch.from_numpy(dout)
        tg, tb = torch.from_numpy(gamma.copy()), torch.from_numpy(beta.copy())
        rm, rv = torch.zeros(d, dtype=tx.dtype), torch.ones(d, dtype=tx.dtype)

        def t_both():
            # The layer's own kernels without autograd's bookkeeping, as the
            # other torch rows call aten directly; eps as the book's 10e-7.
            out, mean, invstd = aten.native_batch_norm(tx, tg, tb, rm, rv, True, 0.1, 10e-7)
            return aten.native_batch_norm_backward(tdout, tx, tg, rm, rv, mean, invstd, True, 10e-7,
                                                   [True, True, True])

        calls["torch"] = t_both
    return calls


def _torch_deep_convnet(torch, tdt):
    nn = torch.nn
    layers, channels = [], 1
    for i, (out, pad) in enumerate(((16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1))):
        layers += [nn.Conv2d(channels, out, 3, padding=pad), nn.ReLU()]
        if i % 2:
            layers.append(nn.MaxPool2d(2, 2))
        channels = out
    layers += [nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5), nn.Linear(50, 10),
               nn.Dropout(0.5)]
    return nn.Sequential(*layers).to(tdt)


def _deep_calls(book, torch, dt):
    from .deep_convnet import DeepConvNet
    from .optimizer import Adam

    rng = np.random.default_rng(3)
    x = rng.random((100, 1, 28, 28)).astype(dt)
    t = rng.integers(0, 10, 100)

    def step(make_net, opt_class):
        np.random.seed(0)
        net, opt = make_net(), opt_class(lr=0.001)
        return lambda: opt.update(net.params, net.gradient(x, t))

    calls = {"book": step(book["deep_convnet"].DeepConvNet, book["optimizer"].Adam)
             if book and dt == np.float64 else None,
             "bprop": step(lambda: DeepConvNet(dtype=dt), Adam)}
    if torch is not None:
        torch.manual_seed(0)
        model = _torch_deep_convnet(torch, torch.float64 if dt == np.float64 else torch.float32)
        calls["torch"] = torch_adam_step(torch, model, x, t)
    return calls


def _book(book_dir):
    root = _book_code.book_dir(book_dir)
    if root is None:
        return None
    return {"optimizer": _book_code.load(root, "common/optimizer.py"),
            "layers": _book_code.load(root, "common/layers.py"),
            "deep_convnet": _book_code.load(root, "ch08/deep_convnet.py")}


def make_calls(book_dir=None, cases=None):
    """The callables timed for each case: ``{(case, dtype): {"book": f, "bprop": f, "torch": f}}``
    (None where that implementation is not available)."""
    book, torch = _book(book_dir), torch_module()
    out = {}
    for case, dtype in (cases if cases is not None else CASES):
        dt = np.dtype(dtype).type
        if case == _ADAM:
            calls = _adam_calls(book, torch, dt)
        elif case == _DEEP:
            calls = _deep_calls(book, torch, dt)
        else:
            calls = _bn_calls(book, torch, dt, int(case.split("(100, ")[1].rstrip(")")))
        calls.setdefault("torch", None)
        out[(case, dtype)] = calls
    return out


def measure(repeats=15, book_dir=None, chapters=("ch6", "ch8"), dtypes=("float64", "float32")):
    """Time the cases of ``chapters`` on one thread; rows as :func:`bprop._bench_conv.measure`.

    Parameters
    ----------
    repeats : int
        Timed calls per implementation (the DeepConvNet step, a hundred times
        slower than the rest, gets a third of them, at least 3).
    book_dir : path-like, optional
        A clone of the book's repository (else ``$BPROP_BOOK_DIR``).
    chapters : iterable of str
        From ``"ch6"`` (Adam, BatchNormalization) and ``"ch8"`` (DeepConvNet).
    dtypes : iterable of str
        The dtypes to time.
    """
    cases = [c for c in CASES if CHAPTER[c] in chapters and c[1] in dtypes]
    calls = make_calls(book_dir, cases)
    return measure_calls(calls, lambda case: max(3, repeats // 3) if case[0] == _DEEP else repeats)


if __name__ == "__main__":  # python -m bprop._bench_ch6_ch8 [BOOK_DIR]
    import sys

    print(format_rows(measure(book_dir=sys.argv[1] if len(sys.argv) > 1 else None)))
