"""The per-CPU levels of the portable loops (bprop/src/platform.h, levels.h).

Every level this CPU runs must give the portable results: ReLU, the
cross-entropy gradient and the optimizer updates bit for bit (no product in
them to contract into an FMA, or contraction is off), sigmoid and softmax
within 2 ulp (their exp's multiply-adds may fuse at x86-64-v3 and up; each
level is held to the long-double reference in test_exp_accuracy.py through
the simd fixture). The convolution and pooling loops (conv.h) bit for bit
(the products on inputs where an FMA changes nothing, see below). Each call
also checks that nothing outside the outputs is written. set_simd's level
names select the level, and bprop info names it.
"""
import platform
import shutil
import subprocess
import sysconfig
import shlex
from pathlib import Path

import numpy as np
import pytest

import bprop
from bprop import _backend, _numpy_kernels
from conftest import assert_close, special_values, ulp_apart

pytestmark = pytest.mark.skipif(not _backend.compiled_available(), reason="no compiled kernels in a pure install")

DTYPES = [np.float64, np.float32]
LENGTHS = list(range(0, 40)) + [63, 64, 65, 127, 128, 129, 1000]
GUARD = 7.25


def _levels():
    """The levels this build and CPU run, lowest first."""
    k = _backend.compiled_module()
    found = []
    for name in k.LEVELS:
        try:
            _select(k, name)
        except ValueError:
            continue
        found.append(name)
    return found


def _select(k, name):
    previous = k.get_simd(), k.simd_level()
    try:
        k.set_simd(name)
    finally:
        k.set_simd(previous[1] if previous[0] == "portable" else "auto")


def _run(level, fn, *sizes_dtypes):
    """``fn(k, *outs)`` under ``level`` on outputs with guard cells either side; the outputs."""
    k = _backend.compiled_module()
    previous = k.get_simd(), k.simd_level()
    bufs = [np.full(n + 9, GUARD, dtype=dt) for n, dt in sizes_dtypes]
    outs = [b[1:n + 1] for b, (n, _) in zip(bufs, sizes_dtypes)]
    try:
        k.set_simd(level)
        assert k.simd_level() == level and k.get_simd() == "portable"
        fn(k, *outs)
    finally:
        k.set_simd(previous[1] if previous[0] == "portable" else "auto")
    for b, (n, dt) in zip(bufs, sizes_dtypes):
        g = np.asarray(GUARD).astype(dt)
        assert (b[0] == g) and (b[n + 1:] == g).all(), f"{level}: wrote outside the {n} elements"
    return outs


LEVELS = _levels() if _backend.compiled_available() else []


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_relu_and_gradients_agree_bit_for_bit_at_every_level(dtype):
    for n in LENGTHS:
        x = special_values(n, dtype, n)
        y = np.abs(special_values(n, dtype, n + 1))
        res = {}
        for level in LEVELS:
            out, mask8 = _run(level, lambda k, o, m: k.relu_forward(x, o, m.view(bool)), (n, dtype), (n, np.uint8))
            (dx,) = _run(level, lambda k, d: k.relu_backward(x, mask8.view(bool), d), (n, dtype))
            (ds,) = _run(level, lambda k, d: k.sigmoid_backward(x, y, d), (n, dtype))
            res[level] = [a.tobytes() for a in (out, mask8, dx, ds)]
        for level in LEVELS[1:]:
            assert res[level] == res[LEVELS[0]], f"{level} against {LEVELS[0]}, n={n}, {np.dtype(dtype)}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_sigmoid_and_softmax_agree_at_every_level(dtype):
    for n in LENGTHS:
        x = special_values(n, dtype, n)
        res = {lv: _run(lv, lambda k, o: k.sigmoid_forward(x, o), (n, dtype))[0] for lv in LEVELS}
        for level in LEVELS[1:]:
            worst = float(ulp_apart(res[level], res[LEVELS[0]], dtype).max(initial=0))
            assert worst <= 2, f"sigmoid n={n} {np.dtype(dtype)}: {level} {worst} ulp from {LEVELS[0]}"
    for c in [1, 7, 8, 9, 17, 100, 257]:
        x = np.stack([special_values(c, dtype, c + s) for s in range(3)])
        x[np.isnan(x)] = 0.0
        x[1, 0] = np.nan
        res = {lv: _run(lv, lambda k, o: k.softmax_forward(x, o.reshape(x.shape)), (x.size, dtype))[0]
               for lv in LEVELS}
        for level in LEVELS[1:]:
            worst = float(ulp_apart(res[level], res[LEVELS[0]], dtype).max(initial=0))
            assert worst <= 2, f"softmax c={c} {np.dtype(dtype)}: {level} {worst} ulp from {LEVELS[0]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_optimizer_updates_agree_bit_for_bit_at_every_level(dtype):
    rng = np.random.default_rng(1)
    n = 1000
    g = rng.standard_normal(n).astype(dtype)
    start = rng.standard_normal(n).astype(dtype)
    res = {}
    for level in LEVELS:
        def adam(k, p, m, v):
            p[:], m[:], v[:] = start, 0, 0
            k.adam_update(p, g, m, v, 0.001, 0.9, 0.999)
        res[level] = [a.tobytes() for a in _run(level, adam, (n, dtype), (n, dtype), (n, dtype))]
    for level in LEVELS[1:]:
        assert res[level] == res[LEVELS[0]], f"adam at {level} against {LEVELS[0]}, {np.dtype(dtype)}"


#: (N, D) for BatchNormalization: one row; column blocks of the loops (about
#: 2^17 bytes of a column block's rows, at least 64 columns) once, several
#: times and with a remainder.
BN_SHAPES = [(1, 1), (3, 7), (100, 65), (100, 1000), (1000, 200), (2000, 131)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_batchnorm_agrees_with_the_twin_at_every_level(dtype):
    """The column means and xc bit for bit (sums in the twin's row order, no product to
    contract), the rest within the dtype's tolerance (var's and out's multiply-adds may
    fuse at x86-64-v3 and up); nothing written outside out, xc and dx."""
    rng = np.random.default_rng(4)
    for n, d in BN_SHAPES:
        x = (rng.standard_normal((n, d)) * 3 + 1).astype(dtype)
        gamma, beta = rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)
        dout = rng.standard_normal((n, d)).astype(dtype)
        ref = _numpy_kernels.batchnorm_forward(x, gamma, beta, 1e-6, None, None)
        ref_dx, ref_dgamma, ref_dbeta = _numpy_kernels.batchnorm_backward(dout, ref[1], gamma, ref[4], None)
        for level in LEVELS:
            stats = []
            out, xc = _run(level, lambda k, o, c: stats.extend(k.batchnorm_forward(
                x, gamma, beta, 1e-6, o.reshape(n, d), c.reshape(n, d))[2:]), (n * d, dtype), (n * d, dtype))
            grads = []
            (dx,) = _run(level, lambda k, o: grads.extend(k.batchnorm_backward(
                dout, xc.reshape(n, d), gamma, stats[2], o.reshape(n, d))[1:]), (n * d, dtype))
            where = f"{level}, {(n, d)}, {np.dtype(dtype)}"
            assert stats[0].tobytes() == ref[2].tobytes() and xc.tobytes() == ref[1].tobytes(), where
            for got, want in zip([out, *stats[1:], dx, *grads],
                                 [ref[0], *ref[3:], ref_dx, ref_dgamma, ref_dbeta]):
                assert_close(got.reshape(want.shape), want)


def test_level_names_select_and_info_names_them():
    k = _backend.compiled_module()
    before = k.get_simd(), k.simd_level()
    try:
        for level in LEVELS:
            k.set_simd(level)
            assert (k.get_simd(), k.simd_level()) == ("portable", level)
            assert level in bprop.info()["loops"] or not k.per_cpu_versions()
        k.set_simd("portable")
        assert k.get_simd() == "portable" and k.simd_level() == LEVELS[-1]
        k.set_simd("auto")
        loops = bprop.info()["loops"]
        assert loops.startswith("avx512: ") if k.get_simd() == "avx512" else loops.startswith("portable")
        for missing in [lv for lv in k.LEVELS if lv not in LEVELS]:
            with pytest.raises(ValueError, match=f"cannot run the {missing} loops"):
                k.set_simd(missing)
    finally:
        k.set_simd(before[1] if before[0] == "portable" else "auto")


CC = shlex.split(sysconfig.get_config_var("CC") or "cc")
SRC = Path(__file__).resolve().parents[1] / "bprop" / "src"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the per-CPU levels are x86-64's")
@pytest.mark.skipif(not (SRC / "platform.h").is_file(), reason="no bprop/src headers beside these tests")
@pytest.mark.skipif(shutil.which(CC[0]) is None, reason=f"no C compiler ({CC[0]})")
@pytest.mark.parametrize("define, levels", [("-DBPROP_CLONES=1", 3), ("-DBPROP_NO_SUCH_MACRO=1", 1)])
def test_the_build_macro_decides_the_levels(define, levels):
    """setup.py's BPROP_CLONES (left out by BPROP_BASELINE_ONLY=1) is what turns the levels on."""
    code = f'#include "platform.h"\n#if BP_LEVELS != {levels}\n#error wrong level count\n#endif\nint bp_anchor;\n'
    r = subprocess.run([*CC, "-fsyntax-only", "-std=c11", "-I", str(SRC), define, "-x", "c", "-"],
                       input=code, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _baseline_only():
    k = _backend.compiled_module()
    return k is not None and not k.per_cpu_versions()


@pytest.mark.skipif(not _baseline_only(), reason="only in a build without per-CPU versions (BPROP_BASELINE_ONLY=1)")
def test_a_baseline_only_build_runs_baseline_loops_on_numpys_exp():
    """Such a build selects its one level and names it; on x86-64 its sigmoid and softmax take NumPy's loops."""
    k = _backend.compiled_module()
    assert (k.get_simd(), k.simd_level()) == ("portable", "baseline")
    assert bprop.info()["loops"].startswith("portable, no per-CPU versions")
    for name in ("x86-64-v3", "avx512"):
        with pytest.raises(ValueError):
            k.set_simd(name)
    x86_64 = platform.machine().lower() in ("x86_64", "amd64")
    assert k.exp_source() == ("numpy" if x86_64 else "bprop")
    assert ("NumPy's" in bprop.info()["exp"]) == x86_64
    if x86_64:
        # The layer's fast path and the function reach the loops on NumPy's exp: the book's bits.
        x = np.linspace(-30, 30, 10_001)
        with bprop.use_backend("cython"):
            layer, function = bprop.layers.Sigmoid().forward(x), bprop.functions.sigmoid(x)
        assert layer.tobytes() == function.tobytes() == (1 / (1 + np.exp(-x))).tobytes()


# --- The convolution and pooling loops (conv.h) ----------------------------------
#
# im2col, col2im, pooling and the bias loops only copy, compare and add: every
# level gives the same bits. The convolution's products sum each element over k
# in order from zero at every level; a level with FMA may fuse a multiply-add
# (where and whether is the compiler's choice), so they are held to the bit on
# inputs whose products are exact.

#: (N, C, H, W, FH, FW, stride, pad): the book's SimpleConvNet and DeepConvNet
#: windows, then strides, padding wider than the window's reach, odd sizes.
CONV_GEOMETRIES = [(2, 1, 28, 28, 5, 5, 1, 0), (2, 3, 14, 14, 3, 3, 1, 1), (1, 2, 9, 11, 3, 2, 2, 1),
                   (2, 2, 7, 5, 4, 3, 3, 2), (1, 1, 3, 70, 1, 1, 1, 0)]
#: Pooling: the book's 2x2/2 (its vectorised path, in blocks of 64 windows: 70
#: windows a row, and odd trailing rows and columns), overlapping and padded windows.
POOL_GEOMETRIES = [(2, 3, 28, 28, 2, 2, 2, 0), (1, 2, 5, 141, 2, 2, 2, 0), (2, 2, 9, 10, 3, 3, 2, 1),
                   (1, 2, 8, 7, 3, 2, 1, 1)]
#: The products: 7 filters (a block of six rows and one left over), 63 outputs per
#: sample (vectors of 8 or 16 and a tail), W read straight and transposed.
GEMM_GEOMETRIES = [(2, 2, 9, 7, 3, 3, 1, 1, 7), (1, 3, 6, 6, 2, 2, 1, 0, 13), (1, 1, 5, 5, 5, 5, 1, 2, 1)]


def _out_hw(h, w, fh, fw, s, pad):
    return (h + 2 * pad - fh) // s + 1, (w + 2 * pad - fw) // s + 1


def _normal(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _same_at_every_level(run, what):
    """``run(level)``'s arrays, the same bytes at every level; returns the first level's."""
    res = {level: run(level) for level in LEVELS}
    for level in LEVELS[1:]:
        for i, (a, b) in enumerate(zip(res[level], res[LEVELS[0]])):
            assert a.tobytes() == b.tobytes(), f"{what}, output {i}: {level} against {LEVELS[0]}"
    return res[LEVELS[0]]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("g", CONV_GEOMETRIES, ids=str)
def test_im2col_and_col2im_agree_bit_for_bit_at_every_level(g, dtype):
    n, c, h, w, fh, fw, s, pad = g
    oh, ow = _out_hw(h, w, fh, fw, s, pad)
    x = special_values(n * c * h * w, dtype, h * w).reshape(n, c, h, w)
    k, p = c * fh * fw, oh * ow
    for im2col, col2im, shape in (("im2col_rows", "col2im_rows", (n * p, k)), ("im2col_kp", "col2im_kp", (n, k, p))):
        def unfold(level):
            return _run(level, lambda m, o: getattr(m, im2col)(x, fh, fw, s, pad, o.reshape(shape)),
                        (n * k * p, dtype))
        (col,) = _same_at_every_level(unfold, f"{im2col} {g} {np.dtype(dtype)}")
        assert col.tobytes() == getattr(_numpy_kernels, im2col)(x, fh, fw, s, pad, None).tobytes()
        # Sums of normal values: NaN and inf would only say that NaN is NaN.
        cols = _normal(shape, dtype, k + p)
        def fold(level):
            return _run(level, lambda m, o: getattr(m, col2im)(cols, fh, fw, s, pad, o.reshape(x.shape)),
                        (x.size, dtype))
        _same_at_every_level(fold, f"{col2im} {g} {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("g", POOL_GEOMETRIES, ids=str)
def test_pooling_agrees_bit_for_bit_at_every_level(g, dtype):
    n, c, h, w, ph, pw, s, pad = g
    oh, ow = _out_hw(h, w, ph, pw, s, pad)
    # Ties (whole numbers), NaN and infinities decide the first maximum's rule.
    x = np.round(special_values(n * c * h * w, dtype, h * w) / 10).reshape(n, c, h, w)
    q = n * c * oh * ow
    def forward(level):
        return _run(level, lambda m, o, a: m.pool_forward(x, ph, pw, s, pad, o.reshape(n, c, oh, ow),
                                                          a.reshape(n, c, oh, ow)), (q, dtype), (q, np.uint8))
    out, arg = _same_at_every_level(forward, f"pool_forward {g} {np.dtype(dtype)}")
    want = _numpy_kernels.pool_forward(x, ph, pw, s, pad, None, None)
    assert (out.tobytes(), arg.tobytes()) == (want[0].tobytes(), want[1].tobytes())
    dout = _normal((n, c, oh, ow), dtype, q)
    arg = arg.reshape(n, c, oh, ow)
    def backward(level):
        return _run(level, lambda m, d: m.pool_backward(dout, arg, ph, pw, s, pad, d.reshape(x.shape)),
                    (x.size, dtype))
    _same_at_every_level(backward, f"pool_backward {g} {np.dtype(dtype)}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_conv_bias_loops_agree_bit_for_bit_at_every_level(dtype):
    for n, f, h, w in [(2, 3, 5, 7), (3, 30, 24, 24), (1, 5, 1, 3)]:
        y0, b = _normal((n, f, h, w), dtype, f), _normal((f,), dtype, f + 1)
        def add(level):
            def call(m, y):
                y[:] = y0.reshape(-1)
                m.conv_bias_add(y.reshape(y0.shape), b)
            return _run(level, call, (y0.size, dtype))
        _same_at_every_level(add, f"conv_bias_add {(n, f, h, w)} {np.dtype(dtype)}")
        _same_at_every_level(lambda level: _run(level, lambda m, d: m.conv_bias_grad(y0, d), (f, dtype)),
                             f"conv_bias_grad {(n, f, h, w)} {np.dtype(dtype)}")


def _short(shape, dtype, seed):
    """Values whose products are exact in ``dtype`` (half its significand each), of mixed signs and
    magnitudes (1/16 to 16), so that every sum of them rounds."""
    rng = np.random.default_rng(seed)
    bits = 26 if dtype == np.float64 else 12
    m = rng.integers(1 - 2**bits, 2**bits, size=shape)
    return np.ldexp(m.astype(np.float64), rng.integers(-bits - 4, -bits + 5, size=shape)).astype(dtype)


def _in_order(a, b):
    """a (M, K) @ b (K, P), each element summed over k in order from zero."""
    acc = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    for k in range(a.shape[1]):
        acc = acc + a[:, k:k + 1] * b[k]
    return acc


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("g", GEMM_GEOMETRIES, ids=str)
def test_conv_products_agree_bit_for_bit_at_every_level(g, dtype):
    """conv_forward (W @ col + b) and conv_backward_data (col2im of W.T @ dout), bp_conv_gemm's two uses.

    A level with FMA may fuse each multiply-add; on these inputs the products are exact, so fused or
    not, every level must give the in-order sums to the bit, the bias added after the sum."""
    n, c, h, w, fh, fw, s, pad, f = g
    oh, ow = _out_hw(h, w, fh, fw, s, pad)
    k, p = c * fh * fw, oh * ow
    x, W, b = _short((n, c, h, w), dtype, 1), _short((f, c, fh, fw), dtype, 2), _short((f,), dtype, 3)
    dout = _short((n, f, oh, ow), dtype, 4)
    col = _numpy_kernels.im2col_kp(x, fh, fw, s, pad, None)
    Wk = W.reshape(f, k)
    out = np.stack([_in_order(Wk, col[i]) + b[:, None] for i in range(n)]).reshape(n, f, oh, ow)
    dcol = np.stack([_in_order(Wk.T.copy(), dout[i].reshape(f, p)) for i in range(n)])
    dx = _numpy_kernels.col2im_kp(dcol, fh, fw, s, pad, np.empty(x.shape, dtype))
    def forward(level):
        return _run(level, lambda m, cc, o: m.conv_forward(x, W, b, s, pad, cc.reshape(col.shape),
                                                              o.reshape(out.shape)),
                    (col.size, dtype), (out.size, dtype))
    def backward(level):
        return _run(level, lambda m, d: m.conv_backward_data(dout, W, s, pad, d.reshape(x.shape)), (x.size, dtype))
    what = f"{g} {np.dtype(dtype)}"
    got_col, got_out = _same_at_every_level(forward, f"conv_forward {what}")
    (got_dx,) = _same_at_every_level(backward, f"conv_backward_data {what}")
    assert got_col.tobytes() == col.tobytes()
    assert got_out.tobytes() == out.tobytes(), f"conv_forward {what}: not the in-order sums"
    assert got_dx.tobytes() == dx.tobytes(), f"conv_backward_data {what}: not the in-order sums"
