"""The AVX-512 loops' streaming stores, for results above the stream threshold.

With the threshold lowered to 0 every call streams, so the small arrays
here take the streaming path: a masked head up to the output's first
64-byte boundary, aligned streaming stores, a masked tail (and for the ReLU
mask, lines put together across blocks). Each result must equal, bit for
bit, the non-streaming AVX-512 loop's and the portable loop's (sigmoid
forward: within 2 ulp of the portable loop, whose exp differs; sigmoid
backward and the cross-entropy gradients have no AVX-512 loop but the
streaming one, so there the first two are the same loop), for every tail
length and every position of the output relative to a cache line, and
nothing outside the output may be written.
"""
import numpy as np
import pytest

from bprop import _backend
from conftest import avx512_module, special_values, ulp_apart

pytestmark = pytest.mark.skipif(not _backend.compiled_available(), reason="no compiled kernels in a pure install")

DTYPES = [np.float64, np.float32]
IDS = ["float64", "float32"]
LENGTHS = list(range(0, 131)) + [191, 192, 193, 255, 256, 257, 1000]
GUARD = 7.25
LINE = 64


@pytest.fixture(scope="module")
def k():
    return avx512_module()


@pytest.fixture
def restore(k):
    """Put back the SIMD path and the stream threshold a test changes."""
    simd, threshold = k.get_simd(), k._stream_min_bytes()
    try:
        yield
    finally:
        k.set_simd(simd)
        k._stream_min_bytes(threshold)


class Guarded:
    """n elements starting `offset` elements past a 64-byte boundary, guard cells all around."""

    def __init__(self, n, dtype, offset):
        dtype = np.dtype(dtype)
        per_line = LINE // dtype.itemsize
        raw = np.full(n + offset + 3 * per_line, GUARD, dtype=dtype)
        start = (-raw.ctypes.data % LINE) // dtype.itemsize + per_line
        self.buf = raw[start - per_line:]
        self.lo, self.hi = per_line + offset, per_line + offset + n
        self.out = self.buf[self.lo:self.hi]
        assert n == 0 or (self.out.ctypes.data - offset * dtype.itemsize) % LINE == 0

    def check(self, what):
        g = np.asarray(GUARD).astype(self.buf.dtype)
        assert (self.buf[:self.lo] == g).all() and (self.buf[self.hi:] == g).all(), f"{what}: wrote outside the output"


def _three_ways(k, fn, outs, what):
    """fn(*out arrays) on the portable loops, then AVX-512 without and with streaming; guarded outputs."""
    res = {}
    for path, threshold in (("portable", 0), ("avx512", 1 << 62), ("avx512", 0)):
        k.set_simd(path)
        k._stream_min_bytes(threshold)
        gs = [Guarded(n, dt, off) for n, dt, off in outs]
        fn(*[g.out for g in gs])
        for g in gs:
            g.check(f"{what} on {path}, threshold {threshold}")
        res["stream" if path == "avx512" and threshold == 0 else path] = [g.out.tobytes() for g in gs]
    return res


def _same(res, what, with_portable=True):
    assert res["stream"] == res["avx512"], f"{what}: streaming differs from the AVX-512 loop"
    if with_portable:
        assert res["stream"] == res["portable"], f"{what}: streaming differs from the portable loop"


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_relu_streaming_bit_for_bit(k, restore, dtype):
    per_line = LINE // np.dtype(dtype).itemsize
    for n in LENGTHS:
        x = special_values(n, dtype, n)
        dout = special_values(n, dtype, n + 1000)
        mask = x <= 0
        for off in range(per_line):
            # The mask's own offset varies with n and off, so lines of the
            # out and the mask start at different elements (the usual case).
            moff = (off * 37 + n) % LINE
            what = f"relu n={n} out offset {off} mask offset {moff} {np.dtype(dtype)}"
            res = _three_ways(k, lambda o, m: k.relu_forward(x, o, m.view(bool)),
                              [(n, dtype, off), (n, np.uint8, moff)], what)
            _same(res, what)
            res = _three_ways(k, lambda d: k.relu_backward(dout, mask, d), [(n, dtype, off)], "backward " + what)
            _same(res, "backward " + what)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_relu_mask_every_offset(k, restore, dtype):
    # The mask lines are put together from two blocks' bits: every shift.
    per_line = LINE // np.dtype(dtype).itemsize
    for n in [63, 64, 65, 127, 128, 143, 200, 257, 1000]:
        x = special_values(n, dtype, n)
        for off in (0, 1, per_line - 1):
            for moff in range(LINE):
                what = f"relu n={n} out offset {off} mask offset {moff} {np.dtype(dtype)}"
                res = _three_ways(k, lambda o, m: k.relu_forward(x, o, m.view(bool)),
                                  [(n, dtype, off), (n, np.uint8, moff)], what)
                _same(res, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_sigmoid_streaming(k, restore, dtype):
    per_line = LINE // np.dtype(dtype).itemsize
    for n in LENGTHS:
        x = special_values(n, dtype, n)
        dout = special_values(n, dtype, n + 1000)
        y = np.random.default_rng(n).random(n).astype(dtype)
        for off in range(per_line):
            what = f"sigmoid n={n} offset {off} {np.dtype(dtype)}"
            res = _three_ways(k, lambda o: k.sigmoid_forward(x, o), [(n, dtype, off)], what)
            # exp differs between the two sets of loops: held to 2 ulp in test_simd_paths.py.
            _same(res, what, with_portable=False)
            a = np.frombuffer(res["portable"][0], dtype)
            b = np.frombuffer(res["stream"][0], dtype)
            assert (ulp_apart(a, b, dtype) <= 2).all(), what
            res = _three_ways(k, lambda d: k.sigmoid_backward(dout, y, d), [(n, dtype, off)], "backward " + what)
            _same(res, "backward " + what)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_cross_entropy_gradients_streaming(k, restore, dtype):
    per_line = LINE // np.dtype(dtype).itemsize
    rows = 3  # 1/3 is inexact: the scaling is checked too; 3c takes every tail length mod 16
    for c in LENGTHS[1:]:
        rng = np.random.default_rng(c)
        y = rng.random((rows, c)).astype(dtype)
        t = rng.random((rows, c)).astype(dtype)
        labels = rng.integers(0, c, rows)
        for off in range(per_line):
            what = f"xent c={c} offset {off} {np.dtype(dtype)}"
            res = _three_ways(k, lambda d: k.softmax_xent_onehot_backward(y, t, d.reshape(rows, c)),
                              [(rows * c, dtype, off)], "one-hot " + what)
            _same(res, "one-hot " + what)
            res = _three_ways(k, lambda d: k.softmax_xent_labels_backward(y, labels, d.reshape(rows, c)),
                              [(rows * c, dtype, off)], "labels " + what)
            _same(res, "labels " + what)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_streaming_split_between_threads(k, restore, dtype):
    # Each thread streams its own chunk: its own head, tail and mask carry.
    old = k.get_num_threads()
    k.set_num_threads(2)
    try:
        if k.get_num_threads() != 2:
            pytest.skip("built without OpenMP")
        n = 2 * 65536 + 77
        x = special_values(n, dtype, 1)
        y = np.random.default_rng(2).random(n).astype(dtype)
        res = _three_ways(k, lambda o, m: k.relu_forward(x, o, m.view(bool)), [(n, dtype, 3), (n, np.uint8, 21)], "relu")
        _same(res, "relu, two threads")
        res = _three_ways(k, lambda d: k.sigmoid_backward(x, y, d), [(n, dtype, 5)], "sigmoid backward")
        _same(res, "sigmoid backward, two threads")
        res = _three_ways(k, lambda o: k.sigmoid_forward(x, o), [(n, dtype, 1)], "sigmoid forward")
        _same(res, "sigmoid forward, two threads", with_portable=False)
    finally:
        k.set_num_threads(old)


def test_default_threshold_streams_an_array_just_above_it(k, restore):
    assert k._stream_min_bytes() == 32 << 20
    n = (32 << 20) // 4 + 37
    rng = np.random.default_rng(0)
    dout = rng.random(n, dtype=np.float32)
    y = rng.random(n, dtype=np.float32)
    expected = dout * (np.float32(1) - y) * y
    k.set_simd("avx512")
    g = Guarded(n, np.float32, 1)
    k.sigmoid_backward(dout, y, g.out)
    g.check("sigmoid backward above the default threshold")
    assert np.array_equal(g.out.view(np.uint32), expected.view(np.uint32)), "differs from dout * (1 - y) * y"


def test_stream_threshold_setter(k, restore):
    old = k._stream_min_bytes(123)
    assert k._stream_min_bytes() == 123
    assert k._stream_min_bytes(old) == 123
    with pytest.raises(ValueError):
        k._stream_min_bytes(-1)
    assert k._stream_min_bytes() == old
