"""The project's speed targets, checked against a ``bprop bench --json`` file (a development tool).

The targets are the project's own goals, not something a user of ``bprop
bench`` needs, so the command does not print them::

    bprop bench --json results.json
    python bench/targets.py results.json
"""
import json
import sys

from bprop.bench.cases import SIZES
from bprop.bench.report import derived


def targets(data, bprop_impl="cython"):
    """Check the measurements against bprop's performance targets.

    Returns a list of dicts: ``target``, ``met`` (bool or None when not
    measured) and ``detail``.
    """
    rows = derived(data, bprop_impl)
    out = []

    def add(target, checks, fmt):
        """checks: list of (label, value, threshold, higher_is_better)."""
        if not checks:
            out.append({"target": target, "met": None, "detail": "not measured in this run"})
            return
        bad = [c for c in checks if (c[1] < c[2] if c[3] else c[1] > c[2])]
        worst = min(checks, key=lambda c: c[1] / c[2] if c[3] else c[2] / c[1])
        detail = f"worst {worst[0]}: {fmt(worst[1])} (target {'>=' if worst[3] else '<='} {fmt(worst[2])})"
        if bad:
            detail = f"{len(bad)} of {len(checks)} miss; " + detail
        else:
            detail = f"all {len(checks)} met; " + detail
        out.append({"target": target, "met": not bad, "detail": detail,
                    "misses": [{"where": c[0], "value": c[1], "threshold": c[2]} for c in bad]})

    def label(key):
        layer, size, dt, p = key
        return f"{layer} {size} {dt} {p}"

    ratio = lambda x: f"{x:.2f}x"  # noqa: E731
    checks = [(label(k), r["torch_ratio"], 1.0, True) for k, r in rows.items()
              if k[3] == "both" and r["torch_ratio"] is not None]
    add("vs PyTorch: torch/bprop >= 1.0 on forward+backward, every layer, size and dtype", checks, ratio)

    def book_checks(layer, threshold):
        return [(label(k), r["speedup"], threshold(k[1]), True) for k, r in rows.items()
                if k[0] == layer and r["speedup"] is not None and threshold(k[1]) is not None]

    add("vs the book: Relu >= 3x at (100, 50), >= 8x at (100, 784) and (1000, 1000) (every pass)",
        book_checks("relu", lambda s: {(100, 50): 3.0, (100, 784): 8.0, (1000, 1000): 8.0}.get(s)), ratio)
    add("vs the book: Sigmoid >= 3x (every size and pass)", book_checks("sigmoid", lambda s: 3.0), ratio)
    add("vs the book: SoftmaxWithLoss >= 5x (every size and pass)", book_checks("softmax", lambda s: 5.0), ratio)
    add("vs the book: Affine >= 1.4x at (100, 50, 10), never slower elsewhere (every pass)",
        book_checks("affine", lambda s: 1.4 if s == (100, 50, 10) else 1.0), ratio)
    add("vs the book: at the largest size every elementwise layer >= 3x (every pass)",
        [c for layer in ("relu", "sigmoid") for c in book_checks(layer, lambda s, l=layer: 3.0 if s == SIZES[l][-1]
                                                                   else None)], ratio)

    checks = [(label(k), r["gemm_ratio"], 1.05, False) for k, r in rows.items() if r["gemm_ratio"] is not None]
    add("Affine at (1024, 1024, 1024) and up: within 5% of the bare GEMMs (layer/GEMM <= 1.05)", checks,
        lambda x: f"{x:.3f}")

    checks = [(label(k), r["copy_pct"], 70.0, True) for k, r in rows.items()
              if k[0] in ("relu", "sigmoid") and k[3] == "forward" and k[1] == (4096, 4096)
              and r["copy_pct"] is not None]
    add("Relu and Sigmoid forward at (4096, 4096): >= 70% of copy bandwidth", checks, lambda x: f"{x:.0f}%")

    uf = data["references"]["ufunc"]
    checks = []
    for k, r in rows.items():
        if k[0] == "relu" and k[1] == (100, 50) and k[3] == "forward" and k[2] in uf and r[bprop_impl]:
            checks.append((label(k) + " / one ufunc call", r[bprop_impl]["median"] / uf[k[2]]["median"], 2.0, False))
    add("Per-call overhead: a Relu forward at (100, 50) costs little more than one NumPy ufunc call "
        "(here: <= 2x)", checks, ratio)

    train = data.get("train") or {}
    bp = train.get(bprop_impl)
    for impl, target, what in (("book", 1.3, "the book"), ("torch", 1.5, "a PyTorch autograd equivalent")):
        checks = []
        if bp and impl in train:
            checks.append((f"bprop vs {impl}", train[impl]["median"] / bp["median"], target, True))
        add(f"Training step (784-50-10, batch 100, float64): bprop >= {target}x {what}", checks, ratio)
    return out


def format_targets(tlist):
    lines = ["Targets:"]
    for t in tlist:
        state = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"  [{state}] {t['target']}")
        if t["met"] is not None:
            lines.append(f"      {t['detail']}")
            misses = sorted(t.get("misses", []), key=lambda m: m["value"] / m["threshold"]
                            if m["value"] < m["threshold"] else m["threshold"] / m["value"])
            for m in misses[:8]:
                lines.append(f"      miss: {m['where']}: {m['value']:.3g} (target {m['threshold']:g})")
            if len(misses) > 8:
                lines.append(f"      ... and {len(misses) - 8} more (see --json)")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python bench/targets.py RESULTS.json  (from bprop bench --json RESULTS.json)", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        data = json.load(f)
    result = targets(data, data["header"]["bprop_impl"])
    print(format_targets(result))
    return 0 if all(t["met"] is not False for t in result) else 1


if __name__ == "__main__":
    sys.exit(main())
