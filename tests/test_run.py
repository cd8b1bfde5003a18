"""``bprop run``: the book's scripts, unchanged, on bprop's modules."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bprop
from bprop import run as bprop_run
from conftest import MNIST_DIR

BOOK_DIR = MNIST_DIR.parents[1] / "book"
needs_book = pytest.mark.skipif(
    not (BOOK_DIR / "common" / "layers.py").is_file(),
    reason=f"the book's repository is not beside the project (looked in {BOOK_DIR})",
)
needs_mnist = pytest.mark.skipif(
    not all((MNIST_DIR / f).is_file() for f in bprop_run._MNIST_FILES),
    reason=f"the full MNIST set is not beside the project (looked in {MNIST_DIR})",
)


def run_cli(args, cwd, seed=None, env=None):
    """``bprop run ARGS`` in a fresh interpreter (the hook changes sys.modules); numpy's global seed first."""
    code = (
        "import sys, numpy\n"
        + (f"numpy.random.seed({seed})\n" if seed is not None else "")
        + "from bprop.cli import main\n"
        "sys.exit(main(['run', *sys.argv[1:]]))\n"
    )
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_common_modules_resolve_to_bprop(tmp_path):
    script = write(tmp_path / "uses_common.py", """
        import sys
        import bprop, bprop.functions, bprop.gradient
        from common.layers import *
        from common.functions import softmax
        from common.gradient import numerical_gradient
        from dataset.mnist import load_mnist
        assert (Relu, Affine, SoftmaxWithLoss) == (bprop.Relu, bprop.Affine, bprop.SoftmaxWithLoss)
        assert softmax is bprop.functions.softmax and numerical_gradient is bprop.gradient.numerical_gradient
        print(__name__, sys.argv[1:], load_mnist.__name__)
    """)
    done = run_cli([str(script), "a", "--b"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["__main__", "['a',", "'--b']", "book_load_mnist"]


def test_script_folder_is_first_on_the_path(tmp_path):
    write(tmp_path / "helper_module.py", "VALUE = 42\n")
    script = write(tmp_path / "main.py", "from helper_module import VALUE\nprint(VALUE)\n")
    done = run_cli([str(script)], cwd=tmp_path.parent)  # run from another folder
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


def test_a_name_bprop_lacks_without_the_book_is_a_clear_error(tmp_path):
    script = write(tmp_path / "needs_more.py", "from common.layers import NoSuchLayer\n")
    done = run_cli([str(script)], cwd=tmp_path)
    assert done.returncode == 1
    assert "needs_more.py needs something bprop does not provide" in done.stderr
    assert "NoSuchLayer" in done.stderr and "Traceback" not in done.stderr


def test_missing_script_is_a_usage_error(tmp_path):
    done = run_cli(["no_such_script.py"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "bprop run: error: no such script: no_such_script.py"


def test_the_script_exit_status_is_kept(tmp_path):
    script = write(tmp_path / "exits.py", "import sys\nsys.exit(3)\n")
    assert run_cli([str(script)], cwd=tmp_path).returncode == 3


def test_run_leaves_the_interpreter_as_it_found_it(tmp_path, monkeypatch):
    script = write(tmp_path / "plain.py", "from common.layers import Relu\nRESULT = Relu\n")
    someone_elses = type(sys)("common")  # a 'common' package the caller had imported
    monkeypatch.setitem(sys.modules, "common", someone_elses)
    meta_path, path, argv, modules = sys.meta_path[:], sys.path[:], sys.argv[:], dict(sys.modules)
    globals_ = bprop_run.run(script)
    assert globals_["RESULT"] is bprop.Relu
    assert sys.meta_path == meta_path and sys.path == path and sys.argv == argv
    assert sys.modules["common"] is someone_elses
    assert [m for m in sys.modules if m.split(".")[0] in ("common", "dataset")] == ["common"]
    assert not [m for m in set(sys.modules) - set(modules) if m.startswith("_bprop_book_")]


@needs_book
def test_verbose_lists_what_was_replaced_and_what_the_book_fills_in(tmp_path):
    script = write(tmp_path / "imports.py", f"""
        import sys
        sys.path.append({str(BOOK_DIR)!r})
        from common.functions import softmax, step_function
        import bprop.functions
        assert softmax is bprop.functions.softmax
        assert step_function.__module__.startswith("_bprop_book_")  # the book's own function fills the gap
    """)
    done = run_cli(["-v", str(script)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stderr.splitlines() if l.startswith("bprop run: common.functions:"))
    assert "bprop's" in line and "softmax" in line and "the book's own" in line and "step_function" in line


def _gradient_lines(stdout):
    rows = [line.split(":") for line in stdout.split() if ":" in line]
    return [name for name, _ in rows], np.array([float(v) for _, v in rows])


@needs_book
@needs_mnist
def test_book_ch05_gradient_check_against_the_books_own_run(tmp_path):
    # The book's own run needs its dataset/ folder to hold the MNIST files
    # (its loader downloads otherwise): a copy of the book gets them.
    book = tmp_path / "book"
    for part in ("common", "dataset", "ch05"):
        shutil.copytree(BOOK_DIR / part, book / part)
    for f in bprop_run._MNIST_FILES:
        shutil.copy(MNIST_DIR / f, book / "dataset" / f)
    own = subprocess.run(
        [sys.executable, "-c", "import numpy, runpy; numpy.random.seed(0); "
         "runpy.run_path('gradient_check.py', run_name='__main__')"],
        cwd=book / "ch05", capture_output=True, text=True, timeout=600,
    )
    assert own.returncode == 0, own.stderr
    ours = run_cli(["gradient_check.py"], cwd=BOOK_DIR / "ch05", seed=0, env={"BPROP_DATA": str(MNIST_DIR)})
    assert ours.returncode == 0, ours.stderr
    names, book_diffs = _gradient_lines(own.stdout)
    our_names, our_diffs = _gradient_lines(ours.stdout)
    assert our_names == names == ["W1", "b1", "W2", "b2"]
    # Same seed, same data, same weights: bprop's exact loss leaves the
    # numerical and analytic gradients at most as far apart as the book's.
    assert np.all(our_diffs <= book_diffs + 1e-9), (ours.stdout, own.stdout)


def _book_copy(tmp_path, chapter):
    """A copy of the book's common/, dataset/ (with the MNIST files) and one chapter folder."""
    book = tmp_path / "book"
    for part in ("common", "dataset", chapter):
        shutil.copytree(BOOK_DIR / part, book / part)
    for f in bprop_run._MNIST_FILES:
        shutil.copy(MNIST_DIR / f, book / "dataset" / f)
    return book


@pytest.mark.slow  # two numerical gradients over 90,000 parameters
@needs_book
@needs_mnist
def test_book_ch06_batch_norm_gradient_check_against_the_books_own_run(tmp_path):
    book = _book_copy(tmp_path, "ch06")
    own = subprocess.run(
        [sys.executable, "-c", "import numpy, runpy; numpy.random.seed(0); "
         "runpy.run_path('batch_norm_gradient_check.py', run_name='__main__')"],
        cwd=book / "ch06", capture_output=True, text=True, timeout=600,
    )
    assert own.returncode == 0, own.stderr
    ours = run_cli(["batch_norm_gradient_check.py"], cwd=BOOK_DIR / "ch06", seed=0,
                   env={"BPROP_DATA": str(MNIST_DIR)})
    assert ours.returncode == 0, ours.stderr
    names, book_diffs = _gradient_lines(own.stdout)
    our_names, our_diffs = _gradient_lines(ours.stdout)
    assert our_names == names == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    # The same weights and data: each difference at most the book's (its
    # 1e-7 inside the log adds to some), up to rounding.
    assert np.all(our_diffs <= book_diffs * (1 + 1e-5) + 1e-9), (ours.stdout, own.stdout)


@needs_book
def test_book_ch06_optimizer_compare_naive_against_the_books_own_run(tmp_path):
    pytest.importorskip("matplotlib")
    # The script optimises plain floats and plots the paths; both runs print
    # the last optimizer's path, which must be the same to the last bit.
    show = "print(repr(g['x_history']), repr(g['y_history']))"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    own = subprocess.run(
        [sys.executable, "-c", f"import runpy; g = runpy.run_path('optimizer_compare_naive.py', run_name='__main__'); {show}"],
        cwd=_book_copy(tmp_path, "ch06") / "ch06", capture_output=True, text=True, timeout=600, env=env,
    )
    assert own.returncode == 0, own.stderr
    ours = subprocess.run(
        [sys.executable, "-c", f"from bprop.run import run; g = run('optimizer_compare_naive.py'); {show}"],
        cwd=BOOK_DIR / "ch06", capture_output=True, text=True, timeout=600, env=env,
    )
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == own.stdout and len(ours.stdout) > 100
