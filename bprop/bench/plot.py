"""``--plot``: the forward+backward speed-ups as grouped bars (needs matplotlib)."""
import math

from .cases import DTYPES, LAYER_TITLES, LAYERS, SIZES
from .report import derived

#: What a size tuple holds, per layer.
SIZE_AXES = {"relu": "(N, D)", "sigmoid": "(N, D)", "affine": "(N, D, M)", "softmax": "(N, C)"}


def plot(path, data, bprop_impl="cython"):
    """Grouped bars per size: the forward+backward speed-up over the book, and the torch ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows = derived(data, bprop_impl)
    layers = [l for l in LAYERS if any(k[0] == l for k in rows)]
    ncols = min(2, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    for ax, layer in zip(axes.flat, layers):
        measured = [k[3] for k in rows if k[0] == layer]
        pass_ = "both" if "both" in measured else measured[0]
        sizes = [s for s in SIZES[layer] if (layer, s) in {(k[0], k[1]) for k in rows}]
        dts = [d for d in DTYPES if any(k[0] == layer and k[2] == d for k in rows)]
        series = [(f"book time / bprop time, {d}", d, "speedup") for d in dts]
        series += [(f"torch time / bprop time, {d}", d, "torch_ratio") for d in dts
                   if any(r["torch_ratio"] is not None for k, r in rows.items() if k[0] == layer and k[2] == d)]
        width = 0.8 / max(len(series), 1)
        for i, (lab, d, field) in enumerate(series):
            vals = [(rows.get((layer, s, d, pass_)) or {}).get(field) for s in sizes]
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(sizes))]
            bars = ax.bar([x for x, v in zip(xs, vals) if v], [v for v in vals if v], width, label=lab,
                          hatch="//" if field == "torch_ratio" else None, edgecolor="white")
            ax.bar_label(bars, labels=[f"{v:.2g}" for v in vals if v], fontsize=7, padding=1)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([" x ".join(map(str, s)) for s in sizes], fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.margins(y=0.15)
        what = "forward+backward" if pass_ == "both" else pass_
        ax.set_title(f"{LAYER_TITLES[layer]} ({what})", fontsize=10)
        ax.set_xlabel(f"size {SIZE_AXES[layer]}", fontsize=8)
        ax.set_ylabel("other's time / bprop's time (log scale; > 1: bprop faster)", fontsize=8)
    handles, labels = {}, []
    for ax in axes.flat:
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            if lb not in handles:
                handles[lb] = hd
                labels.append(lb)
    fig.legend([handles[lb] for lb in labels], labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    h = data["header"]
    versus = "the book's NumPy layers" + (f" and PyTorch {h['torch']}" if h.get("torch") else "")
    fig.suptitle(f"bprop {h['bprop']} vs {versus}: "
                 f"{h['cpu']}, {h['threads']} thread{'s' if h['threads'] != 1 else ''}, {h['date'][:10]}",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if nrows == 1 else 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
