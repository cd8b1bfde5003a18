"""``bprop.threads``: bprop's kernels and NumPy's BLAS limited together, restored, capped; argument checks."""
import os
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import bprop
from bprop import _threads

OPENMP = bool(bprop.info()["openmp"])


def blas_threads():
    pools = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    if not pools:
        pytest.skip("NumPy reports no BLAS library to limit")
    return pools


@pytest.fixture
def two_cores(monkeypatch):
    """Two usable cores, whatever the machine, and both pools at 2 threads to start from."""
    monkeypatch.setattr(_threads, "usable_cpus", lambda: 2)
    before = bprop.get_num_threads()
    with threadpool_limits(limits=2, user_api="blas"):
        bprop.set_num_threads(2)
        try:
            yield
        finally:
            bprop.set_num_threads(before)


def test_context_manager_limits_both_and_restores(two_cores):
    assert blas_threads() == [2] * len(blas_threads())
    with bprop.threads(1) as limit:
        assert blas_threads() == [1] * len(blas_threads())
        assert bprop.get_num_threads() == 1
        assert repr(limit) == "bprop.threads(1)"
    assert blas_threads() == [2] * len(blas_threads())
    assert bprop.get_num_threads() == (2 if OPENMP else 1)


def test_call_limits_until_restored(two_cores):
    limit = bprop.threads(1)
    try:
        assert blas_threads() == [1] * len(blas_threads())
        assert bprop.get_num_threads() == 1
    finally:
        limit.restore()
    assert blas_threads() == [2] * len(blas_threads())
    assert bprop.get_num_threads() == (2 if OPENMP else 1)


def test_nested_limits_restore_in_order(two_cores):
    with bprop.threads(1):
        with bprop.threads(2):
            assert blas_threads() == [2] * len(blas_threads())
        assert blas_threads() == [1] * len(blas_threads())
        assert bprop.get_num_threads() == 1
    assert bprop.get_num_threads() == (2 if OPENMP else 1)


def test_more_than_the_cores_is_capped_with_a_warning(two_cores):
    with pytest.warns(bprop.ThreadCountWarning, match=r"^bprop.threads: 64 threads asked for, but only 2 cores "
                                                     r"are usable here: using 2$") as record:
        with bprop.threads(64) as limit:
            assert limit.n == 2
            assert blas_threads() == [2] * len(blas_threads())
            assert bprop.get_num_threads() == (2 if OPENMP else 1)
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller


@pytest.mark.parametrize("bad, error", [("2", TypeError), (2.5, TypeError), (2.0, TypeError), (True, TypeError),
                                        (None, TypeError), (0, ValueError), (-1, ValueError)])
def test_threads_refuses_bad_counts(bad, error):
    before = (bprop.get_num_threads(), blas_threads())
    with pytest.raises(error, match=r"^bprop.threads: n must be "):
        bprop.threads(bad)
    assert (bprop.get_num_threads(), blas_threads()) == before  # nothing changed


@pytest.mark.parametrize("bad, error", [("2", TypeError), (2.5, TypeError), (True, TypeError), (0, ValueError),
                                        (-2, ValueError)])
def test_set_num_threads_refuses_bad_counts(bad, error):
    before = bprop.get_num_threads()
    with pytest.raises(error, match=r"^set_num_threads: n must be "):
        bprop.set_num_threads(bad)
    assert bprop.get_num_threads() == before


def test_set_num_threads_takes_numpy_integers_and_the_default():
    before = bprop.get_num_threads()
    try:
        bprop.set_num_threads(np.int64(2))
        assert bprop.get_num_threads() == (2 if OPENMP else 1)
        bprop.set_num_threads(None)  # OpenMP's default
        bprop.set_num_threads(-1)
    finally:
        bprop.set_num_threads(before)


def test_usable_cpus_without_affinity(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert _threads.usable_cpus() == len(os.sched_getaffinity(0))
        monkeypatch.delattr(os, "sched_getaffinity")
    assert _threads.usable_cpus() == os.cpu_count()


def test_cap():
    n = _threads.usable_cpus()
    assert _threads.cap(n) == (n, None)
    capped, note = _threads.cap(n + 5)
    assert capped == n and note.startswith(f"{n + 5} threads asked for, but only {n} ")


def test_public_exceptions_name_their_public_module():
    assert repr(bprop.StateError) == "<class 'bprop.StateError'>"
    assert repr(bprop.BackendWarning) == "<class 'bprop.BackendWarning'>"
    assert repr(bprop.ThreadCountWarning) == "<class 'bprop.ThreadCountWarning'>"
    try:
        bprop.Relu().backward(np.ones(3))
    except bprop.StateError as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert text.splitlines()[-1].startswith("bprop.StateError: Relu.backward: called before forward")


def test_import_stays_light():
    root = str(Path(bprop.__file__).resolve().parents[1])
    code = ("import sys, bprop; print(sorted(m for m in ('threadpoolctl', 'matplotlib', 'bprop.bench', "
            "'bprop.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env={**os.environ, "PYTHONPATH": root}).stdout
    assert out.strip() == "[]"
