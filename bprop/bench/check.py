"""The guard against fast but wrong kernels: every implementation's results against the book's."""
import numpy as np

from .cases import make_case

#: (rtol, atol relative to the largest reference magnitude) per dtype and kind of
#: result. Measured disagreement between the book, both backends and torch on these
#: inputs: at most 7e-15 (float64) and 2e-6 (float32) of the largest magnitude.
TOLERANCES = {
    "float64": {"exact": (0.0, 0.0), "elementwise": (1e-12, 1e-13), "gemm": (1e-10, 1e-12),
                "softmax": (1e-10, 1e-13)},
    "float32": {"exact": (0.0, 0.0), "elementwise": (2e-6, 1e-6), "gemm": (1e-4, 2e-5),
                "softmax": (2e-5, 1e-6)},
}
#: Result name -> kind of tolerance.
RESULT_KIND = {"mask": "exact", "out": "elementwise", "dx": "elementwise", "y": "softmax", "loss": "softmax"}
AFFINE_KIND = {"out": "gemm", "dx": "gemm", "dW": "gemm", "db": "gemm"}


class Mismatch(AssertionError):
    """An implementation's result disagrees with the book's."""


def reference_results(layer, inputs):
    """The book's results for ``inputs``, plus the exact loss for SoftmaxWithLoss.

    The book's loss adds 1e-7 inside the log, so the reference loss is the
    exact ``mean(logsumexp(x) - x[t])`` computed in float64 instead.
    """
    ref = make_case(layer, "book", inputs).results()
    if layer == "softmax":
        x = inputs["x"].astype(np.float64)
        t = inputs["t"]
        mx = x.max(axis=1)
        lse = mx + np.log(np.exp(x - mx[:, None]).sum(axis=1))
        ref["loss"] = np.array(np.mean(lse - x[np.arange(x.shape[0]), t]))
    return ref


def check_results(layer, impl, results, reference, dtype):
    """Raise :class:`Mismatch` unless ``results`` agree with ``reference``.

    Only the results both hold are compared (torch keeps no ReLU mask); the
    book's loss is not compared with itself (it is the reference's by design).
    """
    dt = np.dtype(dtype).name
    kinds = AFFINE_KIND if layer == "affine" else RESULT_KIND
    compared = 0
    for name, ref in reference.items():
        if name not in results or (impl == "book" and name == "loss"):
            continue
        got = np.asarray(results[name])
        ref = np.asarray(ref)
        if got.shape != ref.shape:
            raise Mismatch(f"{layer} {impl} {dt}: {name} has shape {got.shape}, the book's {ref.shape}")
        rtol, atol_rel = TOLERANCES[dt][kinds[name]]
        if kinds[name] == "exact":
            ok = np.array_equal(got, ref)
            worst = int(np.count_nonzero(got != ref))
            detail = f"{worst} entries differ"
        else:
            g = got.astype(np.float64)
            r = ref.astype(np.float64)
            scale = float(np.max(np.abs(r))) if r.size else 0.0
            atol = atol_rel * scale
            ok = bool(np.allclose(g, r, rtol=rtol, atol=atol, equal_nan=True))
            diff = np.abs(g - r)
            worst = float(np.nanmax(diff)) if diff.size else 0.0
            detail = f"max |diff| {worst:.3g} (rtol {rtol:g}, atol {atol:.3g})"
        if not ok:
            raise Mismatch(f"{layer} {impl} {dt}: {name} disagrees with the book's: {detail}")
        compared += 1
    if not compared:
        raise Mismatch(f"{layer} {impl} {dt}: no result to compare")
