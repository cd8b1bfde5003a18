"""The measuring loop: every layer, size, dtype and pass, checked, then timed."""
import contextlib
import math

from .cases import backend_context, impl_missing_reason, make_case, make_inputs
from .check import check_results, reference_results
from .references import COPY_KINDS, COPY_SHAPE, copy_bandwidth, copy_call, gemm_call, ufunc_time, work
from .timing import fmt_time, time_calls

def run_benchmarks(layers, dtypes, passes, sizes, impls, timing, threads, log=None, references=True,
                   on_layer=None):
    """Measure everything; returns the JSON-ready result dict (without the header).

    Per layer, size and dtype: every implementation is built and checked
    against the book's results (and checked again after timing), then each pass is timed with the
    implementations' repeats interleaved (and, for Affine at (1024, 1024,
    1024) and up, the bare GEMMs among them). ``on_layer(layer, data)`` is
    called when a layer is done, with the results so far.
    """
    results = []
    refs = {"copy": {}, "copy_alongside": [], "gemm": [], "ufunc": {}}
    skipped = {impl: impl_missing_reason(impl) for impl in impls if impl_missing_reason(impl)}
    data = {"results": results, "references": refs, "skipped": skipped}
    run_impls = [i for i in impls if i not in skipped]

    if references:
        for dt in dtypes:
            if any(layer in ("relu", "sigmoid") for layer in layers):
                refs["copy"][dt] = copy_bandwidth(dt, threads, timing)
                if log:
                    log(f"  copy bandwidth {dt}: {refs['copy'][dt]['gbps']:.2f} GB/s")
            refs["ufunc"][dt] = ufunc_time(dt, timing)

    for layer in layers:
        for size in sizes[layer]:
            for dt in dtypes:
                inputs = make_inputs(layer, size, dt)
                reference = reference_results(layer, inputs)
                cases = {}
                for impl in run_impls:
                    with backend_context(impl):
                        case = make_case(layer, impl, inputs)
                        check_results(layer, impl, case.results(), reference, dt)
                    cases[impl] = case
                gemm = references and layer == "affine" and math.prod(size) >= 1024 ** 3
                copy = references and layer != "affine" and math.prod(size) >= math.prod(COPY_SHAPE)
                with contextlib.ExitStack() as stack:
                    if copy:  # timed alongside, so that "% copy" compares like with like
                        copy_fns, copy_bytes = stack.enter_context(copy_call(dt, threads))
                    for p in passes:
                        names = list(cases)
                        fns = [cases[i].call(p) for i in names]
                        ctxs = [(lambda i=i: backend_context(i)) for i in names]
                        for i in names:
                            with backend_context(i):
                                cases[i].prepare()
                        if gemm:
                            names.append("gemm")
                            fns.append(gemm_call(size, dt, p, inputs))
                            ctxs.append(contextlib.nullcontext)
                        if copy:
                            for kind, fn in copy_fns.items():
                                names.append(kind)
                                fns.append(fn)
                                ctxs.append(contextlib.nullcontext)
                        amount, unit = work(layer, size, dt, p)
                        for name, r in zip(names, time_calls(fns, *timing, contexts=ctxs)):
                            r.update(layer=layer, size=list(size), dtype=dt, **{"pass": p})
                            if name == "gemm":
                                refs["gemm"].append(r)
                            elif name in COPY_KINDS:
                                r.update(bytes=copy_bytes, gbps=copy_bytes / r["median"] / 1e9, kind=name)
                                refs["copy_alongside"].append(r)
                            else:
                                r.update(impl=name, work=amount, unit=unit)
                                results.append(r)
                            if log:
                                log(f"  {layer} {size} {dt} {p} {name}: {fmt_time(r['median'])}")
                        del fns
                # and once more after the timing loops: a kernel whose results go stale when
                # called repeatedly (say, a reused output buffer) must not pass either
                for impl, case in cases.items():
                    with backend_context(impl):
                        check_results(layer, impl, case.results(), reference, dt)
                del cases, inputs, reference
        if on_layer is not None:
            on_layer(layer, data)
    return data
