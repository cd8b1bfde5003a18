"""The hand-written AVX-512 loops against the portable ones, on every tail length.

ReLU must agree bit for bit; sigmoid and softmax, whose exp differs, within
2 ulp of each other (each is held to the long-double reference in
test_exp_accuracy.py). Every call also checks that nothing past the last
element is written: the AVX-512 tails use masked stores.
"""
import numpy as np
import pytest

from bprop import _backend
from conftest import avx512_module, special_values, ulp_apart

pytestmark = pytest.mark.skipif(not _backend.compiled_available(), reason="no compiled kernels in a pure install")

DTYPES = [np.float64, np.float32]
LENGTHS = list(range(0, 131)) + [255, 256, 257, 1000]
GUARD = 7.25


def _run(path, fn, *shapes_dtypes):
    """Call ``fn(*outs)`` on outputs with guard cells behind them, under ``path``; return the outputs."""
    k = _backend.compiled_module()
    previous = k.get_simd()
    bufs = [np.full(n + 9, GUARD, dtype=dt) for n, dt in shapes_dtypes]
    # Offset by one element: the loops must not assume 64-byte alignment.
    outs = [b[1:n + 1] for b, (n, _) in zip(bufs, shapes_dtypes)]
    try:
        k.set_simd(path)
        fn(k, *outs)
    finally:
        k.set_simd(previous)
    for b, (n, dt) in zip(bufs, shapes_dtypes):
        g = np.asarray(GUARD).astype(dt)
        assert (b[0] == g) and (b[n + 1:] == g).all(), f"{path}: wrote outside the {n} elements"
    return outs


@pytest.fixture(scope="module", autouse=True)
def needs_avx512():
    avx512_module()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_relu_paths_agree_bit_for_bit(dtype):
    for n in LENGTHS:
        x = special_values(n, dtype, n)
        dout = special_values(n, dtype, n + 1000)
        res = {}
        for path in ("portable", "avx512"):
            out, mask8 = _run(path, lambda k, o, m: k.relu_forward(x, o, m.view(bool)), (n, dtype), (n, np.uint8))
            mask = mask8.view(bool)
            (dx,) = _run(path, lambda k, d: k.relu_backward(dout, mask, d), (n, dtype))
            res[path] = (out, mask8, dx)
        for a, b, what in zip(res["portable"], res["avx512"], ("out", "mask", "dx")):
            assert a.tobytes() == b.tobytes(), f"relu {what}, n={n}, {np.dtype(dtype)}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_sigmoid_paths_agree(dtype):
    for n in LENGTHS:
        x = special_values(n, dtype, n)
        a, = _run("portable", lambda k, o: k.sigmoid_forward(x, o), (n, dtype))
        b, = _run("avx512", lambda k, o: k.sigmoid_forward(x, o), (n, dtype))
        worst = float(ulp_apart(a, b, dtype).max(initial=0))
        assert worst <= 2, f"sigmoid n={n} {np.dtype(dtype)}: paths {worst} ulp apart"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_softmax_paths_agree(dtype):
    for c in [1, 2, 7, 8, 9, 15, 16, 17, 33, 100, 257]:
        x = np.stack([special_values(c, dtype, c + s) for s in range(3)])
        x[np.isnan(x)] = 0.0  # a NaN turns the whole row NaN: keep most rows finite
        x[1, 0] = np.nan
        res = {}
        for path in ("portable", "avx512"):
            y, = _run(path, lambda k, o: k.softmax_forward(x, o.reshape(x.shape)), (x.size, dtype))
            res[path] = y
        worst = float(ulp_apart(res["portable"], res["avx512"], dtype).max(initial=0))
        assert worst <= 2, f"softmax c={c} {np.dtype(dtype)}: paths {worst} ulp apart"
