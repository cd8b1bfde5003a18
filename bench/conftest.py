"""pytest-benchmark suite for bprop's layers (see ``test_bench_layers.py`` for how to run it).

Options added here:

``--bench-threads N``
    threads for bprop's kernels, NumPy's BLAS (threadpoolctl) and PyTorch
    alike during the session (default 1), so every implementation in a group
    runs with the same thread count.
``--bench-largest``
    with ``--benchmark-disable``, run every implementation at the largest
    sizes too (by default that run, the CI smoke run, keeps only bprop's
    compiled Relu, Sigmoid and SoftmaxWithLoss there; a timing run always
    runs everything).
"""
import os
import sys
from pathlib import Path

import pytest

#: The book's repository for the chapter benchmarks' book column: $BPROP_BOOK_DIR, else
#: ../shared/book beside the project.
BOOK_DIR = os.environ.get("BPROP_BOOK_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "book")
#: The implementations of each chapter case, one benchmark each.
CHAPTER_IMPLS = ("book", "bprop", "torch")


def pytest_addoption(parser):
    group = parser.getgroup("bprop bench")
    group.addoption("--bench-threads", type=int, default=1, metavar="N",
                    help="threads for bprop, NumPy's BLAS and PyTorch alike (default 1)")
    group.addoption("--bench-largest", action="store_true",
                    help="with --benchmark-disable, run every implementation at the largest sizes too")


@pytest.fixture(scope="session", autouse=True)
def _same_threads(request):
    """Give every implementation the same thread count for the whole session."""
    from bprop._threads import cap
    from bprop.bench import thread_limits

    n = request.config.getoption("--bench-threads")
    if n < 1:
        raise pytest.UsageError(f"--bench-threads must be >= 1, got {n}")
    n, note = cap(n)
    if note:
        sys.stderr.write(f"--bench-threads: {note}\n")
    with thread_limits(n):
        yield n


def pytest_configure(config):
    config.addinivalue_line("markers", "largest: the largest size of a layer (mostly left out of "
                                       "--benchmark-disable runs)")


def _timing_disabled(config):
    """True when pytest-benchmark runs each benchmark once (--benchmark-disable)."""
    return bool(config.getoption("benchmark_disable", False)) and not config.getoption("benchmark_enable", False)


def pytest_collection_modifyitems(config, items):
    """In a --benchmark-disable run, keep of the largest sizes only bprop's compiled elementwise and softmax cases."""
    if not config.pluginmanager.hasplugin("benchmark"):
        skip = pytest.mark.skip(reason="pytest-benchmark is not installed or not enabled (pip install 'bprop[bench]')")
        for item in items:
            item.add_marker(skip)
        return
    if not _timing_disabled(config) or config.getoption("--bench-largest"):
        return
    skip = pytest.mark.skip(reason="largest size: in --benchmark-disable runs only bprop's compiled Relu, Sigmoid "
                                   "and SoftmaxWithLoss run it (--bench-largest runs all)")
    for item in items:
        if item.get_closest_marker("largest"):
            params = getattr(item, "callspec", None)
            params = params.params if params is not None else {}
            if params.get("impl") != "cython" or params.get("layer") == "affine":
                item.add_marker(skip)


@pytest.fixture
def time_chapter_case(benchmark):
    """``time(calls, case, impl, book_found)``: time one implementation of a chapter case
    (bprop._bench_conv / _bench_ch6_ch8 ``make_calls`` rows) on one thread, or skip with the
    reason it is not there; ``book_found`` says whether the book's code is at BOOK_DIR."""
    from bprop import _bench_conv

    def time(calls, case, impl, book_found):
        f = calls[case][impl]
        if f is None:
            if impl == "book" and not book_found:
                pytest.skip(f"the book's code is not at {BOOK_DIR} (set BPROP_BOOK_DIR)")
            if impl == "torch" and _bench_conv.torch_module() is None:
                pytest.skip("PyTorch does not import (pip install torch to compare)")
            why = " (the book computes in float64 only)" if impl == "book" else ""
            pytest.skip(f"no {impl} counterpart for this case{why}")
        benchmark.group = f"{case[0]} {case[1]}"
        benchmark.extra_info.update(implementation=impl)
        with _bench_conv.one_thread():
            benchmark(f)

    return time
