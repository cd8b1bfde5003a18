"""Timing: calibrated loops of back-to-back calls, repeats interleaved between implementations."""
import contextlib
import gc
import itertools
import math
import statistics
import time

#: (min seconds per repeat, repeats) for a full run and for --quick.
FULL_TIMING = (0.2, 5)
QUICK_TIMING = (0.04, 3)
#: A call slower than this gets only 3 repeats.
SLOW_CALL = 1.0


def _loop(fn, loops):
    rep = itertools.repeat(None, loops)
    start = time.perf_counter()
    for _ in rep:
        fn()
    return time.perf_counter() - start


def _calibrate(fn, min_time, max_loops):
    """(loops, seconds per call): loops so that one repeat lasts at least ``min_time``."""
    per = _loop(fn, 1)  # warm-up: may include one-off costs (first touch, caches)
    if per < min_time:
        # calibrate on a batch long enough to be timed reliably, ~min_time / 10
        n = 1
        for _ in range(8):
            n = max(n, min(max_loops, math.ceil(min_time / 10 / max(per, 1e-9))))
            t = _loop(fn, n)
            per = t / n
            if t >= min_time / 20 or n >= max_loops:
                break
    return max(1, min(max_loops, math.ceil(min_time / max(per, 1e-9)))), per


def time_calls(fns, min_time=0.2, repeats=5, contexts=None, max_loops=10_000_000):
    """Time several zero-argument callables, their repeats interleaved; a list of dicts.

    Each callable gets a warm-up call and a calibration batch of about a
    tenth of ``min_time`` that fixes its loop count, so that one repeat of
    back-to-back calls lasts at least ``min_time`` seconds. Then the
    repeats run in turn (a, b, c, a, b, c, ...): a slow drift of the
    machine's speed (another process starting) then shifts all of them
    alike rather than one of them. ``repeats`` repeats each (3 for a
    callable slower than a second per call); the garbage collector is off.
    ``contexts``: per callable, a factory of the context manager each of
    its repeats runs in (e.g. bprop's backend).

    Dict keys: ``median``, ``q1``, ``q3``, ``min``, ``max`` (seconds per
    call), ``loops``, ``repeats``, ``times`` (per call, each repeat).
    """
    contexts = contexts or [contextlib.nullcontext] * len(fns)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        plan = []
        for fn, ctx in zip(fns, contexts):
            with ctx():
                loops, per = _calibrate(fn, min_time, max_loops)
            plan.append((loops, min(repeats, 3) if per >= SLOW_CALL else repeats))
        samples = [[] for _ in fns]
        for r in range(max(n for _, n in plan)):
            for i, (fn, ctx) in enumerate(zip(fns, contexts)):
                loops, n = plan[i]
                if r < n:
                    with ctx():
                        samples[i].append(_loop(fn, loops) / loops)
    finally:
        if gc_was:
            gc.enable()
    out = []
    for (loops, _), xs in zip(plan, samples):
        q = _quartiles(xs)
        out.append({"median": q[1], "q1": q[0], "q3": q[2], "min": min(xs), "max": max(xs),
                    "loops": loops, "repeats": len(xs), "times": xs})
    return out


def time_call(fn, min_time=0.2, repeats=5, max_loops=10_000_000):
    """Time one zero-argument callable: :func:`time_calls` with one callable."""
    return time_calls([fn], min_time, repeats, max_loops=max_loops)[0]


def _quartiles(xs):
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def fmt_time(s):
    """A time in seconds as 3 significant digits with a unit (s, ms, us, ns)."""
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            v = s / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{s:g} s"
