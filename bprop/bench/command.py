"""``bprop bench`` and ``python -m bprop.bench``: options, the run, the report."""
import json
import sys
import time

import numpy as np

from .. import _options as options
from .._threads import cap
from .cases import CHOICES, DTYPES, IMPLS, LAYERS, PASSES, QUICK_DROP, SIZES, impl_missing_reason
from .check import Mismatch
from .environment import _loadavg, format_header, header, thread_limits
from .measure import run_benchmarks
from .plot import plot
from .report import SENTENCE, format_references, format_tables, format_train
from .timing import FULL_TIMING, QUICK_TIMING
from .train_step import measure_train_step

DESCRIPTION = ("Time bprop's layers (compiled and NumPy backends) against the book's NumPy layers and PyTorch's "
               "CPU kernels, per layer, size, dtype and pass, after checking that each gives the book's results; "
               "then a training step of the book's network. " + SENTENCE + ".")


def add_arguments(p):
    """Add the ``bench`` options to parser ``p``."""
    p.add_argument("--quick", action="store_true",
                   help="leave out the largest size of each layer and time shorter (about a minute on a 2-core "
                        "machine; the full run takes 10 minutes or more)")
    p.add_argument("--layers", type=options.csv(p, "--layers", CHOICES), default=list(CHOICES), metavar="LIST",
                   help=f"comma-separated, from {','.join(CHOICES)} (train: one SGD step of the book's net; "
                        "conv: chapter 7; ch6: Adam and BatchNormalization; ch8: a DeepConvNet training step; the book "
                        "column of conv, ch6 and ch8 needs BPROP_BOOK_DIR, a clone of the book's code)")
    p.add_argument("--dtype", type=options.csv(p, "--dtype", DTYPES), default=list(DTYPES), metavar="LIST",
                   help="comma-separated, from float64,float32")
    p.add_argument("--passes", type=options.csv(p, "--passes", PASSES), default=list(PASSES), metavar="LIST",
                   help="comma-separated, from forward,backward,both")
    p.add_argument("--sizes", choices=("all", "quick", "smallest"), default=None,
                   help="which sizes: all, quick (all but the largest of each layer) or smallest "
                        "(default: quick with --quick, else all)")
    p.add_argument("--threads", type=options.positive_int(p, "--threads"), default=1, metavar="N",
                   help="threads for bprop's kernels, NumPy's BLAS and PyTorch alike, at most the usable cores")
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch even when it is installed")
    p.add_argument("--min-time", type=options.positive_float(p, "--min-time"), default=None, metavar="SECONDS",
                   help=f"each repeat lasts at least this long (default: {QUICK_TIMING[0]:g} with --quick, "
                        f"else {FULL_TIMING[0]:g})")
    p.add_argument("--repeats", type=options.positive_int(p, "--repeats"), default=None, metavar="N",
                   help=f"repeats per measurement; the table shows their median (default: {QUICK_TIMING[1]} "
                        f"with --quick, else {FULL_TIMING[1]})")
    p.add_argument("--json", metavar="FILE", type=options.output_file(p, "--json"),
                   help="also write every measurement as JSON to FILE")
    p.add_argument("--plot", metavar="FILE.png", type=options.output_file(p, "--plot", options.image_formats),
                   help="draw the forward+backward speed-ups as grouped bars (needs matplotlib)")
    p.add_argument("--progress", action="store_true", help="print each measurement to stderr as it is taken")
    return p


def add_parser(subparsers):
    """Register the ``bench`` subcommand on the ``bprop`` command's subparsers."""
    p = subparsers.add_parser("bench", help="time bprop's layers against the book's NumPy code and PyTorch",
                              description=DESCRIPTION, formatter_class=options.HelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run, prog=p.prog)
    return p


def run(args):
    """Run the benchmark described by parsed ``args``; returns the exit status."""
    if args.plot and options.image_formats() is None:
        raise options.Fail("--plot needs matplotlib, which is not installed: pip install matplotlib "
                           "(or pip install 'bprop[plot]')")
    threads, note = cap(args.threads)
    if note:
        print(f"{args.prog}: note: --threads: {note}", file=sys.stderr)
    timing = QUICK_TIMING if args.quick else FULL_TIMING
    timing = (args.min_time or timing[0], args.repeats or timing[1])
    mode = args.sizes or ("quick" if args.quick else "all")
    layers = [l for l in args.layers if l in LAYERS]
    if mode == "smallest":
        sizes = {l: SIZES[l][:1] for l in LAYERS}
    elif mode == "quick":
        sizes = {l: SIZES[l][:-QUICK_DROP] for l in LAYERS}
    else:
        sizes = dict(SIZES)
    impls = [i for i in IMPLS if not (i == "torch" and args.no_torch)]
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.progress else None
    start = time.perf_counter()
    with thread_limits(threads, with_torch=not args.no_torch):
        h = header(threads, timing, args.quick, note, with_torch=not args.no_torch)
        if args.no_torch:
            h["torch_skipped"] = "not compared (--no-torch)"
        elif impl_missing_reason("torch"):
            h["torch_skipped"] = "not importable"
            h["note"] = "; ".join(filter(None, [h.get("note"), impl_missing_reason("torch")]))
        print(format_header(h), flush=True)
        for impl in impls:
            if impl != "torch" and impl_missing_reason(impl):
                print(f"{impl}: skipped: {impl_missing_reason(impl)}")
        print(flush=True)
        bprop_impl = h["bprop_impl"]

        def show(layer, data):
            print(format_tables(data, bprop_impl, only=layer), flush=True)

        try:
            data = run_benchmarks(layers, args.dtype, args.passes, sizes, impls, timing, threads, log=log,
                                  references=True, on_layer=show)
            train_impls = [i for i in ("book", "numpy", "cython", "torch") if i in impls
                           and not impl_missing_reason(i)]
            data["train"] = measure_train_step(train_impls, timing, log) if "train" in args.layers else {}
            data["conv"] = _conv_rows(args) if "conv" in args.layers else []
            data["ch6_ch8"] = _ch6_ch8_rows(args)
        except Mismatch as exc:
            raise options.Fail(f"stopped: {exc} (a wrong result is not timed)") from None
    data["header"] = h
    data["header"]["load_average_end"] = _loadavg()
    refs = format_references(data, threads)
    if refs:
        print(refs)
        print()
    tr = format_train(data["train"], bprop_impl)
    if tr:
        print(tr)
    if data["conv"]:
        from .._bench_conv import format_rows
        print("Chapter 7, one thread, forward+backward (medians of CPU time per call)\n")
        print(format_rows(data["conv"]))
    if data["ch6_ch8"]:
        from .._bench_conv import format_rows
        print("\nChapters 6 and 8, one thread (medians of CPU time per call)\n")
        print(format_rows(data["ch6_ch8"]))
    elapsed = time.perf_counter() - start
    data["elapsed_s"] = elapsed
    load = data["header"]["load_average_end"]
    print(f"\n({elapsed:.0f} s" + (f"; load average at end {load:.2f})" if load is not None else ")"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=_json_default)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot(args.plot, data, bprop_impl)
        print(f"wrote {args.plot}")
    return 0


def _conv_rows(args):
    """Chapter 7's rows (book's own code where BPROP_BOOK_DIR names it, bprop, torch)."""
    from .._bench_conv import measure
    rows = measure(repeats=5 if args.quick else 15)
    if args.no_torch:
        for r in rows:
            r["torch"] = None
    return rows


def _ch6_ch8_rows(args):
    """Chapters 6 and 8's rows for the chapters ``--layers`` names (book's own code where
    BPROP_BOOK_DIR names it, bprop, torch), in the ``--dtype`` list."""
    chapters = [c for c in ("ch6", "ch8") if c in args.layers]
    if not chapters:
        return []
    from .._bench_ch6_ch8 import measure
    rows = measure(repeats=5 if args.quick else 15, chapters=chapters, dtypes=args.dtype)
    if args.no_torch:
        for r in rows:
            r["torch"] = None
    return rows


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def build_parser():
    """The parser of ``python -m bprop.bench`` (the options of ``bprop bench``)."""
    p = options.Parser(prog="python -m bprop.bench", description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=run, prog=p.prog)
    return p


def main(argv=None):
    """``python -m bprop.bench [ARGS]``, the same as ``bprop bench``; returns the exit status."""
    return options.run(build_parser(), argv)
