"""The text report: per-layer tables, reference measurements and the training step."""
import math

from .cases import DTYPES, LAYER_TITLES, LAYERS, PASSES, SIZES
from .references import COPY_KINDS, COPY_SHAPE, work
from .timing import fmt_time
from .train_step import TRAIN

SENTENCE = ("Speed-up is book time divided by bprop time; torch ratio is torch time divided by bprop time "
            "(>1 means bprop is faster)")


def _fmt_measure(r):
    if r is None:
        return "-"
    spread = (r["q3"] - r["q1"]) / 2 / r["median"] * 100 if r["median"] > 0 else 0.0
    return f"{fmt_time(r['median'])} ±{spread:.0f}%"


def _fmt_ratio(x):
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 100 else f"{x:.0f}x"


def _index(data):
    idx = {}
    for r in data["results"]:
        idx[(r["layer"], tuple(r["size"]), r["dtype"], r["pass"], r["impl"])] = r
    return idx


def _gemm_index(data):
    return {(tuple(r["size"]), r["dtype"], r["pass"]): r for r in data["references"]["gemm"]}


def derived(data, bprop_impl="cython"):
    """Per (layer, size, dtype, pass): speed-up, torch ratio, rates, GEMM and copy ratios."""
    idx = _index(data)
    gidx = _gemm_index(data)
    copy = data["references"]["copy"]
    copy_along = {}
    for r in data["references"].get("copy_alongside", []):  # the faster copy of each row
        key = (r["layer"], tuple(r["size"]), r["dtype"], r["pass"])
        if key not in copy_along or r["gbps"] > copy_along[key]["gbps"]:
            copy_along[key] = r
    rows = {}
    keys = sorted({k[:4] for k in idx}, key=lambda k: (LAYERS.index(k[0]), SIZES[k[0]].index(k[1]),
                                                       DTYPES.index(k[2]) if k[2] in DTYPES else 9,
                                                       PASSES.index(k[3])))
    for key in keys:
        layer, size, dt, p = key
        get = lambda impl: idx.get(key + (impl,))  # noqa: E731
        bp = get(bprop_impl)
        bk, tr = get("book"), get("torch")
        row = {"book": bk, "numpy": get("numpy"), "cython": get("cython"), "torch": tr}
        t_bp = bp["median"] if bp else None
        row["speedup"] = bk["median"] / t_bp if (bk and t_bp) else None
        row["torch_ratio"] = tr["median"] / t_bp if (tr and t_bp) else None
        amount, unit = work(layer, size, dt, p)
        row["rate"] = amount / t_bp / 1e9 if t_bp else None
        row["unit"] = "GFLOP/s" if unit == "flop" else "GB/s"
        # Only where the data, like the copy's, is far larger than the caches; against the
        # copy timed alongside when there is one, else the one at the start of the run.
        c = copy_along.get(key) or copy.get(dt)
        row["copy_pct"] = (100 * row["rate"] / c["gbps"]) if (c and row["rate"] and unit == "byte"
                                                            and math.prod(size) >= math.prod(COPY_SHAPE)) else None
        g = gidx.get((size, dt, p))
        row["gemm"] = g
        row["gemm_ratio"] = t_bp / g["median"] if (g and t_bp) else None
        rows[key] = row
    return rows


def format_tables(data, bprop_impl="cython", only=None):
    """The per-layer tables (of layer ``only``, or all) as text."""
    rows = derived(data, bprop_impl)
    out = []
    for layer in LAYERS if only is None else [only]:
        keys = [k for k in rows if k[0] == layer]
        if not keys:
            continue
        affine = layer == "affine"
        # % copy only where it was measured: sizes far larger than the caches, like the copy's.
        with_copy = any(rows[k]["copy_pct"] is not None for k in keys)
        cols = ["size", "dtype", "pass", "book", "numpy", "cython", "speed-up", "GFLOP/s" if affine else "GB/s"]
        cols += ["% copy"] if with_copy else []
        cols += ["torch", "torch/bprop"]
        if affine:
            cols += ["bare GEMM", "layer/GEMM"]
        table = []
        for key in keys:
            _, size, dt, p = key
            r = rows[key]
            rate = "-" if r["rate"] is None else f"{r['rate']:.3g}"
            line = [str(size), dt, p, _fmt_measure(r["book"]), _fmt_measure(r["numpy"]), _fmt_measure(r["cython"]),
                    _fmt_ratio(r["speedup"]), rate]
            if with_copy:
                line.append("-" if r["copy_pct"] is None else f"{r['copy_pct']:.0f}%")
            line += [_fmt_measure(r["torch"]), _fmt_ratio(r["torch_ratio"])]
            if affine:
                line += [_fmt_measure(r["gemm"]), "-" if r["gemm_ratio"] is None else f"{r['gemm_ratio']:.3f}"]
            table.append(line)
        title = LAYER_TITLES[layer]
        if affine:
            note = "size is (N, D, M); GFLOP/s counts 2NDM forward, 4NDM backward"
        elif layer == "relu":
            note = "size is (N, D); GB/s counts x, out, mask (forward) and dout, mask, dx (backward)"
        elif layer == "sigmoid":
            note = "size is (N, D); GB/s counts x, out (forward) and dout, out, dx (backward)"
        else:
            note = "size is (N, C), integer labels; GB/s counts x, t, y (forward) and y, t, dx (backward)"
        if with_copy:
            note += (f"; % copy is bprop's GB/s as a percentage of the copy bandwidth timed alongside, at "
                     f"{COPY_SHAPE} only")
        out.append(f"{title}  ({note})")
        out.append(_render(cols, table))
        out.append("")
    return "\n".join(out)


def _render(cols, table):
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(cols)]
    left = {0, 1, 2}

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(cols), fmt(["-" * w for w in widths])] + [fmt(r) for r in table])


def format_references(data, threads):
    refs = data["references"]
    lines = []
    if refs["copy"]:
        lines.append(f"Copy bandwidth, STREAM-style: a {COPY_SHAPE[0]} x {COPY_SHAPE[1]} array copied into a "
                     f"preallocated one, {threads} thread{'s' if threads != 1 else ''}, bytes read + written; "
                     f"the faster of {' and '.join(COPY_KINDS)} is the reference:")
        for dt, r in refs["copy"].items():
            each = ", ".join(f"{k} {v['gbps']:.2f} GB/s ({_fmt_measure(v)})" for k, v in r["kinds"].items())
            lines.append(f"  {dt}: {r['gbps']:.2f} GB/s [{each}]")
            along = [a for a in refs.get("copy_alongside", []) if a["dtype"] == dt]
            if along:
                per = ", ".join(f"{k} {min(a['gbps'] for a in along if a['kind'] == k):.2f}-"
                                f"{max(a['gbps'] for a in along if a['kind'] == k):.2f}"
                                for k in COPY_KINDS if any(a["kind"] == k for a in along))
                lines.append(f"    timed again alongside each {COPY_SHAPE} row (its % copy uses the faster): "
                             f"{per} GB/s")
    if refs["ufunc"]:
        lines.append("One NumPy ufunc call, np.negative(x) at (100, 50) with a fresh output: "
                     + ", ".join(f"{dt} {_fmt_measure(r)}" for dt, r in refs["ufunc"].items()))
    return "\n".join(lines)


def format_train(train, bprop_impl="cython"):
    if not train:
        return ""
    bp = train.get(bprop_impl)
    lines = [f"Training step: the book's {TRAIN['input']}-{TRAIN['hidden']}-{TRAIN['output']} net, batch "
             f"{TRAIN['batch']}, float64, forward + backward + SGD update"]
    cols = ["implementation", "time", "its time / bprop time"]
    table = []
    for impl in ("book", "numpy", "cython", "torch"):
        r = train.get(impl)
        if r is None:
            continue
        label = {"book": "book (NumPy layers)", "numpy": "bprop, NumPy backend", "cython": "bprop, compiled",
                 "torch": "PyTorch autograd"}[impl]
        sp = r["median"] / bp["median"] if (bp and impl != bprop_impl) else None
        table.append([label, _fmt_measure(r), _fmt_ratio(sp) if sp else "-"])
    lines.append(_render(cols, table))
    return "\n".join(lines)
