"""Benchmarks of bprop's layers next to the book's NumPy code and PyTorch (pytest-benchmark).

Run from the repository root (``pip install 'bprop[bench]'``, or ``[test]``)::

    pytest bench --benchmark-only --benchmark-group-by=group    # time everything
    pytest bench --benchmark-only --benchmark-group-by=group -k "relu and float32"
    pytest bench --benchmark-only --benchmark-group-by=group --bench-threads 2
    pytest bench --benchmark-disable -q                          # CI smoke run: each benchmark once

One benchmark group per layer x size x dtype x pass (e.g. ``Relu (100, 784)
float64 both``), and in each group the implementations side by side:
``book`` (the book's NumPy layers, :mod:`bprop.book`), ``numpy`` and
``cython`` (bprop's layers on its NumPy and compiled backends) and ``torch``
(PyTorch's CPU kernels for the same computation; skipped, with the reason,
when torch does not import). ``train`` groups time one SGD step of the
book's 784-50-10 network. The implementations are those of ``bprop bench``
(:mod:`bprop.bench`), which prints the same comparison as a table.

Before an implementation is timed, its forward and backward results are
asserted to agree with the book's (once per layer, size, dtype and
implementation), so a fast but wrong kernel cannot show up as a win.

Sizes. A timing run covers every size. The ``--benchmark-disable`` run (CI's
smoke run: each benchmark called once, so the suite cannot rot) must stay
under two minutes on two cores, and the largest sizes would take most of
that (about 3.5 minutes in all, most of it in the book's and BLAS's work at
(4096, 4096) and (4096, 4096, 1024), plus about 1 GB of memory). It keeps,
of the largest sizes, bprop's compiled Relu, Sigmoid and SoftmaxWithLoss
(checked against the book, then called once): the code there that depends
on size (threading above a threshold, handling of outputs too large for
malloc's heap) only runs at large sizes. The other implementations there
time third-party code that the smaller sizes already exercise, and Affine's
(4096, 4096, 1024) is the (1024, 1024, 1024) layer code on a bigger GEMM;
``--bench-largest`` runs them all anyway.
"""
import numpy as np
import pytest

from bprop import bench as B

#: Inputs, reference results and the implementations already checked, for one
#: (layer, size, dtype) at a time: the tests are ordered so that one entry serves
#: a whole run of consecutive tests, and only one set of large arrays is alive.
_cache = {}


def _case_data(layer, size, dtype):
    key = (layer, size, dtype)
    if key not in _cache:
        _cache.clear()
        inputs = B.make_inputs(layer, size, dtype)
        _cache[key] = {"inputs": inputs, "reference": B.reference_results(layer, inputs), "checked": set()}
    return _cache[key]


def _params():
    out = []
    for layer in B.LAYERS:
        for size in B.SIZES[layer]:
            largest = size == B.SIZES[layer][-1]
            for dtype in B.DTYPES:
                for impl in B.IMPLS:
                    reason = B.impl_missing_reason(impl)
                    marks = [pytest.mark.skip(reason=reason)] if reason else []
                    if largest:
                        marks.append(pytest.mark.largest)
                    for pass_ in B.PASSES:
                        out.append(pytest.param(
                            layer, size, dtype, pass_, impl, marks=marks,
                            id=f"{layer}-{'x'.join(map(str, size))}-{dtype}-{pass_}-{impl}"))
    return out


@pytest.mark.parametrize("layer, size, dtype, pass_, impl", _params())
def test_layer(benchmark, layer, size, dtype, pass_, impl):
    data = _case_data(layer, size, dtype)
    with B.backend_context(impl):
        case = B.make_case(layer, impl, data["inputs"])
        if impl not in data["checked"]:
            B.check_results(layer, impl, case.results(), data["reference"], dtype)
            data["checked"].add(impl)
        case.prepare()
        amount, unit = B.work(layer, size, dtype, pass_)
        benchmark.group = f"{B.LAYER_TITLES[layer]} {size} {dtype} {pass_}"
        benchmark.extra_info.update(implementation=impl, work=amount, unit=unit)
        benchmark(case.call(pass_))


@pytest.mark.parametrize("impl", [
    pytest.param(i, id=i, marks=[pytest.mark.skip(reason=B.impl_missing_reason(i))] if B.impl_missing_reason(i)
                 else [])
    for i in B.IMPLS])
def test_train_step(benchmark, impl):
    params, x, t, labels = B._train_inputs()
    with B.backend_context("book"):
        ref_step, ref_get = B.train_step_case("book", params, x, t, labels)
        ref_step()
        ref = ref_get()
    with B.backend_context(impl):
        step, get = B.train_step_case(impl, params, x, t, labels)
        step()
        after = get()
        for k in ref:
            np.testing.assert_allclose(after[k], ref[k], rtol=1e-8, atol=1e-10 * float(np.max(np.abs(ref[k]))),
                                       err_msg=f"{impl}: {k} after one SGD step")
        benchmark.group = (f"train step {B.TRAIN['input']}-{B.TRAIN['hidden']}-{B.TRAIN['output']} "
                           f"batch {B.TRAIN['batch']} float64")
        benchmark.extra_info.update(implementation=impl)
        benchmark(step)
