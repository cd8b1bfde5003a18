"""The portable sigmoid and softmax loops on NumPy's own exp, negative, add and divide (numpy_loops.h).

Builds without per-CPU versions take them by default on x86-64; the tests
here switch them on in any build. Sigmoid must give the book's formula's
bits, 1 / (1 + np.exp(-x)), except in blocks where exp(-x) overflows, which
must take bprop's overflow-free loop; softmax must agree with bprop's own
exp to a few ulp. The accuracy against a long-double reference is
test_exp_accuracy.py's, through the ``simd`` fixture's "numpy-loops".
"""
import contextlib
import platform

import numpy as np
import pytest

from bprop import _backend, _numpy_kernels
from conftest import assert_close, avx512_module, ulp_apart

pytestmark = pytest.mark.skipif(not _backend.compiled_available(), reason="no compiled kernels in a pure install")

DTYPES = [np.float64, np.float32]
BLOCK = 1024  # BP_NP_BLOCK
LENGTHS = [0, 1, 7, 8, 9, 17, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17]
GUARD = 7.25
#: exp(-x) overflows below these.
OVERFLOWS = {np.float64: -720.0, np.float32: -95.0}


@contextlib.contextmanager
def loops(numpy_loops, threads=1):
    """The compiled module running its portable loops, on NumPy's loops or not."""
    k = _backend.compiled_module()
    simd, borrowed, n = k.get_simd(), k._numpy_loops(), k.get_num_threads()
    try:
        k.set_simd("portable")
        k._numpy_loops(numpy_loops)
        if numpy_loops and k.exp_source() != "numpy":
            pytest.skip("NumPy's loops were not found or failed their check at import")
        k.set_num_threads(threads)
        yield k
    finally:
        k.set_simd(simd)
        k._numpy_loops(borrowed)
        k.set_num_threads(n)


def _sigmoid(k, x):
    """k.sigmoid_forward(x) into an output with guard cells either side, which must stay."""
    buf = np.full(x.size + 2, GUARD, x.dtype)
    k.sigmoid_forward(x, buf[1:-1])
    assert buf[0] == GUARD and buf[-1] == GUARD, "wrote outside the output"
    return buf[1:-1]


def _book(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_sigmoid_gives_the_books_bits(dtype):
    rng = np.random.default_rng(0)
    with loops(True) as k:
        for n in LENGTHS:
            x = (rng.standard_normal(n) * 12).astype(dtype)
            x[: min(n, 5)] = np.array([np.nan, np.inf, -np.inf, -0.0, 60.0])[: min(n, 5)]
            assert _sigmoid(k, x).tobytes() == _book(x).tobytes(), f"n={n}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_a_block_where_exp_overflows_takes_the_overflow_free_loop(dtype, threads):
    """x below the overflow edge, in one block (of one thread's chunk with two): that block
    gives bprop's own loop's results (above 0, where the book's formula gives 0), the others the
    book's bits."""
    n = 80 * BLOCK  # above the kernels' parallel threshold
    x = (np.random.default_rng(1).standard_normal(n) * 12).astype(dtype)
    hit = n - 2 * BLOCK + 5
    x[hit] = OVERFLOWS[dtype]
    with loops(True, threads) as k:
        got = _sigmoid(k, x)
    with loops(False) as k:
        own = _sigmoid(k, x)
    block = slice(hit - hit % BLOCK, hit - hit % BLOCK + BLOCK)
    assert got[hit] > 0 and _book(x)[hit] == 0
    assert got[block].tobytes() == own[block].tobytes()
    rest = np.ones(n, bool)
    rest[block] = False
    assert got[rest].tobytes() == _book(x)[rest].tobytes()
    # The flag does not outlive its block: the next call, without overflow, is the book's again.
    with loops(True, threads) as k:
        y = x.copy()
        y[hit] = 0
        assert _sigmoid(k, y).tobytes() == _book(y).tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_sigmoid_in_place(dtype):
    x = (np.random.default_rng(2).standard_normal(2 * BLOCK + 3) * 12).astype(dtype)
    x[BLOCK + 1] = OVERFLOWS[dtype]
    with loops(True) as k:
        expected = k.sigmoid_forward(x, None)
        y = x.copy()
        k.sigmoid_forward(y, y)
    assert y.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_softmax_kernels_agree_with_bprops_own_exp(dtype):
    rng = np.random.default_rng(3)
    for c in [1, 2, 9, 100, 1000, 3000]:
        x = (rng.standard_normal((7, c)) * 20).astype(dtype)
        x[1, 0] = np.nan
        labels = np.arange(7) % c
        res = {}
        for on in (True, False):
            with loops(on) as k:
                y = np.empty_like(x)
                k.softmax_forward(x, y)
                y2 = np.empty_like(x)
                loss = k.softmax_xent_labels_forward(np.nan_to_num(x), labels, y2)
                res[on] = y, y2, loss
        for a, b in zip(res[True][:2], res[False][:2]):
            assert float(ulp_apart(a, b, dtype).max(initial=0)) <= 4, f"c={c}"
        twin = np.empty_like(x)
        loss = _numpy_kernels.softmax_xent_labels_forward(np.nan_to_num(x), labels, twin)
        assert_close(res[True][1], twin)
        np.testing.assert_allclose(res[True][2], loss, rtol=1e-12 if dtype == np.float64 else 1e-6)


def test_the_avx512_loops_keep_their_own_exp():
    k = avx512_module()
    simd, borrowed = k.get_simd(), k._numpy_loops()
    try:
        k.set_simd("avx512")
        k._numpy_loops(True)
        assert k.exp_source() == "bprop"
    finally:
        k.set_simd(simd)
        k._numpy_loops(borrowed)


def test_by_default_only_x86_builds_without_per_cpu_versions_take_them():
    k = _backend.compiled_module()
    x86_64 = platform.machine().lower() in ("x86_64", "amd64")
    assert k._numpy_loops() == (x86_64 and not k.per_cpu_versions())
