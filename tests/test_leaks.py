"""Leaks: 100,000 forward/backward calls, good and failing mixed, on both
backends (and straight into the compiled kernels), leave neither Python
memory (tracemalloc) nor the process's resident memory (RSS) growing, and
take no lasting reference to the caller's arrays.

The failing calls matter most: an error path that forgets to drop a
reference taken before a check fails (an argument, a buffer, a recycled
result) leaks the whole array it points to, every call.
"""
import gc
import os
import resource
import sys
import tracemalloc

import numpy as np

from bprop import Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss, StateError
from bprop import _backend
from bprop import functions as F

CALLS_PER_BACKEND = 50_000  # x 2 backends = 100,000 calls
WARMUP = 5_000
RSS_PHASE = 25_000  # then the rest with tracemalloc on (it slows allocation down)

#: Python memory allocated during the traced phase and still held at its end:
#: the layers' latest state arrays (about 9 KiB here), never one object per call.
TRACED_LIMIT = 64 * 1024
#: Growth over the second half of the traced phase alone, where the layers'
#: state is the same at both ends (measured: up to about 1 KiB of noise;
#: one leaked object per round of calls would be about 9 KiB).
TRACED_HALF_LIMIT = 4 * 1024
#: Resident memory growth over the RSS phase; one leaked output per call would be ~25 MiB.
RSS_LIMIT = 4 * 1024 * 1024

compiled = _backend.compiled_module()


def rss_bytes():
    """Resident set size now (Linux ``/proc/self/statm``), else the peak from ``getrusage``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _fails(exc, fn, *args):
    def op():
        try:
            fn(*args)
        except exc:
            return
        raise AssertionError(f"{fn} did not raise {exc}")

    return op


def _operations(dt):
    """One list of calls, about a third of them failing; inputs are shared, so a kept reference shows."""
    r = np.random.default_rng(0)
    x = r.standard_normal((8, 16)).astype(dt)  # 1 KiB in float64: a leaked output per call is visible in RSS
    dout = r.standard_normal((8, 16)).astype(dt)
    W = r.standard_normal((16, 10)).astype(dt)
    b = r.standard_normal(10).astype(dt)
    dout_a = r.standard_normal((8, 10)).astype(dt)
    t = r.integers(0, 16, 8)
    onehot = np.eye(16, dtype=dt)[t]
    relu, sigmoid, affine, swl, swl1, mul = Relu(), Sigmoid(), Affine(W, b), SoftmaxWithLoss(), SoftmaxWithLoss(), MulLayer()
    shared = [x, dout, W, b, dout_a, t, onehot]
    ops = [
        lambda: relu.forward(x),
        lambda: relu.backward(dout),
        lambda: sigmoid.forward(x),
        lambda: sigmoid.backward(dout),
        lambda: affine.forward(x),
        lambda: affine.backward(dout_a),
        lambda: swl.forward(x, t),
        lambda: swl.backward(),
        lambda: swl1.forward(x, onehot),
        lambda: swl1.backward(),
        lambda: mul.forward(x, dout),
        lambda: mul.backward(dout),
        lambda: F.softmax(x),
        lambda: F.cross_entropy_error(F.sigmoid(x), t),
        lambda: F.relu(x),
        # Failing calls, each with fresh bad arguments:
        _fails(TypeError, lambda: Relu().forward(np.ones(5, dtype=complex))),
        _fails(TypeError, lambda: Sigmoid().forward([1.0, 2.0])),
        _fails(ValueError, lambda: Affine(W, b).forward(np.ones((8, 5), dt))),
        _fails(ValueError, lambda: Affine(W, np.ones(3, dt)).forward(x)),
        _fails(StateError, lambda: Relu().backward(dout)),
        _fails(ValueError, lambda: relu.backward(np.ones((16, 8), dt))),
        _fails(ValueError, lambda: sigmoid.backward(np.ones(7, dt))),
        _fails(ValueError, lambda: affine.backward(np.ones((9, 10), dt))),
        _fails(ValueError, lambda: SoftmaxWithLoss().forward(x, np.full(8, -1))),
        _fails(TypeError, lambda: SoftmaxWithLoss().forward(x, t.astype(dt))),
        _fails(ValueError, lambda: SoftmaxWithLoss().forward(x, np.ones((8, 3), dt))),
        _fails(ValueError, lambda: F.cross_entropy_error(F.softmax(x), np.full(8, 99))),
        _fails(ValueError, lambda: F.softmax(np.array(1.0))),
    ]
    if compiled is not None:
        mask = np.zeros(128, bool)
        flat = x.reshape(-1)
        y = np.empty_like(x)
        ops += [
            # Straight into the kernels: buffers acquired, then a check fails.
            _fails(ValueError, lambda: compiled.relu_forward(flat, np.empty(127, dt), mask)),
            _fails(ValueError, lambda: compiled.relu_backward(flat, np.zeros(127, bool), np.empty(128, dt))),
            _fails(ValueError, lambda: compiled.sigmoid_backward(flat, flat, np.empty(129, dt))),
            _fails(ValueError, lambda: compiled.add_bias(np.zeros((8, 10), dt), np.zeros(9, dt))),
            _fails(ValueError, lambda: compiled.column_sum(x, np.empty(15, dt))),
            _fails(ValueError, lambda: compiled.softmax_forward(x, np.empty((8, 15), dt))),
            _fails(ValueError, lambda: compiled.softmax_xent_labels_forward(x, np.full(8, 16, np.int64), y)),
            _fails(ValueError, lambda: compiled.softmax_xent_labels_backward(x, np.full(8, -1, np.int64), y)),
            _fails(ValueError, lambda: compiled.softmax_xent_onehot_backward(x, np.ones((7, 16), dt), y)),
            # Wrong dtype, layout or type after other arguments were accepted.
            _fails((TypeError, ValueError), lambda: compiled.relu_forward(flat, np.empty(128, np.float16), mask)),
            _fails((TypeError, ValueError), lambda: compiled.sigmoid_forward(np.ones(4, np.int64), np.ones(4, np.int64))),
            _fails((TypeError, ValueError), lambda: compiled.softmax_forward(x[:, ::2], np.empty((8, 8), dt))),
            _fails((TypeError, ValueError), lambda: compiled.column_sum(x, np.empty(16, dt)[::-1])),
            _fails(TypeError, lambda: compiled.add_bias([[1.0]], np.ones(1, dt))),
            lambda: compiled.relu_forward(flat, np.empty(128, dt), mask),
        ]
    return ops, shared


def _run(ops, calls):
    """At least ``calls`` calls, in whole rounds of ``ops``: the layers then hold the same state at every checkpoint."""
    for _ in range(-(-calls // len(ops))):
        for op in ops:
            op()


def test_no_growth_over_many_calls(backend):
    ops64, shared64 = _operations(np.float64)
    ops32, shared32 = _operations(np.float32)
    ops, shared = ops64 + ops32, shared64 + shared32
    _run(ops, WARMUP)
    gc.collect()  # a reference cycle not yet collected would count as a kept reference
    refs = [sys.getrefcount(a) for a in shared]

    gc.collect()
    rss0 = rss_bytes()
    _run(ops, RSS_PHASE)
    gc.collect()
    rss_growth = rss_bytes() - rss0

    half = (CALLS_PER_BACKEND - WARMUP - RSS_PHASE) // 2
    tracemalloc.start()
    try:
        gc.collect()
        traced0 = tracemalloc.get_traced_memory()[0]
        _run(ops, half)
        gc.collect()
        traced_mid = tracemalloc.get_traced_memory()[0]
        _run(ops, half)
        gc.collect()
        traced_end = tracemalloc.get_traced_memory()[0]
        top = tracemalloc.take_snapshot().statistics("lineno")[:5]
    finally:
        tracemalloc.stop()

    after = [sys.getrefcount(a) for a in shared]
    assert after == refs, f"a call kept a reference to the caller's arrays: reference counts {refs} -> {after}"
    assert traced_end - traced0 <= TRACED_LIMIT, f"Python memory grew by {traced_end - traced0} bytes; largest: {top}"
    assert traced_end - traced_mid <= TRACED_HALF_LIMIT, (
        f"Python memory grew by {traced_end - traced_mid} bytes over the last {half} calls; largest: {top}"
    )
    assert rss_growth <= RSS_LIMIT, f"RSS grew by {rss_growth / 2**20:.1f} MiB over {RSS_PHASE} calls"
