"""Shared fixtures: every layer test runs once per backend."""
from pathlib import Path

import numpy as np
import pytest

import bprop
from bprop import _backend

BACKENDS = ("cython", "numpy")

#: float64 rtol 1e-7 and float32 rtol 1.3e-6 (about 10 ulp): the backends use
#: different exp implementations (<= 1 ulp apart) and summation orders. atol
#: covers results that cancel to ~0, where a relative bound means nothing.
RTOL = {np.dtype(np.float64): 1e-7, np.dtype(np.float32): 1.3e-6}
ATOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-6}

#: The compiled module's kernels (tests/test_bad_input.py and test_threads.py
#: check each one's entry sizes and GIL release, and fail when one is missing here).
KERNELS = [
    "relu_forward", "relu_backward", "sigmoid_forward", "sigmoid_backward", "add_bias", "column_sum",
    "affine_forward", "affine_backward",
    "softmax_forward", "softmax_xent_labels_forward", "softmax_xent_onehot_forward",
    "softmax_xent_labels_backward", "softmax_xent_onehot_backward",
    "batchnorm_forward", "batchnorm_backward",
    "sgd_update", "momentum_update", "nesterov_update", "adagrad_update", "rmsprop_update", "adam_update",
    "im2col_rows", "col2im_rows", "im2col_kp", "col2im_kp", "pool_forward", "pool_backward",
    "conv_bias_add", "conv_bias_grad", "conv_forward", "conv_backward_data",
]
#: Its public functions that are settings, not kernels.
NOT_KERNELS = {"openmp_enabled", "get_num_threads", "set_num_threads", "default_num_threads", "get_simd", "set_simd",
               "small_product_loops",
               "simd_level", "per_cpu_versions", "exp_source"}

#: The full MNIST set, beside the project in CI; absent in a user's clone.
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


#: A pure build (BPROP_NO_EXTENSIONS=1, as recorded by setup.py in bprop/_build.py):
#: the compiled-only tests skip. Any other build must have imported the compiled
#: module, or those tests fail: a broken build never passes as a pure one.
PURE_BUILD = _backend.PURE_BUILD
PURE_REASON = "pure build (BPROP_NO_EXTENSIONS=1): no compiled kernels to test"


def require_compiled():
    """Skip the calling test in a pure build; fail it, saying why, where the compiled kernels should be but are not."""
    if _backend.compiled_available():
        return
    if PURE_BUILD:
        pytest.skip(PURE_REASON)
    pytest.fail(_backend.missing_reason())


def pytest_report_header(config):
    """Which bprop the tests import, and how it was built (a source tree or an installed copy)."""
    where = Path(bprop.__file__).resolve().parent
    return [f"bprop {bprop.__version__} from {where}: {_backend.build_kind()}, backend {bprop.backend()}"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Activate one backend for the test; ids are the backend names."""
    if request.param == "cython":
        require_compiled()
    with bprop.use_backend(request.param):
        yield request.param


@pytest.fixture(params=["portable", "avx512", "x86-64-v3", "baseline", "numpy-loops"])
def simd(request):
    """Run the compiled kernels' portable loops (at the best level this CPU has), the
    hand-written AVX-512 ones, then the portable ones at x86-64-v3 and at the baseline, then
    the portable ones on NumPy's exp (numpy_loops.h) whichever build this is."""
    k = _backend.compiled_module()
    if k is None:
        pytest.skip("no compiled kernels in a pure install")
    previous, borrowed = k.get_simd(), k._numpy_loops()
    try:
        k.set_simd("portable" if request.param == "numpy-loops" else request.param)
    except ValueError as exc:
        pytest.skip(f"the {request.param} loops cannot run here: {exc}")
    if request.param == "numpy-loops":
        k._numpy_loops(True)
        if k.exp_source() != "numpy":
            k._numpy_loops(borrowed)
            pytest.skip("NumPy's loops were not found or failed their check at import")
    try:
        yield request.param
    finally:
        k.set_simd(previous)
        k._numpy_loops(borrowed)


def avx512_module():
    """The compiled module when its AVX-512 loops can run here; else skip the calling test or module."""
    k = _backend.compiled_module()
    if k is None:
        pytest.skip("no compiled kernels in a pure install")
    previous = k.get_simd()
    try:
        k.set_simd("avx512")
    except ValueError as exc:
        pytest.skip(f"only the portable loops run here: {exc}")
    finally:
        k.set_simd(previous)
    return k


def special_values(n, dtype, seed):
    """n values of ``dtype``: normal * 30, with NaN, +-inf, +-0, +-800 and +-1e-30 among them."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 30).astype(dtype)
    specials = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -800, 800, 1e-30, -1e-30], dtype=dtype)
    m = min(n, specials.size)
    x[rng.permutation(n)[:m]] = specials[:m]
    return x


def product_bound(k, dtype, a_abs, b_abs):
    """Rounding bound for two evaluations of a length-k dot product of |a| and |b| in ``dtype``."""
    with np.errstate(all="ignore"):
        return 2 * (k + 2) * np.finfo(dtype).eps * (a_abs @ b_abs)


def ulp_apart(a, b, dtype):
    """How many ulp of ``dtype`` a and b differ by, elementwise (0 where equal or both NaN)."""
    both_nan = np.isnan(a) & np.isnan(b)
    gap = np.abs(a.astype(np.float64) - b.astype(np.float64))
    ulp = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(dtype)).astype(np.float64)
    return np.where(both_nan | (a == b), 0.0, gap / ulp)


def assert_close(actual, expected, dtype=None):
    """Compare with the dtype's tolerance; NaN must match NaN."""
    dt = np.dtype(dtype or np.asarray(actual).dtype)
    np.testing.assert_allclose(actual, expected, rtol=RTOL.get(dt, 1e-7), atol=ATOL.get(dt, 1e-12), equal_nan=True)


#: The book's repository, beside the project in CI; absent in a user's clone.
BOOK_DIR = MNIST_DIR.parents[1] / "book"


def book_module(relpath):
    """The book's own module ``BOOK_DIR/relpath`` (e.g. ``common/layers.py``), or skip the calling test.

    Loaded as the benchmarks load the book's code (``bprop._book_code``): under
    a private name, the book's ``common`` package importable only meanwhile.
    """
    from bprop import _book_code

    path = BOOK_DIR / relpath
    if not path.is_file():
        pytest.skip(f"the book's repository is not beside the project (looked for {path})")
    return _book_code.load(BOOK_DIR, relpath)
