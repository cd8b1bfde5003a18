"""Timings for chapter 7: Convolution, Pooling, im2col/col2im and the SimpleConvNet training step.

:func:`measure` returns rows of (case, book time, bprop time, torch time)
for ``bprop bench`` to print. The book column runs the book's own code,
imported from a clone of its repository (``book_dir``, or the
``BPROP_BOOK_DIR`` environment variable); without one that column is None.
The torch column is None when torch does not import. Every case runs on one
thread (NumPy's BLAS, bprop's kernels and torch pinned), and the
implementations of a case take turns within each repeat, so a busy machine
slows them alike; times are medians of process CPU time.
"""
import contextlib
import statistics
import sys
import time
import numpy as np

from . import _book_code

__all__ = ["measure", "measure_calls", "make_calls", "one_thread", "format_rows", "CASES", "book_modules", "book_convnet_on_bprop",
           "torch_module", "torch_adam_step"]

#: (case, dtype) pairs, as the issue's table.
CASES = (
    ("Pooling 2x2/2 forward+backward (100, 30, 24, 24)", "float64"),
    ("Convolution 30x1x5x5 forward+backward (100, 1, 28, 28)", "float64"),
    ("im2col (100, 1, 28, 28) 5x5", "float64"),
    ("col2im (100, 16, 28, 28) 3x3 pad 1", "float64"),
    ("SimpleConvNet step (gradient + Adam), batch 100", "float64"),
    ("SimpleConvNet step (gradient + Adam), batch 100", "float32"),
    ("book's simple_convnet.py step on bprop's layers", "float64"),
)

def book_modules(book_dir=None):
    """The book's (layers, util, optimizer, simple_convnet) modules, or None without its code.

    ``book_dir`` (else ``$BPROP_BOOK_DIR``) is a clone of the book's repository.
    """
    root = _book_code.book_dir(book_dir)
    if root is None:
        return None
    return [_book_code.load(root, f) for f in
            ("common/layers.py", "common/util.py", "common/optimizer.py", "ch07/simple_convnet.py")]


def book_convnet_on_bprop(book_dir):
    """The book's unmodified ``ch07/simple_convnet.py`` with ``common.layers`` resolving to bprop's
    layers and ``common.gradient`` to bprop's."""
    import types

    from . import conv, gradient, layers

    shim = types.ModuleType("common.layers")
    for module in (layers, conv):
        for name in module.__all__:
            setattr(shim, name, getattr(module, name))
    common = types.ModuleType("common")
    common.__path__ = []
    common.layers, common.gradient = shim, gradient
    return _book_code.load(book_dir, "ch07/simple_convnet.py",
                           {"common": common, "common.layers": shim, "common.gradient": gradient})


def torch_module():
    """torch, or None when it does not import."""
    try:
        import torch
    except Exception:  # ImportError, or a broken install raising something else
        return None
    return torch


@contextlib.contextmanager
def _one_thread(torch):
    from . import _info

    previous = _info.get_num_threads()
    _info.set_num_threads(1)
    torch_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(limits=1, user_api="blas")
        with limits:
            yield
    finally:
        _info.set_num_threads(previous)
        if torch is not None:
            torch.set_num_threads(torch_threads)


def _race(calls, repeats):
    """Median process CPU seconds of each callable (None stays None); they take turns each repeat."""
    live = {k: f for k, f in calls.items() if f is not None}
    for f in live.values():  # warm-up: caches, first-touch page faults, lazy imports
        f()
    times = {k: [] for k in live}
    for _ in range(repeats):
        for k, f in live.items():
            t = time.process_time()
            f()
            times[k].append(time.process_time() - t)
    return {k: (statistics.median(times[k]) if k in times else None) for k in calls}


def _rng_data(seed=0):
    r = np.random.default_rng(seed)
    return {
        "x": r.random((100, 1, 28, 28)),
        "t": r.integers(0, 10, 100),
        "W": r.standard_normal((30, 1, 5, 5)) * 0.01,
        "b": np.zeros(30),
        "conv_dout": r.standard_normal((100, 30, 24, 24)),
        "pool_x": r.standard_normal((100, 30, 24, 24)),
        "pool_dout": r.standard_normal((100, 30, 12, 12)),
        "col16": r.standard_normal((100 * 28 * 28, 16 * 9)),
    }


def _layer_calls(book, torch, d):
    from .conv import Convolution, Pooling
    from .util import col2im, im2col

    def pool(cls):
        lay = cls(2, 2, 2)
        return lambda: (lay.forward(d["pool_x"]), lay.backward(d["pool_dout"]))

    def convolution(cls):
        lay = cls(d["W"], d["b"])
        return lambda: (lay.forward(d["x"]), lay.backward(d["conv_dout"]))

    rows = {}
    rows[CASES[0]] = {"book": pool(book[0].Pooling) if book else None, "bprop": pool(Pooling)}
    rows[CASES[1]] = {"book": convolution(book[0].Convolution) if book else None, "bprop": convolution(Convolution)}
    rows[CASES[2]] = {"book": (lambda: book[1].im2col(d["x"], 5, 5)) if book else None,
                      "bprop": lambda: im2col(d["x"], 5, 5)}
    shape16 = (100, 16, 28, 28)
    rows[CASES[3]] = {"book": (lambda: book[1].col2im(d["col16"], shape16, 3, 3, 1, 1)) if book else None,
                      "bprop": lambda: col2im(d["col16"], shape16, 3, 3, 1, 1)}
    if torch is not None:
        aten = torch.ops.aten
        T = {k: torch.from_numpy(v) for k, v in d.items() if k != "t"}
        fold_in = T["col16"].reshape(100, 784, 144).transpose(1, 2).contiguous()

        def t_pool():
            out, idx = aten.max_pool2d_with_indices(T["pool_x"], [2, 2], [2, 2])
            return aten.max_pool2d_with_indices_backward(T["pool_dout"], T["pool_x"], [2, 2], [2, 2], [0, 0],
                                                         [1, 1], False, idx)

        def t_conv():
            torch.conv2d(T["x"], T["W"], T["b"])
            return aten.convolution_backward(T["conv_dout"], T["x"], T["W"], [30], [1, 1], [0, 0], [1, 1],
                                             False, [0, 0], 1, [True, True, True])

        rows[CASES[0]]["torch"] = t_pool
        rows[CASES[1]]["torch"] = t_conv
        rows[CASES[2]]["torch"] = lambda: torch.nn.functional.unfold(T["x"], 5)
        rows[CASES[3]]["torch"] = lambda: torch.nn.functional.fold(fold_in, (28, 28), 3, padding=1)
    return rows


def _step_calls(book, torch, d, dt, book_dir):
    from .convnet import SimpleConvNet
    from .optimizer import Adam

    x = d["x"].astype(dt)
    t = d["t"]

    def bprop_step():
        np.random.seed(0)
        net, opt = SimpleConvNet(dtype=dt), Adam(lr=0.001)
        return lambda: opt.update(net.params, net.gradient(x, t))

    def book_step(module):
        np.random.seed(0)
        net, opt = module.SimpleConvNet(), book[2].Adam(lr=0.001)
        return lambda: opt.update(net.params, net.gradient(x, t))

    calls = {"book": book_step(book[3]) if book and dt == np.float64 else None, "bprop": bprop_step()}
    if torch is not None:
        tdt = torch.float64 if dt == np.float64 else torch.float32
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 30, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2), torch.nn.Flatten(),
            torch.nn.Linear(30 * 12 * 12, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10),
        ).to(tdt)
        calls["torch"] = torch_adam_step(torch, model, x, t)
    return calls


def torch_adam_step(torch, model, x, t):
    """One training step of ``model`` on (x, t) as the book's trainers take one: the gradient
    of the mean cross-entropy, then Adam(lr=0.001) with the book's eps (1e-7)."""
    opt = torch.optim.Adam(model.parameters(), lr=0.001, eps=1e-7)
    tx, tt = torch.from_numpy(x), torch.from_numpy(t)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(tx), tt).backward()
        opt.step()

    return step


def make_calls(book_dir=None, cases=None):
    """The callables timed for each case: ``{(case, dtype): {"book": f, "bprop": f, "torch": f}}``,
    each ``f()`` one call of that implementation (None where it is not available).

    Call inside :func:`one_thread` to time them as :func:`measure` does.
    """
    book_dir = _book_code.book_dir(book_dir)
    book = book_modules(book_dir)
    torch = torch_module()
    wanted = list(cases) if cases is not None else list(CASES)
    d = _rng_data()
    layer_calls = _layer_calls(book, torch, d)
    out = {}
    for key in wanted:
        if key in layer_calls:
            calls = layer_calls[key]
        elif key == CASES[6]:
            calls = {"book": _step_calls(book, None, d, np.float64, book_dir)["book"] if book else None, "bprop": None}
            if book:
                module = book_convnet_on_bprop(book_dir)
                np.random.seed(0)
                net, opt = module.SimpleConvNet(), book[2].Adam(lr=0.001)
                calls["bprop"] = lambda net=net, opt=opt: opt.update(net.params, net.gradient(d["x"], d["t"]))
        else:
            calls = _step_calls(book, torch, d, np.dtype(key[1]).type, book_dir)
        calls.setdefault("torch", None)
        out[key] = calls
    return out


def one_thread():
    """Context: bprop's kernels, NumPy's BLAS and torch (when it imports) on one thread."""
    return _one_thread(torch_module())


def measure_calls(calls, repeats):
    """Time each case's implementations on one thread, taking turns; a list of row dicts.

    ``calls`` maps (case, dtype) to ``{"book": f, "bprop": f, "torch": f}``;
    ``repeats(key)`` is the number of timed calls for that case. Cases with
    no implementation at all are left out.
    """
    rows = []
    with one_thread():
        for (case, dtype), impls in calls.items():
            if all(v is None for v in impls.values()):
                continue
            rows.append({"case": case, "dtype": dtype, **_race(impls, repeats((case, dtype)))})
    return rows


def measure(repeats=15, book_dir=None, cases=None):
    """Time each case on one thread; return a list of row dicts.

    Parameters
    ----------
    repeats : int
        Timed calls per implementation (after one warm-up call).
    book_dir : str or path-like, optional
        A clone of the book's repository for the book column (else
        ``$BPROP_BOOK_DIR``; without either the column is None).
    cases : iterable of (case, dtype), optional
        A subset of :data:`CASES`.

    Returns
    -------
    list of dict
        ``case, dtype, book, bprop, torch``: median CPU seconds per call
        (None where that implementation is not available).
    """
    return measure_calls(make_calls(book_dir, cases), lambda key: repeats)


def format_rows(rows):
    """The rows as a Markdown table with speed-ups (book / bprop, torch / bprop)."""
    def ms(v):
        return "" if v is None else f"{v * 1e3:.2f} ms"

    def ratio(a, b):
        return "" if a is None or b is None else f"{a / b:.2f}x"

    lines = ["| case | dtype | book | bprop | torch | book / bprop | torch / bprop |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['dtype']} | {ms(r['book'])} | {ms(r['bprop'])} | {ms(r['torch'])} | "
                     f"{ratio(r['book'], r['bprop'])} | {ratio(r['torch'], r['bprop'])} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m bprop._bench_conv [BOOK_DIR]
    print(format_rows(measure(book_dir=sys.argv[1] if len(sys.argv) > 1 else None)))
