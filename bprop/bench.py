"""``bprop bench``: time bprop's layers against the book's NumPy code and PyTorch.

Run it on your own machine to see what the compiled kernels buy::

    bprop bench --quick                     # about a minute: the three smaller sizes
    bprop bench                             # every size, longer timings
    bprop bench --layers relu,affine --dtype float32 --threads 2
    bprop bench --json results.json --plot speedup.png
    python -m bprop.bench ...               # the same without the console script

For every layer x size x dtype x pass (forward, backward, forward+backward)
it times four implementations of the same computation, on the same inputs:

``book``
    the book's own NumPy layers (:mod:`bprop.book`), the baseline;
``numpy``
    bprop's layers on the NumPy backend (``bprop.use_backend("numpy")``);
``cython``
    bprop's layers on the compiled kernels: "bprop time" in the table;
``torch``
    PyTorch's CPU kernels for the same computation, when torch imports:
    ``torch.relu`` + ``aten.threshold_backward``; ``torch.sigmoid`` +
    ``aten.sigmoid_backward``; ``torch.addmm`` forward and two ``torch.mm``
    plus ``sum`` backward for Affine; ``torch.log_softmax`` + ``nll_loss``
    forward and their ``aten`` backward ops for SoftmaxWithLoss (integer
    labels). Direct ops, no autograd bookkeeping.

Before an implementation is timed, its forward and backward results are
checked against the book's (``np.allclose``-style with per-dtype
tolerances), so a fast but wrong kernel cannot win: a mismatch stops the run.

Timing: every measurement calls the code back to back in a loop scaled so
one repeat lasts at least 0.2 s (0.04 s with ``--quick``), repeated 5 times
(3 with ``--quick`` or when one call takes over a second); the table shows
the median per call and, after ``±``, half the interquartile range relative
to the median. Inputs are prepared outside the timed loop; backward timings
run forward once beforehand. NumPy's BLAS (via threadpoolctl), bprop's
kernels (``bprop.set_num_threads``) and PyTorch (``torch.set_num_threads``)
all get ``--threads`` threads (default 1).

Reference measurements in the same run put the numbers in context: the
machine's copy bandwidth (STREAM-style ``np.copyto`` of a 4096 x 4096 array
into a preallocated one, split over ``--threads`` threads), the bare GEMMs
of Affine at (1024, 1024, 1024) and up (``np.matmul`` into preallocated
arrays), one NumPy ufunc call at (100, 50) (the floor of per-call cost), and
a full training step of the book's 784-50-10 network (batch 100, float64,
forward + backward + SGD update) with the book's layers, bprop's and a
PyTorch autograd equivalent.

``--json FILE`` writes every measurement (medians, quartiles, min/max and
the raw per-repeat times); ``--plot FILE.png`` draws the forward+backward
speed-ups per size as grouped bars (needs matplotlib: ``pip install
'bprop[plot]'``).
"""
import argparse
import contextlib
import datetime
import functools
import gc
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from . import _backend, book
from ._info import get_num_threads, set_num_threads

__all__ = ["LAYERS", "SIZES", "IMPLS", "PASSES", "Case", "make_inputs", "make_case", "reference_results",
           "check_results", "Mismatch", "time_call", "time_calls", "add_parser", "run", "main"]

#: Layer name -> the sizes benchmarked: (N, D) for the elementwise layers,
#: (N, D, M) for Affine (x is N x D, W is D x M), (N, C) for SoftmaxWithLoss.
SIZES = {
    "relu": [(100, 50), (100, 784), (1000, 1000), (4096, 4096)],
    "sigmoid": [(100, 50), (100, 784), (1000, 1000), (4096, 4096)],
    "affine": [(100, 784, 50), (100, 50, 10), (1024, 1024, 1024), (4096, 4096, 1024)],
    "softmax": [(100, 10), (100, 784), (1000, 1000), (4096, 4096)],
}
LAYERS = tuple(SIZES)
#: What ``--layers`` accepts: the layers plus the training-step comparison.
CHOICES = LAYERS + ("train",)
LAYER_TITLES = {"relu": "Relu", "sigmoid": "Sigmoid", "affine": "Affine", "softmax": "SoftmaxWithLoss"}
IMPLS = ("book", "numpy", "cython", "torch")
PASSES = ("forward", "backward", "both")
DTYPES = ("float64", "float32")

#: Sizes --quick leaves out: the largest of each layer.
QUICK_DROP = 1
#: (min seconds per repeat, repeats) for a full run and for --quick.
FULL_TIMING = (0.2, 5)
QUICK_TIMING = (0.04, 3)
#: A call slower than this gets only 3 repeats.
SLOW_CALL = 1.0

SENTENCE = ("Speed-up is book time divided by bprop time; torch ratio is torch time divided by bprop time "
            "(>1 means bprop is faster)")

#: (rtol, atol relative to the largest reference magnitude) per dtype and kind of
#: result. Measured disagreement between the book, both backends and torch on these
#: inputs: at most 7e-15 (float64) and 2e-6 (float32) of the largest magnitude.
TOLERANCES = {
    "float64": {"exact": (0.0, 0.0), "elementwise": (1e-12, 1e-13), "gemm": (1e-10, 1e-12),
                "softmax": (1e-10, 1e-13)},
    "float32": {"exact": (0.0, 0.0), "elementwise": (2e-6, 1e-6), "gemm": (1e-4, 2e-5),
                "softmax": (2e-5, 1e-6)},
}
#: Result name -> kind of tolerance.
RESULT_KIND = {"mask": "exact", "out": "elementwise", "dx": "elementwise", "y": "softmax", "loss": "softmax"}
AFFINE_KIND = {"out": "gemm", "dx": "gemm", "dW": "gemm", "db": "gemm"}


class Mismatch(AssertionError):
    """An implementation's result disagrees with the book's."""


# --------------------------------------------------------------------------- optional imports

def _torch():
    """The torch module, or None when it does not import."""
    try:
        import torch
    except Exception:  # ImportError, or a broken install raising something else
        return None
    return torch


def torch_missing_reason():
    """Why torch is not compared (None when it imports)."""
    try:
        import torch  # noqa: F401
    except Exception as exc:
        return f"PyTorch is not importable ({type(exc).__name__}: {exc}); install torch to compare against it"
    return None


# --------------------------------------------------------------------------- inputs and cases

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
        return _torch_case(layer, inputs)
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
    from . import layers
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


def _torch_case(layer, inp):
    torch = _torch()
    if torch is None:
        raise RuntimeError(torch_missing_reason())
    aten = torch.ops.aten
    T = {k: torch.from_numpy(v) for k, v in inp.items()}
    state = {}

    def np_(t):
        return t.detach().numpy().copy()

    if layer == "relu":
        x, dout = T["x"], T["dout"]
        relu, thb = torch.relu, aten.threshold_backward

        def forward():
            out = relu(x)
            state["out"] = out
            return out

        def backward():
            return thb(dout, state["out"], 0)

        def both():
            out = relu(x)
            state["out"] = out
            return thb(dout, out, 0)

        def results():
            out = forward()
            return {"out": np_(out), "dx": np_(backward())}

    elif layer == "sigmoid":
        x, dout = T["x"], T["dout"]
        sig, sgb = torch.sigmoid, aten.sigmoid_backward

        def forward():
            out = sig(x)
            state["out"] = out
            return out

        def backward():
            return sgb(dout, state["out"])

        def both():
            out = sig(x)
            state["out"] = out
            return sgb(dout, out)

        def results():
            out = forward()
            return {"out": np_(out), "dx": np_(backward())}

    elif layer == "affine":
        x, W, b, dout = T["x"], T["W"], T["b"], T["dout"]
        Wt, xt = W.t(), x.t()
        addmm, mm = torch.addmm, torch.mm

        def forward():
            return addmm(b, x, W)

        def backward():
            dx = mm(dout, Wt)
            state["dW"] = mm(xt, dout)
            state["db"] = dout.sum(0)
            return dx

        def both():
            addmm(b, x, W)
            return backward()

        def results():
            out = forward()
            dx = backward()
            return {"out": np_(out), "dx": np_(dx), "dW": np_(state["dW"]), "db": np_(state["db"])}

    elif layer == "softmax":
        x, t = T["x"], T["t"]
        one = torch.ones((), dtype=x.dtype)
        log_softmax, nll, nll_b, lsm_b = torch.log_softmax, aten.nll_loss_forward, aten.nll_loss_backward, \
            aten._log_softmax_backward_data
        dtype = x.dtype

        def forward():
            ls = log_softmax(x, 1)
            loss, tw = nll(ls, t, None, 1, -100)  # reduction 1 = mean
            state["ls"], state["tw"] = ls, tw
            return loss

        def backward():
            ls = state["ls"]
            return lsm_b(nll_b(one, ls, t, None, 1, -100, state["tw"]), ls, 1, dtype)

        def both():
            forward()
            return backward()

        def results():
            loss = forward()
            y = state["ls"].exp()
            return {"loss": np.array(float(loss)), "y": np_(y), "dx": np_(backward())}

    else:
        raise ValueError(f"unknown layer {layer!r}")
    return Case(forward, backward, both, results)


def reference_results(layer, inputs):
    """The book's results for ``inputs``, plus the exact loss for SoftmaxWithLoss.

    The book's loss adds 1e-7 inside the log, so the reference loss is the
    exact ``mean(logsumexp(x) - x[t])`` computed in float64 instead.
    """
    ref = make_case(layer, "book", inputs).results()
    if layer == "softmax":
        x = inputs["x"].astype(np.float64)
        t = inputs["t"]
        mx = x.max(axis=1)
        lse = mx + np.log(np.exp(x - mx[:, None]).sum(axis=1))
        ref["loss"] = np.array(np.mean(lse - x[np.arange(x.shape[0]), t]))
    return ref


def check_results(layer, impl, results, reference, dtype):
    """Raise :class:`Mismatch` unless ``results`` agree with ``reference``.

    Only the results both hold are compared (torch keeps no ReLU mask); the
    book's loss is not compared with itself (it is the reference's by design).
    """
    dt = np.dtype(dtype).name
    kinds = AFFINE_KIND if layer == "affine" else RESULT_KIND
    compared = 0
    for name, ref in reference.items():
        if name not in results or (impl == "book" and name == "loss"):
            continue
        got = np.asarray(results[name])
        ref = np.asarray(ref)
        if got.shape != ref.shape:
            raise Mismatch(f"{layer} {impl} {dt}: {name} has shape {got.shape}, the book's {ref.shape}")
        rtol, atol_rel = TOLERANCES[dt][kinds[name]]
        if kinds[name] == "exact":
            ok = np.array_equal(got, ref)
            worst = int(np.count_nonzero(got != ref))
            detail = f"{worst} entries differ"
        else:
            g = got.astype(np.float64)
            r = ref.astype(np.float64)
            scale = float(np.max(np.abs(r))) if r.size else 0.0
            atol = atol_rel * scale
            ok = bool(np.allclose(g, r, rtol=rtol, atol=atol, equal_nan=True))
            diff = np.abs(g - r)
            worst = float(np.nanmax(diff)) if diff.size else 0.0
            detail = f"max |diff| {worst:.3g} (rtol {rtol:g}, atol {atol:.3g})"
        if not ok:
            raise Mismatch(f"{layer} {impl} {dt}: {name} disagrees with the book's: {detail}")
        compared += 1
    if not compared:
        raise Mismatch(f"{layer} {impl} {dt}: no result to compare")


# --------------------------------------------------------------------------- timing

def _loop(fn, loops):
    rep = itertools.repeat(None, loops)
    start = time.perf_counter()
    for _ in rep:
        fn()
    return time.perf_counter() - start


def _calibrate(fn, min_time, max_loops):
    """(loops, seconds per call): loops so that one repeat lasts at least ``min_time``."""
    per = _loop(fn, 1)  # warm-up: may include one-off costs (first touch, caches)
    if per < min_time:
        # calibrate on a batch long enough to be timed reliably, ~min_time / 10
        n = 1
        for _ in range(8):
            n = max(n, min(max_loops, math.ceil(min_time / 10 / max(per, 1e-9))))
            t = _loop(fn, n)
            per = t / n
            if t >= min_time / 20 or n >= max_loops:
                break
    return max(1, min(max_loops, math.ceil(min_time / max(per, 1e-9)))), per


def time_calls(fns, min_time=0.2, repeats=5, contexts=None, max_loops=10_000_000):
    """Time several zero-argument callables, their repeats interleaved; a list of dicts.

    Each callable gets a warm-up call and a calibration batch of about a
    tenth of ``min_time`` that fixes its loop count, so that one repeat of
    back-to-back calls lasts at least ``min_time`` seconds. Then the
    repeats run in turn (a, b, c, a, b, c, ...): a slow drift of the
    machine's speed (another process starting) then shifts all of them
    alike rather than one of them. ``repeats`` repeats each (3 for a
    callable slower than a second per call); the garbage collector is off.
    ``contexts``: per callable, a factory of the context manager each of
    its repeats runs in (e.g. bprop's backend).

    Dict keys: ``median``, ``q1``, ``q3``, ``min``, ``max`` (seconds per
    call), ``loops``, ``repeats``, ``times`` (per call, each repeat).
    """
    contexts = contexts or [contextlib.nullcontext] * len(fns)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        plan = []
        for fn, ctx in zip(fns, contexts):
            with ctx():
                loops, per = _calibrate(fn, min_time, max_loops)
            plan.append((loops, min(repeats, 3) if per >= SLOW_CALL else repeats))
        samples = [[] for _ in fns]
        for r in range(max(n for _, n in plan)):
            for i, (fn, ctx) in enumerate(zip(fns, contexts)):
                loops, n = plan[i]
                if r < n:
                    with ctx():
                        samples[i].append(_loop(fn, loops) / loops)
    finally:
        if gc_was:
            gc.enable()
    out = []
    for (loops, _), xs in zip(plan, samples):
        q = _quartiles(xs)
        out.append({"median": q[1], "q1": q[0], "q3": q[2], "min": min(xs), "max": max(xs),
                    "loops": loops, "repeats": len(xs), "times": xs})
    return out


def time_call(fn, min_time=0.2, repeats=5, max_loops=10_000_000):
    """Time one zero-argument callable: :func:`time_calls` with one callable."""
    return time_calls([fn], min_time, repeats, max_loops=max_loops)[0]


def _quartiles(xs):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


# --------------------------------------------------------------------------- work per pass

def work(layer, size, dtype, pass_):
    """(amount, unit) a pass must move or compute: bytes for the elementwise
    layers and SoftmaxWithLoss, floating-point operations for Affine."""
    s = np.dtype(dtype).itemsize
    if layer == "affine":
        n, d, m = size
        flops = {"forward": 2 * n * d * m, "backward": 4 * n * d * m}
        flops["both"] = flops["forward"] + flops["backward"]
        return flops[pass_], "flop"
    n, d = size
    e = n * d
    if layer == "relu":
        b = {"forward": e * (2 * s + 1), "backward": e * (2 * s + 1)}     # x -> out, mask / dout, mask -> dx
    elif layer == "sigmoid":
        b = {"forward": 2 * e * s, "backward": 3 * e * s}                  # x -> out / dout, out -> dx
    else:
        b = {"forward": 2 * e * s + 8 * n, "backward": 2 * e * s + 8 * n}  # x, t -> y / y, t -> dx
    b["both"] = b["forward"] + b["backward"]
    return b[pass_], "byte"


# --------------------------------------------------------------------------- environment

def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _blas_pools():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [p for p in threadpool_info() if p.get("user_api") == "blas"]


def blas_description():
    pools = _blas_pools()
    if pools is None:
        return "unknown (install threadpoolctl to see and limit it: pip install 'bprop[bench]')"
    if not pools:
        return "none found"
    return "; ".join(
        f"{p.get('internal_api')} {p.get('version')}, {p.get('architecture') or 'unknown'} kernels, "
        f"{p.get('num_threads')} thread{'s' if p.get('num_threads') != 1 else ''}"
        for p in pools)


ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE", "BPROP_BACKEND")


@contextlib.contextmanager
def thread_limits(threads, with_torch=True):
    """Give bprop's kernels, NumPy's BLAS and torch ``threads`` threads; restore afterwards.

    Yields a note when the BLAS pool could not be limited (no threadpoolctl).
    ``with_torch=False`` leaves torch alone (not even imported).
    """
    stack = contextlib.ExitStack()
    note = None
    with stack:
        previous = get_num_threads()
        set_num_threads(threads)
        stack.callback(set_num_threads, previous)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            note = "NumPy's BLAS threads not limited: threadpoolctl is not installed (pip install 'bprop[bench]')"
        else:
            stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
        torch = _torch() if with_torch else None
        if torch is not None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, before)
        yield note


def _loadavg():
    """The 1-minute load average (None where the OS does not say): other work skews timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def header(threads, timing, quick, note=None, with_torch=True):
    """The run's description: a dict (for JSON) of what the table header prints."""
    from . import __version__

    torch = _torch() if with_torch else None
    k = _backend.compiled_module()
    min_time, repeats = timing
    h = {
        "date": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "bprop": __version__,
        "compiled": k is not None,
        "openmp": bool(k is not None and k.openmp_enabled()),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "blas": blas_description(),
        "blas_pools": [{k2: p.get(k2) for k2 in ("internal_api", "version", "architecture", "num_threads",
                                                  "threading_layer")} for p in (_blas_pools() or [])],
        "env": {v: os.environ[v] for v in ENV_VARS if v in os.environ},
        "load_average_start": _loadavg(),
        "quick": quick,
        "min_time": min_time,
        "repeats": repeats,
        "bprop_impl": "cython" if k is not None else "numpy",
    }
    if note:
        h["note"] = note
    return h


def format_header(h):
    lines = [f"bprop bench, {h['date']}"]
    lines.append(
        f"bprop {h['bprop']} (compiled kernels: {'yes' if h['compiled'] else 'NO'}, OpenMP: "
        f"{'yes' if h['openmp'] else 'no'}), NumPy {h['numpy']}, "
        f"PyTorch {h['torch'] or h.get('torch_skipped') or 'not installed'}, Python {h['python']}")
    lines.append(f"CPU: {h['cpu']} ({h['logical_cpus']} logical CPUs)")
    load = h.get("load_average_start")
    lines.append(f"threads: {h['threads']} (bprop kernels, NumPy's BLAS and PyTorch alike)"
                 + (f"; load average at start {load:.2f}" if load is not None else ""))
    lines.append(f"BLAS: {h['blas']}")
    if h["env"]:
        lines.append("environment: " + " ".join(f"{k}={v}" for k, v in h["env"].items()))
    if h.get("note"):
        lines.append(f"note: {h['note']}")
    lines.append(f"timing: median over {h['repeats']} repeats of >= {h['min_time']:g} s each "
                 f"({'--quick' if h['quick'] else 'full run'}); ± is half the interquartile range, "
                 "relative to the median")
    if h["compiled"]:
        lines.append("bprop time is the compiled (cython) backend's; numpy is bprop on its NumPy backend; "
                     "book is the book's NumPy layers")
    else:
        lines.append("note: the compiled kernels are not built: bprop time is the NumPy backend's; "
                     "book is the book's NumPy layers")
    lines.append(SENTENCE + ".")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reference measurements

#: The STREAM-style copy's array: as large as the largest elementwise size.
COPY_SHAPE = (4096, 4096)

#: The copies timed for the copy bandwidth: memcpy-based ``np.copyto`` and a copy through
#: a ufunc loop (``np.positive`` into a preallocated output). Which one is faster depends
#: on the machine (memcpy may use non-temporal stores); the faster sets the reference.
COPY_KINDS = ("np.copyto", "np.positive")


@contextlib.contextmanager
def copy_call(dtype, threads, shape=None):
    """STREAM-style copies of a ``shape`` array into a preallocated one.

    Yields ``({kind: fn}, nbytes)``: a zero-argument callable per
    :data:`COPY_KINDS` and the bytes one copy reads + writes. With more
    than one thread the rows are split into ``threads`` blocks copied
    concurrently (both release the GIL).
    """
    shape = shape or COPY_SHAPE
    src = np.ones(shape, dtype=dtype)
    dst = np.zeros(shape, dtype=dtype)
    copyto, positive = np.copyto, np.positive

    def ufunc_copy(d, s):
        positive(s, out=d)

    ops = {"np.copyto": copyto, "np.positive": ufunc_copy}
    if threads <= 1:
        yield {k: (lambda op=op: op(dst, src)) for k, op in ops.items()}, 2 * src.nbytes
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, shape[0], threads + 1).astype(int)
    blocks = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with ThreadPoolExecutor(threads) as pool:
        def split(op):
            def fn():
                for f in [pool.submit(op, d, s) for d, s in blocks]:
                    f.result()
            return fn

        yield {k: split(op) for k, op in ops.items()}, 2 * src.nbytes


def copy_bandwidth(dtype, threads, timing, shape=None):
    """Time the copies of :func:`copy_call`, interleaved.

    Returns the faster copy's :func:`time_call` dict plus ``gbps`` (bytes
    read + written per second), ``kind``, and ``kinds``: every copy's
    result.
    """
    with copy_call(dtype, threads, shape) as (fns, nbytes):
        res = time_calls(list(fns.values()), *timing)
    kinds = {}
    for kind, r in zip(fns, res):
        r.update(bytes=nbytes, gbps=nbytes / r["median"] / 1e9, kind=kind)
        kinds[kind] = r
    best = dict(max(kinds.values(), key=lambda r: r["gbps"]))
    best.update(shape=list(shape or COPY_SHAPE), dtype=np.dtype(dtype).name, kinds=kinds)
    return best


def gemm_call(size, dtype, pass_, inputs=None):
    """The bare GEMMs of an Affine pass, into preallocated outputs, as a zero-argument callable.

    forward: ``x @ W``; backward: ``dout @ W.T`` and ``x.T @ dout``; both: all three.
    """
    inp = inputs if inputs is not None else make_inputs("affine", size, dtype)
    x, W, dout = inp["x"], inp["W"], inp["dout"]
    out = np.empty((x.shape[0], W.shape[1]), dtype=dtype)
    dx = np.empty_like(x)
    dW = np.empty_like(W)
    matmul, WT, xT = np.matmul, W.T, x.T

    def forward():
        matmul(x, W, out=out)

    def backward():
        matmul(dout, WT, out=dx)
        matmul(xT, dout, out=dW)

    def both():
        matmul(x, W, out=out)
        matmul(dout, WT, out=dx)
        matmul(xT, dout, out=dW)

    return {"forward": forward, "backward": backward, "both": both}[pass_]


def ufunc_time(dtype, timing, shape=(100, 50)):
    """One NumPy ufunc call with a fresh output (``np.negative(x)``): the floor of a layer call."""
    x = make_inputs("relu", shape, dtype)["x"]
    neg = np.negative

    def fn():
        return neg(x)

    r = time_call(fn, *timing)
    r.update(shape=list(shape), dtype=np.dtype(dtype).name)
    return r


# --------------------------------------------------------------------------- training step

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
        torch = _torch()
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

    from .network import TwoLayerNet

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
            log(f"  train step {impl}: {_fmt_time(out[impl]['median'])}")
    return out


# --------------------------------------------------------------------------- the run

def run_benchmarks(layers, dtypes, passes, sizes, impls, timing, threads, log=None, references=True,
                   on_layer=None):
    """Measure everything; returns the JSON-ready result dict (without the header).

    Per layer, size and dtype: every implementation is built and checked
    against the book's results (and checked again after timing), then each pass is timed with the
    implementations' repeats interleaved (and, for Affine at (1024, 1024,
    1024) and up, the bare GEMMs among them). ``on_layer(layer, data)`` is
    called when a layer is done, with the results so far.
    """
    results = []
    refs = {"copy": {}, "copy_alongside": [], "gemm": [], "ufunc": {}}
    skipped = {impl: impl_missing_reason(impl) for impl in impls if impl_missing_reason(impl)}
    data = {"results": results, "references": refs, "skipped": skipped}
    run_impls = [i for i in impls if i not in skipped]

    if references:
        for dt in dtypes:
            if any(layer in ("relu", "sigmoid") for layer in layers):
                refs["copy"][dt] = copy_bandwidth(dt, threads, timing)
                if log:
                    log(f"  copy bandwidth {dt}: {refs['copy'][dt]['gbps']:.2f} GB/s")
            refs["ufunc"][dt] = ufunc_time(dt, timing)

    for layer in layers:
        for size in sizes[layer]:
            for dt in dtypes:
                inputs = make_inputs(layer, size, dt)
                reference = reference_results(layer, inputs)
                cases = {}
                for impl in run_impls:
                    with backend_context(impl):
                        case = make_case(layer, impl, inputs)
                        check_results(layer, impl, case.results(), reference, dt)
                    cases[impl] = case
                gemm = references and layer == "affine" and math.prod(size) >= 1024 ** 3
                copy = references and layer != "affine" and math.prod(size) >= math.prod(COPY_SHAPE)
                with contextlib.ExitStack() as stack:
                    if copy:  # timed alongside, so that "% copy" compares like with like
                        copy_fns, copy_bytes = stack.enter_context(copy_call(dt, threads))
                    for p in passes:
                        names = list(cases)
                        fns = [cases[i].call(p) for i in names]
                        ctxs = [(lambda i=i: backend_context(i)) for i in names]
                        for i in names:
                            with backend_context(i):
                                cases[i].prepare()
                        if gemm:
                            names.append("gemm")
                            fns.append(gemm_call(size, dt, p, inputs))
                            ctxs.append(contextlib.nullcontext)
                        if copy:
                            for kind, fn in copy_fns.items():
                                names.append(kind)
                                fns.append(fn)
                                ctxs.append(contextlib.nullcontext)
                        amount, unit = work(layer, size, dt, p)
                        for name, r in zip(names, time_calls(fns, *timing, contexts=ctxs)):
                            r.update(layer=layer, size=list(size), dtype=dt, **{"pass": p})
                            if name == "gemm":
                                refs["gemm"].append(r)
                            elif name in COPY_KINDS:
                                r.update(bytes=copy_bytes, gbps=copy_bytes / r["median"] / 1e9, kind=name)
                                refs["copy_alongside"].append(r)
                            else:
                                r.update(impl=name, work=amount, unit=unit)
                                results.append(r)
                            if log:
                                log(f"  {layer} {size} {dt} {p} {name}: {_fmt_time(r['median'])}")
                        del fns
                # and once more after the timing loops: a kernel whose results go stale when
                # called repeatedly (say, a reused output buffer) must not pass either
                for impl, case in cases.items():
                    with backend_context(impl):
                        check_results(layer, impl, case.results(), reference, dt)
                del cases, inputs, reference
        if on_layer is not None:
            on_layer(layer, data)
    return data


# --------------------------------------------------------------------------- report

def _fmt_time(s):
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            v = s / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{s:g} s"


def _fmt_measure(r):
    if r is None:
        return "-"
    spread = (r["q3"] - r["q1"]) / 2 / r["median"] * 100 if r["median"] > 0 else 0.0
    return f"{_fmt_time(r['median'])} ±{spread:.0f}%"


def _fmt_ratio(x):
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def _index(data):
    idx = {}
    for r in data["results"]:
        idx[(r["layer"], tuple(r["size"]), r["dtype"], r["pass"], r["impl"])] = r
    return idx


def _gemm_index(data):
    return {(tuple(r["size"]), r["dtype"], r["pass"]): r for r in data["references"]["gemm"]}


def derived(data, bprop_impl="cython"):
    """Per (layer, size, dtype, pass): speed-up, torch ratio, rates, GEMM and copy ratios."""
    idx = _index(data)
    gidx = _gemm_index(data)
    copy = data["references"]["copy"]
    copy_along = {}
    for r in data["references"].get("copy_alongside", []):  # the faster copy of each row
        key = (r["layer"], tuple(r["size"]), r["dtype"], r["pass"])
        if key not in copy_along or r["gbps"] > copy_along[key]["gbps"]:
            copy_along[key] = r
    rows = {}
    keys = sorted({k[:4] for k in idx}, key=lambda k: (LAYERS.index(k[0]), SIZES[k[0]].index(k[1]),
                                                       DTYPES.index(k[2]) if k[2] in DTYPES else 9,
                                                       PASSES.index(k[3])))
    for key in keys:
        layer, size, dt, p = key
        get = lambda impl: idx.get(key + (impl,))  # noqa: E731
        bp = get(bprop_impl)
        bk, tr = get("book"), get("torch")
        row = {"book": bk, "numpy": get("numpy"), "cython": get("cython"), "torch": tr}
        t_bp = bp["median"] if bp else None
        row["speedup"] = bk["median"] / t_bp if (bk and t_bp) else None
        row["torch_ratio"] = tr["median"] / t_bp if (tr and t_bp) else None
        amount, unit = work(layer, size, dt, p)
        row["rate"] = amount / t_bp / 1e9 if t_bp else None
        row["unit"] = "GFLOP/s" if unit == "flop" else "GB/s"
        # Only where the data, like the copy's, is far larger than the caches; against the
        # copy timed alongside when there is one, else the one at the start of the run.
        c = copy_along.get(key) or copy.get(dt)
        row["copy_pct"] = (100 * row["rate"] / c["gbps"]) if (c and row["rate"] and unit == "byte"
                                                            and math.prod(size) >= math.prod(COPY_SHAPE)) else None
        g = gidx.get((size, dt, p))
        row["gemm"] = g
        row["gemm_ratio"] = t_bp / g["median"] if (g and t_bp) else None
        rows[key] = row
    return rows


def format_tables(data, bprop_impl="cython", only=None):
    """The per-layer tables (of layer ``only``, or all) as text."""
    rows = derived(data, bprop_impl)
    out = []
    for layer in LAYERS if only is None else [only]:
        keys = [k for k in rows if k[0] == layer]
        if not keys:
            continue
        affine = layer == "affine"
        rate_head = "GFLOP/s" if affine else "GB/s (% copy)"
        cols = ["size", "dtype", "pass", "book", "numpy", "cython", "speed-up", rate_head, "torch", "torch/bprop"]
        if affine:
            cols += ["bare GEMM", "layer/GEMM"]
        table = []
        for key in keys:
            _, size, dt, p = key
            r = rows[key]
            rate = "-" if r["rate"] is None else f"{r['rate']:.3g}"
            if r["copy_pct"] is not None:
                rate += f" ({r['copy_pct']:.0f}%)"
            line = [str(size), dt, p, _fmt_measure(r["book"]), _fmt_measure(r["numpy"]), _fmt_measure(r["cython"]),
                    _fmt_ratio(r["speedup"]), rate, _fmt_measure(r["torch"]), _fmt_ratio(r["torch_ratio"])]
            if affine:
                line += [_fmt_measure(r["gemm"]), "-" if r["gemm_ratio"] is None else f"{r['gemm_ratio']:.3f}"]
            table.append(line)
        title = LAYER_TITLES[layer]
        if affine:
            note = "size is (N, D, M); GFLOP/s counts 2NDM forward, 4NDM backward"
        elif layer == "relu":
            note = "size is (N, D); GB/s counts x, out, mask (forward) and dout, mask, dx (backward)"
        elif layer == "sigmoid":
            note = "size is (N, D); GB/s counts x, out (forward) and dout, out, dx (backward)"
        else:
            note = "size is (N, C), integer labels; GB/s counts x, t, y (forward) and y, t, dx (backward)"
        out.append(f"{title}  ({note})")
        out.append(_render(cols, table))
        out.append("")
    return "\n".join(out)


def _render(cols, table):
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(cols)]
    left = {0, 1, 2}

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(cols), fmt(["-" * w for w in widths])] + [fmt(r) for r in table])


def format_references(data, threads):
    refs = data["references"]
    lines = []
    if refs["copy"]:
        lines.append(f"Copy bandwidth, STREAM-style: a {COPY_SHAPE[0]} x {COPY_SHAPE[1]} array copied into a "
                     f"preallocated one, {threads} thread{'s' if threads != 1 else ''}, bytes read + written; "
                     f"the faster of {' and '.join(COPY_KINDS)} is the reference:")
        for dt, r in refs["copy"].items():
            each = ", ".join(f"{k} {v['gbps']:.2f} GB/s ({_fmt_measure(v)})" for k, v in r["kinds"].items())
            lines.append(f"  {dt}: {r['gbps']:.2f} GB/s [{each}]")
            along = [a for a in refs.get("copy_alongside", []) if a["dtype"] == dt]
            if along:
                per = ", ".join(f"{k} {min(a['gbps'] for a in along if a['kind'] == k):.2f}-"
                                f"{max(a['gbps'] for a in along if a['kind'] == k):.2f}"
                                for k in COPY_KINDS if any(a["kind"] == k for a in along))
                lines.append(f"    timed again alongside each {COPY_SHAPE} row (its % copy uses the faster): "
                             f"{per} GB/s")
    if refs["ufunc"]:
        lines.append("One NumPy ufunc call, np.negative(x) at (100, 50) with a fresh output: "
                     + ", ".join(f"{dt} {_fmt_measure(r)}" for dt, r in refs["ufunc"].items()))
    return "\n".join(lines)


def format_train(train, bprop_impl="cython"):
    if not train:
        return ""
    bp = train.get(bprop_impl)
    lines = [f"Training step: the book's {TRAIN['input']}-{TRAIN['hidden']}-{TRAIN['output']} net, batch "
             f"{TRAIN['batch']}, float64, forward + backward + SGD update"]
    cols = ["implementation", "time", "its time / bprop time"]
    table = []
    for impl in ("book", "numpy", "cython", "torch"):
        r = train.get(impl)
        if r is None:
            continue
        label = {"book": "book (NumPy layers)", "numpy": "bprop, NumPy backend", "cython": "bprop, compiled",
                 "torch": "PyTorch autograd"}[impl]
        sp = r["median"] / bp["median"] if (bp and impl != bprop_impl) else None
        table.append([label, _fmt_measure(r), _fmt_ratio(sp) if sp else "-"])
    lines.append(_render(cols, table))
    return "\n".join(lines)


def targets(data, bprop_impl="cython"):
    """Check the measurements against bprop's performance targets.

    Returns a list of dicts: ``target``, ``met`` (bool or None when not
    measured) and ``detail``.
    """
    rows = derived(data, bprop_impl)
    out = []

    def add(target, checks, fmt):
        """checks: list of (label, value, threshold, higher_is_better)."""
        if not checks:
            out.append({"target": target, "met": None, "detail": "not measured in this run"})
            return
        bad = [c for c in checks if (c[1] < c[2] if c[3] else c[1] > c[2])]
        worst = min(checks, key=lambda c: c[1] / c[2] if c[3] else c[2] / c[1])
        detail = f"worst {worst[0]}: {fmt(worst[1])} (target {'>=' if worst[3] else '<='} {fmt(worst[2])})"
        if bad:
            detail = f"{len(bad)} of {len(checks)} miss; " + detail
        else:
            detail = f"all {len(checks)} met; " + detail
        out.append({"target": target, "met": not bad, "detail": detail,
                    "misses": [{"where": c[0], "value": c[1], "threshold": c[2]} for c in bad]})

    def label(key):
        layer, size, dt, p = key
        return f"{layer} {size} {dt} {p}"

    ratio = lambda x: f"{x:.2f}x"  # noqa: E731
    checks = [(label(k), r["torch_ratio"], 1.0, True) for k, r in rows.items()
              if k[3] == "both" and r["torch_ratio"] is not None]
    add("vs PyTorch: torch/bprop >= 1.0 on forward+backward, every layer, size and dtype", checks, ratio)

    def book_checks(layer, threshold):
        return [(label(k), r["speedup"], threshold(k[1]), True) for k, r in rows.items()
                if k[0] == layer and r["speedup"] is not None and threshold(k[1]) is not None]

    add("vs the book: Relu >= 3x at (100, 50), >= 8x at (100, 784) and (1000, 1000) (every pass)",
        book_checks("relu", lambda s: {(100, 50): 3.0, (100, 784): 8.0, (1000, 1000): 8.0}.get(s)), ratio)
    add("vs the book: Sigmoid >= 3x (every size and pass)", book_checks("sigmoid", lambda s: 3.0), ratio)
    add("vs the book: SoftmaxWithLoss >= 5x (every size and pass)", book_checks("softmax", lambda s: 5.0), ratio)
    add("vs the book: Affine >= 1.4x at (100, 50, 10), never slower elsewhere (every pass)",
        book_checks("affine", lambda s: 1.4 if s == (100, 50, 10) else 1.0), ratio)
    add("vs the book: at the largest size every elementwise layer >= 3x (every pass)",
        [c for layer in ("relu", "sigmoid") for c in book_checks(layer, lambda s, l=layer: 3.0 if s == SIZES[l][-1]
                                                                   else None)], ratio)

    checks = [(label(k), r["gemm_ratio"], 1.05, False) for k, r in rows.items() if r["gemm_ratio"] is not None]
    add("Affine at (1024, 1024, 1024) and up: within 5% of the bare GEMMs (layer/GEMM <= 1.05)", checks,
        lambda x: f"{x:.3f}")

    checks = [(label(k), r["copy_pct"], 70.0, True) for k, r in rows.items()
              if k[0] in ("relu", "sigmoid") and k[3] == "forward" and k[1] == (4096, 4096)
              and r["copy_pct"] is not None]
    add("Relu and Sigmoid forward at (4096, 4096): >= 70% of copy bandwidth", checks, lambda x: f"{x:.0f}%")

    uf = data["references"]["ufunc"]
    checks = []
    for k, r in rows.items():
        if k[0] == "relu" and k[1] == (100, 50) and k[3] == "forward" and k[2] in uf and r[bprop_impl]:
            checks.append((label(k) + " / one ufunc call", r[bprop_impl]["median"] / uf[k[2]]["median"], 2.0, False))
    add("Per-call overhead: a Relu forward at (100, 50) costs little more than one NumPy ufunc call "
        "(here: <= 2x)", checks, ratio)

    train = data.get("train") or {}
    bp = train.get(bprop_impl)
    for impl, target, what in (("book", 1.3, "the book"), ("torch", 1.5, "a PyTorch autograd equivalent")):
        checks = []
        if bp and impl in train:
            checks.append((f"bprop vs {impl}", train[impl]["median"] / bp["median"], target, True))
        add(f"Training step (784-50-10, batch 100, float64): bprop >= {target}x {what}", checks, ratio)
    return out


def format_targets(tlist):
    lines = ["Targets:"]
    for t in tlist:
        state = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"  [{state}] {t['target']}")
        if t["met"] is not None:
            lines.append(f"      {t['detail']}")
            misses = sorted(t.get("misses", []), key=lambda m: m["value"] / m["threshold"]
                            if m["value"] < m["threshold"] else m["threshold"] / m["value"])
            for m in misses[:8]:
                lines.append(f"      miss: {m['where']}: {m['value']:.3g} (target {m['threshold']:g})")
            if len(misses) > 8:
                lines.append(f"      ... and {len(misses) - 8} more (see --json)")
    return "\n".join(lines)


def plot(path, data, bprop_impl="cython"):
    """Grouped bars per size: the forward+backward speed-up over the book, and the torch ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows = derived(data, bprop_impl)
    layers = [l for l in LAYERS if any(k[0] == l for k in rows)]
    ncols = min(2, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    for ax, layer in zip(axes.flat, layers):
        measured = [k[3] for k in rows if k[0] == layer]
        pass_ = "both" if "both" in measured else measured[0]
        sizes = [s for s in SIZES[layer] if (layer, s) in {(k[0], k[1]) for k in rows}]
        dts = [d for d in DTYPES if any(k[0] == layer and k[2] == d for k in rows)]
        series = [(f"speed-up vs book, {d}", d, "speedup") for d in dts]
        series += [(f"torch time / bprop time, {d}", d, "torch_ratio") for d in dts
                   if any(r["torch_ratio"] is not None for k, r in rows.items() if k[0] == layer and k[2] == d)]
        width = 0.8 / max(len(series), 1)
        for i, (lab, d, field) in enumerate(series):
            vals = [(rows.get((layer, s, d, pass_)) or {}).get(field) for s in sizes]
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(sizes))]
            bars = ax.bar([x for x, v in zip(xs, vals) if v], [v for v in vals if v], width, label=lab,
                          hatch="//" if field == "torch_ratio" else None, edgecolor="white")
            ax.bar_label(bars, labels=[f"{v:.2g}" for v in vals if v], fontsize=7, padding=1)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([" x ".join(map(str, s)) for s in sizes], fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.margins(y=0.15)
        what = "forward+backward" if pass_ == "both" else pass_
        ax.set_title(f"{LAYER_TITLES[layer]} ({what})", fontsize=10)
        ax.set_ylabel("ratio (> 1: bprop faster)")
    handles, labels = {}, []
    for ax in axes.flat:
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            if lb not in handles:
                handles[lb] = hd
                labels.append(lb)
    fig.legend([handles[lb] for lb in labels], labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    h = data["header"]
    fig.suptitle(f"bprop {h['bprop']} vs the book's NumPy layers and PyTorch {h.get('torch') or ''}: "
                 f"{h['cpu']}, {h['threads']} thread{'s' if h['threads'] != 1 else ''}, {h['date'][:10]}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if nrows == 1 else 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line

def _csv(choices, what):
    def parse(text):
        items = [s.strip().lower() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or repr(text)}; choose from {','.join(choices)}")
        return list(dict.fromkeys(items))
    return parse


def _positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return v
    return parse


def _sizes_arg(text):
    text = text.strip().lower()
    if text in ("all", "quick", "smallest"):
        return text
    raise argparse.ArgumentTypeError("expected all, quick or smallest")


def add_arguments(p):
    """Add the ``bench`` options to parser ``p``."""
    p.add_argument("--quick", action="store_true",
                   help="leave out the largest size of each layer and time shorter (about a minute)")
    p.add_argument("--layers", type=_csv(CHOICES, "layer"), default=list(CHOICES), metavar="LIST",
                   help=f"comma-separated, from {','.join(CHOICES)} (default all; train = the training step)")
    p.add_argument("--dtype", type=_csv(DTYPES, "dtype"), default=list(DTYPES), metavar="LIST",
                   help="comma-separated: float64,float32 (default both)")
    p.add_argument("--threads", type=_positive(int), default=1, metavar="N",
                   help="threads for bprop's kernels, NumPy's BLAS and PyTorch alike (default 1)")
    p.add_argument("--passes", type=_csv(PASSES, "pass"), default=list(PASSES), metavar="LIST",
                   help="comma-separated: forward,backward,both (default all three)")
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch even when it is installed")
    p.add_argument("--json", metavar="FILE", help="also write every measurement as JSON to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="draw the speed-ups as grouped bars (needs matplotlib)")
    p.add_argument("--progress", action="store_true", help="print each measurement to stderr as it is taken")
    # For tests and quick experiments; not part of the documented interface.
    p.add_argument("--sizes", type=_sizes_arg, default=None, help=argparse.SUPPRESS)
    p.add_argument("--min-time", type=_positive(float), default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=_positive(int), default=None, help=argparse.SUPPRESS)
    return p


def add_parser(subparsers):
    """Register the ``bench`` subcommand on the ``bprop`` command's subparsers."""
    p = subparsers.add_parser(
        "bench", help="time bprop's layers against the book's NumPy code and PyTorch",
        description="Time bprop's layers (compiled and NumPy backends) against the book's NumPy layers and "
                    "PyTorch's CPU kernels, per layer, size, dtype and pass. " + SENTENCE + ".")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _fail(msg):
    print(f"bprop bench: error: {msg}", file=sys.stderr)
    return 2


def run(args):
    """Run the benchmark described by parsed ``args``; returns the exit status."""
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib, which is not installed: pip install matplotlib "
                         "(or pip install 'bprop[plot]')")
    timing = QUICK_TIMING if args.quick else FULL_TIMING
    timing = (args.min_time or timing[0], args.repeats or timing[1])
    mode = args.sizes or ("quick" if args.quick else "all")
    layers = [l for l in args.layers if l in LAYERS]
    if mode == "smallest":
        sizes = {l: SIZES[l][:1] for l in LAYERS}
    elif mode == "quick":
        sizes = {l: SIZES[l][:-QUICK_DROP] for l in LAYERS}
    else:
        sizes = dict(SIZES)
    impls = [i for i in IMPLS if not (i == "torch" and args.no_torch)]
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.progress else None
    start = time.perf_counter()
    with thread_limits(args.threads, with_torch=not args.no_torch) as note:
        h = header(args.threads, timing, args.quick, note, with_torch=not args.no_torch)
        if args.no_torch:
            h["torch_skipped"] = "not compared (--no-torch)"
        elif impl_missing_reason("torch"):
            h["torch_skipped"] = "not importable"
            h["note"] = "; ".join(filter(None, [h.get("note"), impl_missing_reason("torch")]))
        print(format_header(h), flush=True)
        for impl in impls:
            if impl != "torch" and impl_missing_reason(impl):
                print(f"{impl}: skipped: {impl_missing_reason(impl)}")
        print(flush=True)
        bprop_impl = h["bprop_impl"]

        def show(layer, data):
            print(format_tables(data, bprop_impl, only=layer), flush=True)

        try:
            data = run_benchmarks(layers, args.dtype, args.passes, sizes, impls, timing, args.threads, log=log,
                                  references=True, on_layer=show)
            train_impls = [i for i in ("book", "numpy", "cython", "torch") if i in impls
                           and not impl_missing_reason(i)]
            data["train"] = measure_train_step(train_impls, timing, log) if "train" in args.layers else {}
        except Mismatch as exc:
            return _fail(f"stopped: {exc} (a wrong result is not timed)")
    data["header"] = h
    data["header"]["load_average_end"] = _loadavg()
    refs = format_references(data, args.threads)
    if refs:
        print(refs)
        print()
    tr = format_train(data["train"], bprop_impl)
    if tr:
        print(tr)
        print()
    data["targets"] = targets(data, bprop_impl)
    print(format_targets(data["targets"]))
    elapsed = time.perf_counter() - start
    data["elapsed_s"] = elapsed
    load = data["header"]["load_average_end"]
    print(f"\n({elapsed:.0f} s" + (f"; load average at end {load:.2f})" if load is not None else ")"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=_json_default)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot(args.plot, data, bprop_impl)
        print(f"wrote {args.plot}")
    return 0


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m bprop.bench",
        description="Time bprop's layers against the book's NumPy layers and PyTorch. " + SENTENCE + ".")
    return add_arguments(p)


def main(argv=None):
    """``python -m bprop.bench``: the same as ``bprop bench``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("bprop bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
