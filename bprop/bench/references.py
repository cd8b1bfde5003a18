"""Reference measurements: the work each pass does, copy bandwidth, bare GEMMs, one ufunc call."""
import contextlib

import numpy as np

from .cases import make_inputs
from .timing import time_call, time_calls

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
