"""Shared fixtures: every layer test runs once per backend."""
import os
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

#: The full MNIST set, beside the project in CI; absent in a user's clone.
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Activate one backend for the test; ids are the backend names."""
    if request.param == "cython" and not _backend.compiled_available():
        if os.environ.get("BPROP_EXPECT_PURE"):
            pytest.skip("pure-Python install (BPROP_NO_EXTENSIONS=1): no compiled kernels to test")
        pytest.fail("bprop._kernels did not import; build it (pip install .) or set BPROP_EXPECT_PURE=1")
    with bprop.use_backend(request.param):
        yield request.param


def assert_close(actual, expected, dtype=None):
    """Compare with the dtype's tolerance; NaN must match NaN."""
    dt = np.dtype(dtype or np.asarray(actual).dtype)
    np.testing.assert_allclose(actual, expected, rtol=RTOL.get(dt, 1e-7), atol=ATOL.get(dt, 1e-12), equal_nan=True)
