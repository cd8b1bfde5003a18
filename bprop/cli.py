"""The ``bprop`` command: ``info``, ``train``, ``gradcheck``, ``data``, ``bench`` and ``run``.

A subcommand is a parser added in :func:`build_parser` (or, from another
module named in ``PLUGINS``, by its ``add_parser(subparsers)``) with
``set_defaults(func=handler)``; ``handler(args)`` returns the exit status
(``None`` means 0) or raises :class:`bprop._options.Fail` for a one-line
error. Option values are checked while parsing (:mod:`bprop._options`).
"""
import contextlib
import importlib
import json
import sys
import time
import warnings

import numpy as np

import bprop

from . import _options as options
from . import datasets
from ._options import Fail
from ._threads import cap
from .network import TwoLayerNet, train

#: Subcommand name -> module providing ``add_parser(subparsers)``; skipped when absent.
PLUGINS = {"bench": "bprop.bench", "run": "bprop.run"}

_BACKENDS = ("auto", "cython", "numpy")


def _load(data_dir, quiet=False):
    """load_mnist with one-hot labels, reporting the embedded fallback as one line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", datasets.EmbeddedDataWarning)
        try:
            data = datasets.load_mnist(normalize=True, one_hot_label=True, data_dir=data_dir)
        except (OSError, ValueError) as exc:
            raise Fail(str(exc)) from None
    for w in caught:
        if issubclass(w.category, datasets.EmbeddedDataWarning):
            if not quiet:
                print(f"bprop: note: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    source = "embedded" if any(issubclass(w.category, datasets.EmbeddedDataWarning) for w in caught) else "full"
    return data, source


def _backend(name, threads=None):
    """The context to run in: backend ``name``, and ``threads`` for bprop's kernels and BLAS when given."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(bprop.use_backend(name))
    except ImportError as exc:  # "cython" asked for but not built
        raise Fail(str(exc)) from None
    if threads is not None:
        stack.enter_context(bprop.threads(threads))
    return stack


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, total, stream):
        self.total, self.stream = total, stream
        self.enabled = stream.isatty()
        self.step = max(total // 100, 1)
        self.shown = False

    def __call__(self, i):
        done = i + 1
        if self.enabled and (done % self.step == 0 or done == self.total):
            filled = 30 * done // self.total
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
            self.stream.flush()
            self.shown = True

    def clear(self):
        if self.shown:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()
            self.shown = False


def _cmd_info(args):
    info = bprop.info()
    if args.json:
        print(json.dumps(dict(info) if isinstance(info, dict) else {"info": str(info)}, indent=2, default=str))
    else:
        print(info)


def _plot(path, summary, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(summary["loss"], linewidth=0.5)
    ax_loss.set(xlabel="iteration", ylabel="loss", title="training loss (minibatch)")
    epochs = [r["epoch"] for r in summary["epochs"]]
    ax_acc.plot(epochs, [r["train_acc"] for r in summary["epochs"]], marker="o", label="train")
    ax_acc.plot(epochs, [r["test_acc"] for r in summary["epochs"]], marker="s", linestyle="--", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cmd_train(args):
    if args.plot and options.image_formats() is None:
        raise Fail("--plot needs matplotlib: install matplotlib (pip install 'bprop[plot]')")
    threads, note = cap(args.threads)
    if note and not args.quiet:
        print(f"{args.prog}: note: --threads: {note}", file=sys.stderr)
    if args.net == "convnet":  # the book's ch07/train_convnet.py
        from . import convnet_train

        args.threads = threads
        return convnet_train.main(args, _load, _backend, _Progress, _plot)
    args.lr = 0.1 if args.lr is None else args.lr
    dtype = np.dtype(args.dtype)
    data, source = _load(args.data, args.quiet or args.json)
    if args.batch > len(data[0][0]):
        raise Fail(f"--batch {args.batch} is more than the {len(data[0][0])} training images "
                   f"({source} MNIST)")
    # One dtype throughout keeps every layer on the compiled float32/float64 kernels.
    (x_train, t_train), (x_test, t_test) = (tuple(a.astype(dtype, copy=False) for a in pair) for pair in data)
    with _backend(args.backend, threads):
        np.random.seed(args.seed)
        net = TwoLayerNet(x_train.shape[1], args.hidden, t_train.shape[1], dtype=dtype)
        progress = _Progress(args.iters, sys.stdout) if not (args.quiet or args.json) else None

        def on_epoch(r):
            if progress is not None:
                progress.clear()
                print(f"epoch {r['epoch']:3d}  iter {r['iter']:6d}  loss {r['loss']:.4f}  "
                      f"train acc {r['train_acc']:.4f}  test acc {r['test_acc']:.4f}", flush=True)

        start = time.perf_counter()
        result = train(net, x_train, t_train, x_test, t_test, iters=args.iters,
                       batch_size=args.batch, learning_rate=args.lr, on_epoch=on_epoch, on_iter=progress)
        total = time.perf_counter() - start
        backend = bprop.backend()
    if progress is not None:
        progress.clear()
    ms = 1000 * result["step_time"] / args.iters
    summary = {
        "test_acc": result["test_acc"], "train_acc": result["train_acc"],
        "final_loss": result["loss"][-1], "ms_per_iter": ms, "total_s": total,
        "iters": args.iters, "batch": args.batch, "lr": args.lr, "hidden": args.hidden, "seed": args.seed,
        "threads": threads, "backend": backend, "dtype": dtype.name, "data": source,
        "train_size": int(x_train.shape[0]), "test_size": int(x_test.shape[0]), "epochs": result["epochs"],
    }
    if args.plot:
        _plot(args.plot, result, f"bprop train: {source} MNIST, {backend}, {dtype.name}")
        summary["plot"] = args.plot
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"test accuracy {result['test_acc']:.4f} (train {result['train_acc']:.4f}) after {args.iters} "
              f"iterations; {ms:.3f} ms/iteration without accuracy checks ({backend}, {dtype.name}, "
              f"{source} data, {total:.1f} s in all)")
        if args.plot:
            print(f"wrote {args.plot} (loss per iteration, accuracy per epoch)")


def _cmd_gradcheck(args):
    (x_train, t_train), _ = _load(args.data, quiet=args.quiet)[0]
    with _backend(args.backend):
        np.random.seed(args.seed)
        net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
        x_batch, t_batch = x_train[:3], t_train[:3]
        grad_numerical = net.numerical_gradient(x_batch, t_batch)
        grad_backprop = net.gradient(x_batch, t_batch)
        diffs = {k: float(np.average(np.abs(grad_backprop[k] - grad_numerical[k]))) for k in grad_numerical}
        backend = bprop.backend()
    if args.json:
        print(json.dumps({"backend": backend, "seed": args.seed, "diff": diffs}))
    else:
        for key, diff in diffs.items():
            print(f"{key}: {diff:.3e}")


def _cmd_data_fetch(args):
    try:
        where = datasets.fetch(args.dir, log=print)
    except (datasets.DownloadError, OSError) as exc:
        raise Fail(str(exc)) from None
    print(f"MNIST is ready in {where}")


def _cmd_data_path(args):
    chosen = None
    for label, path, missing in datasets.sources(args.dir):
        if path is None:
            state = "not set"
        elif missing:
            state = f"{path} (missing: {', '.join(missing)})"
        elif label == "embedded":
            state = f"{path} (10,000 test images, split 8,000 train / 2,000 test)"
        else:
            state = f"{path} (complete)"
        print(f"{label + ':':<12}{state}")
        if chosen is None and path is not None:
            if label in ("data_dir", "BPROP_DATA"):
                # An explicit directory is never skipped: load_mnist fails rather than fall back.
                chosen = label + (" (incomplete: load_mnist raises FileNotFoundError)" if missing else "")
            elif not missing:
                chosen = label
    print(f"{'in use:':<12}{chosen}")


def _common(p, quiet):
    """The options ``train`` and ``gradcheck`` share; ``quiet`` says what ``--quiet`` leaves out."""
    p.add_argument("--seed", type=options.seed(p, "--seed"), default=0, help="seed of NumPy's global generator")
    p.add_argument("--backend", choices=_BACKENDS, default="auto", help="kernels to run on")
    p.add_argument("--data", metavar="DIR", type=options.directory(p, "--data"),
                   help="directory with the four MNIST .gz files (default: BPROP_DATA, the user cache, "
                        "else the embedded set; see bprop data path)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--quiet", action="store_true", help=quiet)


def _subcommand(sub, name, func, help, description=None):
    """Add subcommand ``name`` running ``func``; its errors name it (``bprop NAME: error: ...``)."""
    p = sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".",
                       formatter_class=options.HelpFormatter)
    p.set_defaults(func=func, prog=p.prog)
    return p


def build_parser():
    """The argument parser of the ``bprop`` command."""
    parser = options.Parser(
        prog="bprop", description="The backpropagation network of 'Deep Learning from Scratch', chapter 5.")
    parser.add_argument("--version", action="version", version=f"bprop {bprop.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = _subcommand(sub, "info", _cmd_info, "version, backend, compiled kernels, threads, BLAS",
                    "Print what bprop runs on: its version and NumPy's, the backend, whether the compiled "
                    "kernels and OpenMP are there, which loops they run, the thread count and the BLAS.")
    p.add_argument("--json", action="store_true", help="print a JSON object")

    p = _subcommand(sub, "train", _cmd_train, "the book's train_neuralnet.py on MNIST",
                    "Train the book's two-layer network (784-HIDDEN-10) by minibatch SGD, as the book's "
                    "ch05/train_neuralnet.py does, printing loss and accuracy once per epoch.")
    _common(p, "print only the final line: no progress bar, per-epoch lines or notes")
    p.add_argument("--iters", type=options.positive_int(p, "--iters"), default=10000, help="SGD steps")
    p.add_argument("--batch", type=options.positive_int(p, "--batch"), default=100,
                   help="minibatch size, at most the training set's size")
    p.add_argument("--lr", type=options.positive_float(p, "--lr"), default=None,
                   help="learning rate (default 0.1; Adam's 0.001 for --net convnet)")
    p.add_argument("--net", choices=("twolayer", "convnet"), default="twolayer",
                   help="twolayer: train_neuralnet.py (ch05, SGD, --iters); convnet: train_convnet.py "
                        "(ch07, Adam, --epochs)")
    p.add_argument("--epochs", type=options.positive_int(p, "--epochs"), default=20,
                   help="--net convnet: epochs, as the book's 20")
    p.add_argument("--hidden", type=options.positive_int(p, "--hidden"), default=50, help="hidden units")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="parameter and data dtype")
    p.add_argument("--plot", metavar="FILE.png", type=options.output_file(p, "--plot", options.image_formats),
                   help="save loss and accuracy curves to FILE.png (needs matplotlib)")
    p.add_argument("--threads", type=options.positive_int(p, "--threads"), default=1, metavar="N",
                   help="threads for bprop's kernels and NumPy's BLAS, at most the usable cores "
                        "(1 is fastest for the book's small matrices)")

    p = _subcommand(sub, "gradcheck", _cmd_gradcheck, "the book's gradient_check.py (784-50-10, 3 images)",
                    "Compare backprop's gradients with numerical ones on three training images, as the "
                    "book's ch05/gradient_check.py does; prints the mean absolute difference per parameter.")
    _common(p, "no note about which MNIST data is used")

    p = _subcommand(sub, "data", None, "get MNIST or show where it is looked for")
    data = p.add_subparsers(dest="data_command", metavar="ACTION")
    data.required = True
    q = _subcommand(data, "fetch", _cmd_data_fetch, "download the full MNIST set, checking SHA-256")
    q.add_argument("--dir", metavar="DIR", type=options.directory(q, "--dir"),
                   help="target directory (default: BPROP_DATA, else the user cache)")
    q = _subcommand(data, "path", _cmd_data_path, "show where load_mnist looks, in order")
    q.add_argument("--dir", metavar="DIR", help="also show this data_dir")

    for name, module in PLUGINS.items():
        _add_plugin(sub, name, module)
    return parser


def _add_plugin(sub, name, module):
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        if exc.name == module:
            return  # not part of this install
        # Present but broken (e.g. a missing optional dependency): say so when used.
        p = sub.add_parser(name, help=f"unavailable: {exc}")
        p.set_defaults(func=lambda args, exc=exc: _raise(Fail(f"{name} is unavailable: {exc}")))
        return
    mod.add_parser(sub)


def _raise(exc):
    raise exc


def main(argv=None):
    """Run the ``bprop`` command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    return options.run(build_parser(), argv)
