"""The NumPy backend's fast path (bprop._numpy_entry) refuses exactly what the compiled kernels refuse.

The layers hand plain arrays to ``_backend.checked`` and take their checked
path only on a KernelArgumentError, so on the NumPy backend an argument the
entry checks let through reaches the twin unconverted: every refusal of the
compiled entry must be one here too (else, say, a byte-swapped array would
be computed on as if native), and what both accept must give the twin's
results.
"""
import numpy as np
import pytest

from bprop import _numpy_entry, _numpy_kernels
from bprop._errors import KernelArgumentError

from conftest import require_compiled

F64 = np.float64


def _good(name, dtype=F64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5)).astype(dtype)
    t = rng.integers(0, 5, 6)
    y = np.empty_like(x)
    _numpy_kernels.softmax_forward(x, y)
    return {
        "relu_forward": (x, None, None),
        "relu_backward": (x, x <= 0, None),
        "sigmoid_forward": (x, None),
        "sigmoid_backward": (x, 1 / (1 + np.exp(-x)), None),
        "add_bias": (x.copy(), x[0].copy()),
        "column_sum": (x, np.empty(5, dtype)),
        "softmax_xent_labels_forward": (x, t, np.empty_like(x)),
        "softmax_xent_labels_backward": (y, t, None),
        "softmax_xent_onehot_backward": (y, np.eye(5, dtype=dtype)[t], None),
    }[name]


def _bad_variants(name, args):
    """(label, args) with one argument spoiled in each way the compiled entry refuses."""
    for i, a in enumerate(args):
        if not isinstance(a, np.ndarray):
            continue

        def swap(new):
            return tuple(new if j == i else b for j, b in enumerate(args))

        yield f"arg{i} non-contiguous", swap(np.asfortranarray(np.stack([a, a], -1))[..., 0])
        yield f"arg{i} byte-swapped", swap(a.astype(a.dtype.newbyteorder()))
        other = {np.dtype(bool): np.float64, np.dtype(np.int64): np.int32}.get(a.dtype, np.float16)
        yield f"arg{i} dtype {np.dtype(other)}", swap(a.astype(other))
        yield f"arg{i} one element short", swap(a.reshape(-1)[:-1].copy())
        if a.dtype.kind == "f" and a.dtype != np.float32:
            yield f"arg{i} other float type", swap(a.astype(np.float32))
        if a.dtype == np.int64:
            yield f"arg{i} label out of range", swap(np.where(np.arange(a.size) == 2, 5, a))
            yield f"arg{i} negative label", swap(np.where(np.arange(a.size) == 3, -1, a))
        if i == (0 if name == "add_bias" else 1 if name == "column_sum" else 2):
            ro = a.copy()
            ro.flags.writeable = False
            yield "read-only output", swap(ro)


def _run(module, name, args):
    """``module.name`` on copies of ``args``: its results, then every argument as the call left it
    (add_bias and column_sum answer in place)."""
    args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    result = getattr(module, name)(*args)
    return [*(result if isinstance(result, tuple) else (result,)), *args]


def _assert_same(got, want, label):
    assert len(got) == len(want), label
    for g, w in zip(got, want):
        if g is None or w is None or np.isscalar(g):
            assert (g is None and w is None) or g == w or (g != g and w != w), label
        else:
            np.testing.assert_array_equal(g, w, label)


NAMES = [n for n in _numpy_entry.__all__ if n != "small_product_loops"]


@pytest.mark.parametrize("name", NAMES)
def test_refuses_what_the_compiled_kernel_refuses(name):
    require_compiled()
    from bprop import _backend

    compiled = _backend.compiled_module()
    for label, args in _bad_variants(name, _good(name)):
        try:
            getattr(compiled, name)(*args)
        except KernelArgumentError:
            with pytest.raises(KernelArgumentError):
                getattr(_numpy_entry, name)(*args)
        else:
            # Accepted by the compiled kernel: the fast path may take it or refuse it
            # (it allocates its outputs itself), but must not compute a wrong result.
            try:
                got = _run(_numpy_entry, name, args)
            except KernelArgumentError:
                continue
            _assert_same(got, _run(_numpy_kernels, name, args), label)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_accepted_arguments_give_the_twins_results(name, dtype):
    args = _good(name, dtype)
    _assert_same(_run(_numpy_entry, name, args), _run(_numpy_kernels, name, args), name)
