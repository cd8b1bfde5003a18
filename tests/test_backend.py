"""The backend switch, and the guard that the compiled kernels really load."""
import inspect
import os
import subprocess
import tempfile
import sys

import pytest

import bprop
from bprop import _backend, _numpy_kernels

PURE = bool(os.environ.get("BPROP_EXPECT_PURE"))


def _python(code, **env):
    clean = {k: v for k, v in os.environ.items() if k != "BPROP_BACKEND"}
    clean.update(env)
    # From outside the checkout: `python -c` puts the working directory first
    # on sys.path, which would import the source tree, not the installed bprop.
    return subprocess.run([sys.executable, "-W", "default", "-c", code], env=clean, capture_output=True,
                          text=True, cwd=tempfile.gettempdir())


# Importing bprop with the compiled module blocked, as in a pure install.
BLOCKED = "import sys; sys.modules['bprop._kernels'] = None\n"


def test_default_backend_is_the_installed_one():
    """An installed build must run compiled by default; a pure one must say it is pure."""
    proc = _python("import bprop, bprop._backend as b; print(bprop.backend(), b.compiled_available())")
    assert proc.returncode == 0, proc.stderr
    if PURE:
        assert proc.stdout.split() == ["numpy", "False"]
        assert "BackendWarning" in proc.stderr
    else:
        assert proc.stdout.split() == ["cython", "True"], proc.stderr
        assert proc.stderr == ""


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


def test_auto_without_extension_warns_once_and_runs_numpy():
    code = BLOCKED + (
        "import warnings\nwarnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import bprop; bprop.set_backend('auto'); bprop.set_backend('auto')\n"
        "print(bprop.backend(), sum(issubclass(x.category, bprop.BackendWarning) for x in w))"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["numpy", "1"]


def test_env_cython_without_extension_is_an_import_error_that_says_why():
    proc = _python(BLOCKED + "import bprop", BPROP_BACKEND="cython")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "compiled kernels" in proc.stderr
    assert "BPROP_BACKEND=numpy" in proc.stderr


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
    assert proc.stdout.strip() == "portable", proc.stderr
    auto = _python(code, BPROP_SIMD="")
    assert auto.stdout.strip() in ("avx512", "portable"), auto.stderr
    bad = _python(code, BPROP_SIMD="sse9")
    assert bad.returncode != 0 and "unknown path 'sse9'" in bad.stderr and "portable" in bad.stderr


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
