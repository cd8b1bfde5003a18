"""The ``bprop`` command: ``info``, ``train``, ``gradcheck`` and ``data``.

Other modules can add subcommands: each module named in ``PLUGINS`` that
imports provides ``add_parser(subparsers)``, which adds its parser and sets
``func=handler`` on it with ``set_defaults``; ``handler(args)`` returns the
exit code (``None`` means 0).
"""
import argparse
import contextlib
import importlib
import json
import sys
import time
import warnings

import numpy as np

import bprop

from . import datasets
from .network import TwoLayerNet, train

#: Subcommand name -> module providing ``add_parser(subparsers)``; skipped when absent.
PLUGINS = {"bench": "bprop.bench"}

_BACKENDS = ("auto", "cython", "numpy")


class _Fail(Exception):
    """An error to report as one line on stderr, with exit status 2."""


def _load(data_dir, quiet=False):
    """load_mnist with one-hot labels, reporting the embedded fallback as one line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", datasets.EmbeddedDataWarning)
        try:
            data = datasets.load_mnist(normalize=True, one_hot_label=True, data_dir=data_dir)
        except (OSError, ValueError) as exc:
            raise _Fail(str(exc)) from None
    for w in caught:
        if issubclass(w.category, datasets.EmbeddedDataWarning):
            if not quiet:
                print(f"bprop: note: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    source = "embedded" if any(issubclass(w.category, datasets.EmbeddedDataWarning) for w in caught) else "full"
    return data, source


def _backend(name, threads=None):
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(bprop.use_backend(name))
    except ImportError as exc:  # "cython" asked for but not built
        raise _Fail(str(exc)) from None
    if threads is not None:
        # The book's matrices are small: a multi-threaded BLAS gains nothing on
        # them and, with another process on the other core, made a training
        # step 13-18 ms instead of 1 ms here. Default: one thread for both.
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(threads))
        before = bprop.get_num_threads()
        bprop.set_num_threads(threads)
        stack.callback(bprop.set_num_threads, before)
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
    if args.net == "convnet":  # the book's ch07/train_convnet.py
        if args.epochs < 1 or args.batch < 1 or args.threads < 1:
            raise _Fail("--epochs, --batch and --threads must be at least 1")
        from . import convnet_train

        return convnet_train.main(args, _load, _backend, _Progress, _plot)
    args.lr = 0.1 if args.lr is None else args.lr
    if args.iters < 1 or args.batch < 1 or args.hidden < 1 or args.threads < 1:
        raise _Fail("--iters, --batch, --hidden and --threads must be at least 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _Fail("--plot needs matplotlib: install matplotlib (pip install 'bprop[plot]')") from None
    dtype = np.dtype(args.dtype)
    data, source = _load(args.data, args.quiet or args.json)
    # One dtype throughout keeps every layer on the compiled float32/float64 kernels.
    (x_train, t_train), (x_test, t_test) = (tuple(a.astype(dtype, copy=False) for a in pair) for pair in data)
    with _backend(args.backend, args.threads):
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
        "backend": backend, "dtype": dtype.name, "data": source,
        "train_size": int(x_train.shape[0]), "test_size": int(x_test.shape[0]), "epochs": result["epochs"],
    }
    if args.plot:
        _plot(args.plot, result, f"bprop train: {source} MNIST, {backend}, {dtype.name}")
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"test accuracy {result['test_acc']:.4f} (train {result['train_acc']:.4f}) after {args.iters} "
              f"iterations; {ms:.3f} ms/iteration without accuracy checks ({backend}, {dtype.name}, "
              f"{source} data, {total:.1f} s in all)")


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
        raise _Fail(str(exc)) from None
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


def build_parser():
    """The argument parser of the ``bprop`` command."""
    parser = argparse.ArgumentParser(
        prog="bprop", description="The backpropagation network of 'Deep Learning from Scratch', chapter 5."
    )
    parser.add_argument("--version", action="version", version=f"bprop {bprop.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("info", help="version, backend, compiled kernels, threads, BLAS")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=_cmd_info)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=0, help="seed of NumPy's global generator (default 0)")
    common.add_argument("--backend", choices=_BACKENDS, default="auto", help="kernels to run on (default auto)")
    common.add_argument("--data", metavar="DIR", help="directory with the four MNIST .gz files")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    common.add_argument("--quiet", action="store_true", help="no progress, no per-epoch lines, no notes")

    p = sub.add_parser("train", parents=[common], help="the book's train_neuralnet.py on MNIST")
    p.add_argument("--iters", type=int, default=10000, help="SGD steps (default 10000)")
    p.add_argument("--batch", type=int, default=100, help="minibatch size (default 100)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.1; Adam's 0.001 for --net convnet)")
    p.add_argument("--net", choices=("twolayer", "convnet"), default="twolayer",
                   help="twolayer: train_neuralnet.py (ch05); convnet: train_convnet.py (ch07, Adam, --epochs)")
    p.add_argument("--epochs", type=int, default=20, help="--net convnet: epochs (default 20, as the book)")
    p.add_argument("--hidden", type=int, default=50, help="hidden units (default 50)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="parameter dtype")
    p.add_argument("--plot", metavar="FILE.png", help="save loss and accuracy curves (needs matplotlib)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for BLAS and bprop's kernels (default 1: the book's matrices are too small to share)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("gradcheck", parents=[common], help="the book's gradient_check.py (784-50-10, 3 images)")
    p.set_defaults(func=_cmd_gradcheck)

    p = sub.add_parser("data", help="get MNIST or show where it is looked for")
    data = p.add_subparsers(dest="data_command", metavar="ACTION")
    data.required = True
    q = data.add_parser("fetch", help="download the full MNIST set, checking SHA-256")
    q.add_argument("--dir", metavar="DIR", help="target directory (default BPROP_DATA or the user cache)")
    q.set_defaults(func=_cmd_data_fetch)
    q = data.add_parser("path", help="show where load_mnist looks, in order")
    q.add_argument("--dir", metavar="DIR", help="also show this data_dir")
    q.set_defaults(func=_cmd_data_path)

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
        p.set_defaults(func=lambda args, exc=exc: _raise(_Fail(f"{name} is unavailable: {exc}")))
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
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except _Fail as exc:
        print(f"bprop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbprop: interrupted", file=sys.stderr)
        return 130
