"""Threads: every compiled kernel releases the GIL, and separate layer
instances used from several threads at once give exactly the single-threaded
results.

One layer instance holds the state of its last forward (``mask``, ``out``,
``x``, ``y``), as in the book, so it is not meant to be shared between
threads; separate instances share nothing but the read-only parameters
passed to them.
"""
import ctypes
import sys
import threading
import time
from array import array

import numpy as np
import pytest

import bprop
from conftest import KERNELS, NOT_KERNELS
from bprop import Affine, AddLayer, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from bprop import _backend
from bprop import functions as F

compiled = _backend.compiled_module()
needs_compiled = pytest.mark.skipif(compiled is None, reason="bprop._kernels is not built")

# --------------------------------------------------------------------------
# GIL release, kernel by kernel

_NO_SWITCH = 60.0  # seconds: a GIL switch interval long enough that no forced switch happens
_TICK = 1e-4  # seconds the counting thread sleeps (without the GIL) between ticks
_MIN_CALL = 5e-3  # seconds: grow the arrays until one kernel call takes this long


def _kernel_args(name, dt, n):
    """Arguments for one kernel call over about ``n`` elements."""
    c = 256
    rows = max(n // c, 1)
    v = lambda *s: np.linspace(-4, 4, int(np.prod(s)), dtype=dt).reshape(s)  # noqa: E731
    labels = (np.arange(rows) % c).astype(np.int64)
    onehot = np.zeros((rows, c), dt)
    onehot[np.arange(rows), labels] = 1
    return {
        "relu_forward": lambda: (v(n), np.empty(n, dt), np.empty(n, bool)),
        "relu_backward": lambda: (v(n), v(n) > 0, np.empty(n, dt)),
        "sigmoid_forward": lambda: (v(n), np.empty(n, dt)),
        "sigmoid_backward": lambda: (v(n), v(n), np.empty(n, dt)),
        "add_bias": lambda: (v(rows, c), v(c)),
        "column_sum": lambda: (v(rows, c), np.empty(c, dt)),
        "affine_forward": lambda: (v(rows, c), v(c, c), v(c), np.empty((rows, c), dt)),
        "affine_backward": lambda: (v(rows, c), v(rows, c), v(c, c), True),
        "softmax_forward": lambda: (v(rows, c), np.empty((rows, c), dt)),
        "softmax_xent_labels_forward": lambda: (v(rows, c), labels, np.empty((rows, c), dt)),
        "softmax_xent_onehot_forward": lambda: (v(rows, c), onehot, np.empty((rows, c), dt)),
        "softmax_xent_labels_backward": lambda: (np.full((rows, c), 1 / c, dt), labels, np.empty((rows, c), dt)),
        "softmax_xent_onehot_backward": lambda: (np.full((rows, c), 1 / c, dt), onehot, np.empty((rows, c), dt)),
        "batchnorm_forward": lambda: (v(rows, c), v(c), v(c), 1e-6, np.empty((rows, c), dt), np.empty((rows, c), dt)),
        "batchnorm_backward": lambda: (v(rows, c), v(rows, c), v(c), np.ones(c, dt), np.empty((rows, c), dt)),
        "sgd_update": lambda: (v(n), v(n), 0.1),
        "momentum_update": lambda: (v(n), v(n), v(n), np.empty(n, dt), 0.1, 0.9),
        "nesterov_update": lambda: (v(n), v(n), v(n), 0.1, 0.9),
        "adagrad_update": lambda: (v(n), v(n), np.ones(n, dt), 0.1),
        "rmsprop_update": lambda: (v(n), v(n), np.ones(n, dt), 0.1, 0.9),
        "adam_update": lambda: (v(n), v(n), v(n), np.ones(n, dt), 0.01, 0.9, 0.999),
        **_conv_args(v, dt, n),
    }[name]()


def _conv_args(v, dt, n):
    """Convolution and pooling kernels over about ``n`` input elements: (N, 4, 32, 32) images,
    3x3 windows with stride 1 and pad 1, 2x2/2 pooling."""
    imgs = max(n // 4096, 1)
    x, col_shape = (imgs, 4, 32, 32), (imgs, 36, 1024)
    arg = np.zeros((imgs, 4, 16, 16), np.uint8)
    return {
        "im2col_rows": lambda: (v(*x), 3, 3, 1, 1, np.empty((imgs * 1024, 36), dt)),
        "col2im_rows": lambda: (v(imgs * 1024, 36), 3, 3, 1, 1, np.empty(x, dt)),
        "im2col_kp": lambda: (v(*x), 3, 3, 1, 1, np.empty(col_shape, dt)),
        "col2im_kp": lambda: (v(*col_shape), 3, 3, 1, 1, np.empty(x, dt)),
        "pool_forward": lambda: (v(*x), 2, 2, 2, 0, np.empty((imgs, 4, 16, 16), dt), np.empty(arg.shape, np.uint8)),
        "pool_backward": lambda: (v(imgs, 4, 16, 16), arg, 2, 2, 2, 0, np.empty(x, dt)),
        "conv_bias_add": lambda: (v(*x), v(4)),
        "conv_bias_grad": lambda: (v(*x), np.empty(4, dt)),
        "conv_forward": lambda: (v(*x), v(8, 4, 3, 3), v(8), 1, 1, np.empty(col_shape, dt), np.empty((imgs, 8, 32, 32), dt)),
        "conv_backward_data": lambda: (v(imgs, 8, 32, 32), v(8, 4, 3, 3), 1, 1, np.empty(x, dt)),
    }




def main_thread_progress(calls):
    """Run ``calls`` one after another in a worker thread while this thread counts.

    Returns, for each call, how many times this (main) thread ran Python code
    while the worker was inside the call, and the calls' durations.

    The switch interval is set so long that the GIL never changes hands by
    force: only a thread that lets go of it (a ``nogil`` block, a sleep)
    lets another thread run. The counting thread lets go between ticks, so
    the worker never waits for it; the worker lets go only inside calls that
    release the GIL. A call that keeps the GIL therefore sees no tick at all,
    however busy the machine is.
    """
    spans, done, ticks = [], threading.Event(), array("d")

    def worker():
        try:
            for c in calls:
                t0 = time.perf_counter()
                c()
                spans.append((t0, time.perf_counter()))
        finally:
            done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(_NO_SWITCH)
    try:
        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        while not done.is_set():
            ticks.append(time.perf_counter())  # taken while holding the GIL
            time.sleep(_TICK)
        thread.join()
    finally:
        sys.setswitchinterval(old)
    t = np.frombuffer(ticks, dtype=np.float64)
    return [int(np.count_nonzero((t > a) & (t < b))) for a, b in spans], [b - a for a, b in spans]


def _releases_gil(make_call, repeats=4):
    progress, durations = main_thread_progress([make_call() for _ in range(repeats)])
    return sum(progress) > 0, progress, durations


def test_detector_tells_holding_from_releasing():
    # A C function called through ctypes.PyDLL keeps the GIL; time.sleep releases it.
    usleep = ctypes.PyDLL(None).usleep
    ok, progress, durations = _releases_gil(lambda: (lambda: usleep(10_000)), repeats=4)
    assert not ok, (progress, durations)
    ok, progress, durations = _releases_gil(lambda: (lambda: time.sleep(0.01)), repeats=4)
    assert ok and min(progress) > 0, (progress, durations)


@needs_compiled
def test_every_kernel_has_a_gil_case():
    public = {n for n in dir(compiled) if not n.startswith("_") and callable(getattr(compiled, n))}
    missing = public - NOT_KERNELS - set(KERNELS)
    assert not missing, f"add GIL cases to this module (and tests/test_bad_input.py) for: {sorted(missing)}"


@pytest.fixture
def kernel_threads(request):
    """Set the compiled kernels' OpenMP thread count for one test."""
    old = compiled.get_num_threads()
    compiled.set_num_threads(request.param)
    if compiled.get_num_threads() != request.param:
        compiled.set_num_threads(old)
        pytest.skip("built without OpenMP")
    yield request.param
    compiled.set_num_threads(old)


@needs_compiled
@pytest.mark.parametrize("kernel_threads", [1, 2], indirect=True)
@pytest.mark.parametrize("dt", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", KERNELS)
def test_kernel_releases_the_gil(name, dt, kernel_threads):
    if not hasattr(compiled, name):
        pytest.skip(f"{name} is gone from bprop._kernels")
    kernel = getattr(compiled, name)
    n = 1 << 18
    while True:  # grow the arrays until a warm call takes _MIN_CALL (at most 64 MiB per array)
        args = _kernel_args(name, dt, n)
        kernel(*args)
        # The fastest of three calls: one slowed by a busy machine must not stop the growth early.
        fastest = min(_timed(kernel, args) for _ in range(3))
        if fastest > _MIN_CALL or n >= 1 << 23:
            break
        n *= 2
    for attempt in range(5):  # a busy machine may not schedule the counting thread; holding the GIL never passes
        ok, progress, durations = _releases_gil(lambda: (lambda: kernel(*args)))
        if ok:
            return
    pytest.fail(f"{name} seems to hold the GIL: main-thread ticks per call {progress}, "
                f"call durations {[f'{d * 1e3:.1f} ms' for d in durations]}")


def _timed(kernel, args):
    t0 = time.perf_counter()
    kernel(*args)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------
# Separate instances in several threads: identical results

N_THREADS = 3
ROUNDS = 4


def _data(seed, dt):
    r = np.random.default_rng(seed)
    x = r.standard_normal((100, 120)).astype(dt)
    return {
        "x": x,
        "dout": r.standard_normal(x.shape).astype(dt),
        "W": (r.standard_normal((120, 50)) * 0.1).astype(dt),
        "b": r.standard_normal(50).astype(dt),
        "dout_a": r.standard_normal((100, 50)).astype(dt),
        "t": r.integers(0, 120, 100),
    }


def _relu(d):
    lay = Relu()
    return lay.forward(d["x"]), lay.backward(d["dout"])


def _sigmoid(d):
    lay = Sigmoid()
    return lay.forward(d["x"]), lay.backward(d["dout"])


def _affine(d):
    lay = Affine(d["W"], d["b"])
    return lay.forward(d["x"]), lay.backward(d["dout_a"]), lay.dW, lay.db


def _softmax_labels(d):
    lay = SoftmaxWithLoss()
    return lay.forward(d["x"], d["t"]), lay.backward(), lay.y


def _softmax_onehot(d):
    lay = SoftmaxWithLoss()
    onehot = np.eye(d["x"].shape[1], dtype=d["x"].dtype)[d["t"]]
    return lay.forward(d["x"], onehot), lay.backward(), lay.y


def _functions(d):
    return F.sigmoid(d["x"]), F.relu(d["x"]), F.softmax(d["x"]), F.cross_entropy_error(F.softmax(d["x"]), d["t"])


def _mul_add(d):
    m, a = MulLayer(), AddLayer()
    return m.forward(d["x"], d["dout"]), m.backward(d["x"]), a.forward(d["x"], d["dout"]), a.backward(d["x"])


def _network(d):
    # Affine -> Relu -> Affine -> SoftmaxWithLoss, forward and backward, as in the book's TwoLayerNet.
    a1, r1, a2, s = Affine(d["W"], d["b"]), Relu(), Affine(d["W"][:50, :10].copy(), d["b"][:10]), SoftmaxWithLoss()
    loss = s.forward(a2.forward(r1.forward(a1.forward(d["x"]))), d["t"] % 10)
    a1.backward(r1.backward(a2.backward(s.backward())))
    return loss, a1.dW, a1.db, a2.dW, a2.db


WORKLOADS = {
    "Relu": _relu, "Sigmoid": _sigmoid, "Affine": _affine, "SoftmaxWithLoss(labels)": _softmax_labels,
    "SoftmaxWithLoss(one-hot)": _softmax_onehot, "functions": _functions, "MulLayer+AddLayer": _mul_add,
    "network": _network,
}


def _flatten(result):
    return [np.asarray(r) for r in (result if isinstance(result, tuple) else (result,))]


@pytest.mark.parametrize("dt", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("workload", WORKLOADS)
def test_threads_match_single_threaded(backend, workload, dt):
    fn = WORKLOADS[workload]
    data = [_data(seed, dt) for seed in range(N_THREADS)]
    expected = [_flatten(fn(d)) for d in data]  # single-threaded
    results = [[None] * ROUNDS for _ in range(N_THREADS)]
    errors = []
    barrier = threading.Barrier(N_THREADS)

    def work(i):
        try:
            barrier.wait()
            for r in range(ROUNDS):
                results[i][r] = _flatten(fn(data[i]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for i in range(N_THREADS):
        for r in range(ROUNDS):
            for got, want in zip(results[i][r], expected[i]):
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want, err_msg=f"thread {i}, round {r}")


def test_one_instance_holds_its_last_forward():
    """Why instances are not shared: backward uses the state of the latest forward, as in the book."""
    lay = Relu()
    lay.forward(np.array([1.0, -1.0]))
    lay.forward(np.array([-1.0, 1.0]))  # another thread's forward would do the same
    np.testing.assert_array_equal(lay.backward(np.array([5.0, 5.0])), [0.0, 5.0])


@needs_compiled
def test_backend_switch_is_process_wide():
    """The backend is one global setting: a thread sees the backend chosen elsewhere."""
    seen = []
    with bprop.use_backend("numpy"):
        th = threading.Thread(target=lambda: seen.append(bprop.backend()))
        th.start()
        th.join()
    assert seen == ["numpy"]
