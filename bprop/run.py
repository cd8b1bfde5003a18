"""``bprop run SCRIPT``: run one of the book's scripts unchanged, on bprop.

The script runs as ``__main__``, from the current folder, with the script's
own folder first on ``sys.path`` (as ``python SCRIPT`` does). An import hook,
placed before anything the script adds to ``sys.path``, resolves the book's
``common.*`` modules and ``dataset.mnist`` to module objects that hold
bprop's classes and functions under the book's names. Where the book's own
module is on the path (the book's scripts add its root folder themselves),
it runs too, under a private name, and fills in the names bprop does not
provide; where it is not, such a name is an ``ImportError`` that names it.

Invariant: the hook changes which objects a ``common``/``dataset`` import
gives the script, nothing else; every module it makes is a fresh module
object, and :func:`run` removes the hook and those modules afterwards.
"""
import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import runpy
import sys
from pathlib import Path

__all__ = ["BOOK_MODULES", "run", "main", "add_arguments", "add_parser"]

#: The book's modules that bprop provides, and the bprop modules whose public
#: names (``__all__``) stand in for the book's, later ones winning.
BOOK_MODULES = {
    "common.functions": ("bprop.functions",),
    "common.gradient": ("bprop.gradient",),
    "common.layers": ("bprop.layers", "bprop.batchnorm", "bprop.dropout"),
    "common.multi_layer_net": ("bprop.multi_layer_net",),
    "common.multi_layer_net_extend": ("bprop.multi_layer_net",),
    "common.optimizer": ("bprop.optimizer",),
    "common.trainer": ("bprop.trainer",),
    "dataset.mnist": ("bprop.datasets",),
}
#: Names a bprop module provides that its book counterpart does not have:
#: kept out of the script's namespace, so ``from common.layers import *``
#: brings what the book's would (and bprop.datasets' helpers stay out).
_ONLY = {"dataset.mnist": ("load_mnist",), "common.multi_layer_net": ("MultiLayerNet",),
         "common.multi_layer_net_extend": ("MultiLayerNetExtend",)}
_PACKAGES = {name.partition(".")[0] for name in BOOK_MODULES}
#: The private prefix under which the book's own modules run.
_BOOK_ALIAS = "_bprop_book_"

_MNIST_FILES = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
)


class _Report:
    """What the hook replaced, for ``-v``."""

    def __init__(self, stream=None):
        self.stream = stream

    def say(self, text):
        if self.stream is not None:
            print(f"bprop run: {text}", file=self.stream)


def _book_spec(fullname):
    """The spec of the book's own module ``fullname`` on ``sys.path``, or None."""
    package, _, leaf = fullname.partition(".")
    parent = importlib.machinery.PathFinder.find_spec(package, sys.path)
    if parent is None or not parent.submodule_search_locations:
        return None
    return importlib.machinery.PathFinder.find_spec(fullname, list(parent.submodule_search_locations))


def _book_data_dir(spec):
    """The book's ``dataset`` folder when it holds the four MNIST files (the book's own download)."""
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    return folder if all((folder / f).is_file() for f in _MNIST_FILES) else None


class _Loader(importlib.abc.Loader):
    def __init__(self, report):
        self.report = report

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        fullname = module.__name__
        if fullname in _PACKAGES:  # no book package on the path: an empty one
            module.__path__ = []
            return
        book = self._run_book_module(fullname)
        ours = {}
        for source in BOOK_MODULES[fullname]:
            mod = importlib.import_module(source)
            names = _ONLY.get(fullname, mod.__all__)
            ours.update({n: getattr(mod, n) for n in names})
        if fullname == "dataset.mnist":
            ours["load_mnist"] = _mnist_loader(ours["load_mnist"], _book_data_dir(book and book.__spec__))
        if book is not None:
            module.__dict__.update({k: v for k, v in vars(book).items() if not k.startswith("__")})
        module.__dict__.update(ours)
        module.__bprop_provided__ = tuple(sorted(ours))
        from_book = sorted(k for k, v in vars(module).items()
                           if book is not None and not k.startswith("_") and k not in ours
                           and getattr(v, "__module__", None) == book.__name__)
        self.report.say(f"{fullname}: bprop's {', '.join(sorted(ours))}"
                        + (f"; the book's own {', '.join(from_book)}" if from_book else ""))
        if book is None:
            module.__getattr__ = _missing(fullname)

    @staticmethod
    def _run_book_module(fullname):
        spec = _book_spec(fullname)
        if spec is None:
            return None
        alias = _BOOK_ALIAS + fullname.replace(".", "_")
        spec = importlib.util.spec_from_file_location(alias, spec.origin)
        book = importlib.util.module_from_spec(spec)
        sys.modules[alias] = book
        spec.loader.exec_module(book)
        return book


def _missing(fullname):
    def __getattr__(name):
        raise AttributeError(
            f"{fullname}.{name} is not provided by bprop, and the book's own {fullname} is not on the path "
            "(run the script from the book's folder)"
        )
    return __getattr__


def _mnist_loader(load_mnist, book_dir):
    """bprop's ``load_mnist`` with the book's signature; it reads the book's own download when there is one."""
    if book_dir is None or os.environ.get("BPROP_DATA"):
        def book_load_mnist(normalize=True, flatten=True, one_hot_label=False):
            return load_mnist(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label)
    else:
        def book_load_mnist(normalize=True, flatten=True, one_hot_label=False):
            return load_mnist(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label,
                              data_dir=book_dir)
    book_load_mnist.__doc__ = load_mnist.__doc__
    return book_load_mnist


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, report):
        self.loader = _Loader(report)

    def find_spec(self, fullname, path=None, target=None):
        if fullname in BOOK_MODULES:
            return importlib.machinery.ModuleSpec(fullname, self.loader)
        if fullname in _PACKAGES and importlib.machinery.PathFinder.find_spec(fullname, sys.path) is None:
            return importlib.machinery.ModuleSpec(fullname, self.loader, is_package=True)
        return None  # the book's package itself, when it is on the path


def _hooked(module_name):
    """True for the modules a run resolves or loads: the book's packages and their private aliases."""
    return module_name.partition(".")[0] in _PACKAGES or module_name.startswith(_BOOK_ALIAS)


def run(script, args=(), verbose=None):
    """Run ``script`` as ``__main__`` with the book's modules resolved to bprop's.

    Parameters
    ----------
    script : str or path
        A Python file, e.g. one of the book's chapter scripts.
    args : sequence of str
        The script's ``sys.argv[1:]``.
    verbose : file-like, optional
        Where to list what each book module was resolved to.

    Returns
    -------
    dict
        The script's globals after it ran.
    """
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"bprop run: no such script: {script}")
    finder = _Finder(_Report(verbose))
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    # A 'common' or 'dataset' imported before would shadow the hook: set
    # aside for the run, and put back afterwards.
    set_aside = {m: sys.modules.pop(m) for m in list(sys.modules) if _hooked(m)}
    sys.meta_path.insert(0, finder)
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.resolve().parent))
    try:
        return runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.meta_path.remove(finder)
        sys.argv, sys.path[:] = saved_argv, saved_path
        for name in [m for m in sys.modules if _hooked(m)]:
            del sys.modules[name]
        sys.modules.update(set_aside)


def add_arguments(p):
    """Add the ``run`` options to parser ``p``."""
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list on stderr what each of the book's modules was resolved to")
    p.add_argument("script", help="the Python script to run, e.g. one of the book's chapter scripts")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed on to the script")


def add_parser(subparsers):
    """Register the ``run`` subcommand on the ``bprop`` command's subparsers."""
    from . import _options as options

    p = subparsers.add_parser(
        "run", help="run one of the book's scripts unchanged, on bprop",
        description="Run SCRIPT as __main__ from the current folder, with the book's common.* modules and "
                    "dataset.mnist resolved to bprop's. Names bprop does not provide come from the book's own "
                    "modules when they are on the path (the book's scripts put its root there).",
        formatter_class=options.HelpFormatter)
    add_arguments(p)
    p.set_defaults(func=main, prog=p.prog)
    return p


def main(args):
    """Run the parsed ``bprop run`` arguments; returns the script's exit status."""
    from ._options import Fail

    if not Path(args.script).is_file():
        raise Fail(f"no such script: {args.script}")
    try:
        run(args.script, args.args, verbose=sys.stderr if args.verbose else None)
    except ImportError as exc:
        name = getattr(exc, "name", None) or ""
        if _hooked(name):
            print(f"{args.prog}: {args.script} needs something bprop does not provide: {exc}", file=sys.stderr)
            return 1
        raise
    except SystemExit as exc:  # the script's own exit status
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
