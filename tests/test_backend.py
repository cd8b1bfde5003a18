"""The backend switch, the build record, BPROP_SIMD, and the guard that the compiled kernels really load."""
import inspect
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

import bprop
from bprop import _backend, _numpy_kernels

#: From the build record (bprop/_build.py), as the backend fixture reads it.
PURE = _backend.PURE_BUILD
SOURCE = Path(__file__).resolve().parents[1] / "bprop"


def _python(code, cwd=None, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("BPROP_BACKEND", "BPROP_SIMD")}
    clean.update(env)
    # From outside the checkout by default: `python -c` puts the working directory
    # first on sys.path, which would import the source tree, not the installed bprop.
    return subprocess.run([sys.executable, "-W", "default", "-c", code], env=clean, capture_output=True,
                          text=True, cwd=cwd or tempfile.gettempdir())


# Importing bprop with the compiled module blocked, as in a pure or broken install.
BLOCKED = "import sys; sys.modules['bprop._kernels'] = None\n"


def record(pure):
    """Code that makes the next `import bprop` see a build record saying ``PURE = pure`` (None: no record)."""
    if pure is None:
        return "import sys; sys.modules['bprop._build'] = None\n"
    return ("import sys, types; r = types.ModuleType('bprop._build'); "
            f"r.PURE = {pure}; r.COMPILER = None; sys.modules['bprop._build'] = r\n")


def test_default_backend_is_the_installed_one():
    """A compiled build must run compiled by default; a pure one runs the twin, silently."""
    proc = _python("import bprop, bprop._backend as b; print(bprop.backend(), b.compiled_available())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    if PURE:
        assert proc.stdout.split() == ["numpy", "False"]
    else:
        assert proc.stdout.split() == ["cython", "True"], proc.stderr


def test_pure_build_is_silent_everywhere():
    """Import, auto, and the README's info command: no warning, and info says it is a pure build."""
    proc = _python(BLOCKED + record(True) + "import bprop; bprop.set_backend('auto'); print(bprop.info())")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "pure build (BPROP_NO_EXTENSIONS=1)" in proc.stdout
    assert "none (pure build)" in proc.stdout  # the compiler line


@pytest.mark.parametrize("pure", [False, None], ids=["record-says-compiled", "no-record"])
def test_missing_kernels_warn_once_with_a_local_remedy(pure):
    """A build that should have compiled kernels warns once, naming how to rebuild, never an index."""
    code = BLOCKED + record(pure) + (
        "import warnings\nwarnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import bprop; bprop.set_backend('auto'); bprop.set_backend('auto')\n"
        "msgs = [str(x.message) for x in w if issubclass(x.category, bprop.BackendWarning)]\n"
        "print(bprop.backend(), len(msgs)); print(msgs[0] if msgs else '')"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    head, msg = proc.stdout.split("\n", 1)
    assert head.split() == ["numpy", "1"]
    assert "pip install -e ." in msg or "pip install --force-reinstall ." in msg, msg
    assert "BPROP_BACKEND=numpy" in msg
    assert "--no-binary" not in msg and "pip install bprop" not in msg and "circular" not in msg, msg


def test_unbuilt_source_tree_says_so(tmp_path):
    """`import bprop` from a checkout with no compiled module names the folder and `pip install -e .`."""
    if not (SOURCE / "_kernels.pyx").is_file():
        pytest.skip(f"no source tree beside the tests ({SOURCE})")
    tree = tmp_path / "clone"
    # The checkout as git has it: no compiled module, no build record.
    shutil.copytree(SOURCE, tree / "bprop", ignore=shutil.ignore_patterns(
        "*.so", "*.pyd", "_build.py", "__pycache__", "data", "*.c", "*.html"))
    # An editable install's import hook (setuptools' finder) would hand the copy
    # the real tree's compiled module by name; a user's plain checkout has none.
    unhook = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
    proc = _python(unhook + "import bprop; print(bprop.backend()); print(bprop.info()['build'])", cwd=tree)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["numpy", f"not built: the source tree {tree}"]
    assert "BackendWarning" in proc.stderr
    assert f"bprop is imported from the source tree {tree}" in proc.stderr
    assert "no compiled bprop/_kernels*.so" in proc.stderr and "`pip install -e .` there" in proc.stderr
    assert "circular" not in proc.stderr


@pytest.mark.skipif(PURE, reason="pure-Python install: there is no compiled module to inspect")
def test_compiled_module_is_an_extension():
    mod = _backend.compiled_module()
    assert mod.__file__.endswith((".so", ".pyd"))
    with bprop.use_backend("cython"):
        assert _backend.kernels is mod


def _kernel_names(mod):
    """The public functions a kernel module defines, or (the twin) takes from its own submodules."""
    def own(f):
        m = getattr(f, "__module__", "") or ""
        return m == mod.__name__ or m.startswith("bprop._numpy_")
    return {n for n, f in vars(mod).items() if callable(f) and not n.startswith("_") and own(f)}


@pytest.mark.skipif(PURE, reason="pure-Python install: there is no compiled module to compare")
def test_twins_have_the_same_names_and_signatures():
    compiled = _backend.compiled_module()
    names = _kernel_names(compiled)
    assert names == _kernel_names(_numpy_kernels)
    for name in sorted(names):
        fast = list(inspect.signature(getattr(compiled, name)).parameters)
        slow = list(inspect.signature(getattr(_numpy_kernels, name)).parameters)
        assert fast == slow, name


@pytest.mark.parametrize("pure", [True, False], ids=["pure", "compiled"])
def test_env_cython_without_extension_is_an_import_error_that_says_why(pure):
    proc = _python(BLOCKED + record(pure) + "import bprop", BPROP_BACKEND="cython")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "compiled kernels" in proc.stderr
    assert "BPROP_BACKEND=numpy" in proc.stderr
    assert ("pure build (BPROP_NO_EXTENSIONS=1)" in proc.stderr) is pure
    assert "--no-binary" not in proc.stderr


@pytest.mark.parametrize("name", ["numpy", "cython"])
def test_env_selects_backend(name):
    if name == "cython" and PURE:
        pytest.skip("pure-Python install")
    proc = _python("import bprop; print(bprop.backend())", BPROP_BACKEND=name)
    assert proc.stdout.strip() == name, proc.stderr


def test_use_backend_restores_previous():
    before = bprop.backend()
    with bprop.use_backend("numpy"):
        assert bprop.backend() == "numpy"
        assert _backend.kernels is _numpy_kernels
    assert bprop.backend() == before


def test_use_backend_restores_after_error():
    before = bprop.backend()
    with pytest.raises(KeyError):
        with bprop.use_backend("numpy"):
            raise KeyError("boom")
    assert bprop.backend() == before


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown bprop backend 'fortran'"):
        bprop.set_backend("fortran")


def test_info_reports_the_configuration():
    info = bprop.info()
    assert info["backend"] == bprop.backend()
    assert info["compiled"] is (not PURE)
    if PURE:
        assert info["build"] == "pure build (BPROP_NO_EXTENSIONS=1)" and info["compiler"] == "none (pure build)"
    else:
        assert info["build"].startswith("compiled")
        # setup.py records the compiler's --version line (a build without the record says so)
        assert info["compiler"] == (_backend.COMPILER or "unknown (no build record)")
    assert info["bprop"] == bprop.__version__
    assert isinstance(info["openmp"], bool) and info["threads"] >= 1
    text = str(info)
    assert "backend" in text and bprop.backend() in text


@pytest.mark.skipif(PURE, reason="pure-Python install")
def test_set_num_threads_round_trips():
    before = bprop.get_num_threads()
    try:
        bprop.set_num_threads(2)
        assert bprop.get_num_threads() == (2 if bprop.info()["openmp"] else 1)
        with pytest.raises(ValueError, match="n must be >= 1"):
            bprop.set_num_threads(0)
    finally:
        bprop.set_num_threads(before)


@pytest.mark.skipif(PURE, reason="pure-Python install")
def test_env_selects_the_loops():
    code = "import bprop; print(bprop.info()['simd'])"
    proc = _python(code, BPROP_SIMD="portable")
    assert proc.stdout.strip() == "portable" and proc.stderr == "", proc.stderr
    auto = _python(code, BPROP_SIMD="")
    assert auto.stdout.strip() in ("avx512", "portable") and auto.stderr == "", auto.stderr
    # avx512 runs where the CPU has it, else warns and runs what auto picks
    forced = _python(code, BPROP_SIMD="avx512")
    assert forced.returncode == 0 and forced.stdout.strip() == auto.stdout.strip(), forced.stderr
    assert ("cannot run the AVX-512 loops" in forced.stderr) is (auto.stdout.strip() == "portable")


def test_unknown_simd_value_warns_and_runs_auto():
    """BPROP_SIMD=avx2 is not a traceback: one warning naming the allowed values, then auto."""
    code = "import bprop; print(bprop.info()['simd'])"
    proc = _python(code, BPROP_SIMD="avx2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == _python(code).stdout.strip()
    assert "Traceback" not in proc.stderr
    allowed = ", ".join(_backend.SIMD_PATHS)
    assert f"BackendWarning: BPROP_SIMD='avx2' is not one of {allowed}; ignoring it" in proc.stderr
    assert proc.stderr.count("BackendWarning") == 1


class _NoAvx512:
    """Stands in for the compiled module on a CPU without AVX-512."""

    def __init__(self):
        self.simd = "portable"

    def set_simd(self, name):
        if name == "avx512":
            raise ValueError("set_simd: this CPU (or this build) has no AVX-512 path; use 'portable' or 'auto'")
        self.simd = "portable"

    def get_simd(self):
        return self.simd


def test_avx512_where_it_cannot_run_warns_and_runs_portable(monkeypatch):
    monkeypatch.setenv("BPROP_SIMD", "avx512")
    module = _NoAvx512()
    with pytest.warns(bprop.BackendWarning, match=r"BPROP_SIMD=avx512, but this CPU .* using the portable loops"):
        _backend._apply_simd_environment(module)
    assert module.get_simd() == "portable"


@pytest.mark.skipif(PURE, reason="pure-Python install")
def test_set_simd_round_trips_and_rejects_unknown_paths():
    k = _backend.compiled_module()
    before = k.get_simd()
    try:
        k.set_simd("portable")
        assert k.get_simd() == bprop.info()["simd"] == "portable"
        k.set_simd("auto")
        assert k.get_simd() in ("avx512", "portable")
        with pytest.raises(ValueError, match="unknown path"):
            k.set_simd("avx1024")
    finally:
        k.set_simd(before)
