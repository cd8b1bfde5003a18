"""Build bprop's one extension, ``bprop._kernels``, from ``bprop/_kernels.pyx``.

Environment switches (read at build time):

BPROP_NO_EXTENSIONS=1   build a pure-Python wheel (py3-none-any); the NumPy
                        twin of the kernels is then the only backend.
BPROP_DEBUG_BUILD=1     Cython bounds/wraparound checks on, -O0 -g.
BPROP_SANITIZE=address  compile and link with -fsanitize=address.
BPROP_NO_OPENMP=1       do not use OpenMP even when the compiler has it.

A compile failure fails the build: there is no silent fallback, because a
silently pure install is a slowdown nobody notices.
"""
import os
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


NO_EXTENSIONS = _flag("BPROP_NO_EXTENSIONS")
DEBUG = _flag("BPROP_DEBUG_BUILD")
SANITIZE = os.environ.get("BPROP_SANITIZE", "").strip()

DIRECTIVES = {
    "language_level": 3,
    # The Python layer validates every argument before a kernel call and
    # each kernel checks its buffer sizes at entry, so the loops run unchecked.
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

HOW_TO_SKIP = (
    "\n\nbprop: building the compiled kernels (bprop._kernels) failed; see the "
    "compiler output above.\nTo install the pure-Python package instead (NumPy "
    "kernels only, slower), run:\n    BPROP_NO_EXTENSIONS=1 pip install .\n"
)


class BuildExt(build_ext):
    """Pick compiler flags the compiler actually supports; fail loudly."""

    def _links(self, code, extra_compile=(), extra_link=(), libraries=()):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(code)
            try:
                objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=list(extra_compile))
                self.compiler.link_executable(
                    objs, os.path.join(tmp, "probe"), extra_postargs=list(extra_link), libraries=list(libraries)
                )
            except Exception:
                return False
        return True

    def build_extensions(self):
        unix = self.compiler.compiler_type == "unix"
        for ext in self.extensions:
            cflags, ldflags, macros, libs = [], [], [], []
            if unix:
                # -fno-math-errno lets exp() vectorise and -fno-trapping-math
                # lets GCC turn float selects (x >= 0 ? a : b) into blends;
                # neither changes a result. -ffast-math is never used: it
                # turns relu's NaN into 0 and breaks sigmoid's tails.
                cflags += ["-O0", "-g3"] if DEBUG else ["-O3", "-fno-math-errno", "-fno-trapping-math"]
                cflags += ["-Wno-unreachable-code", "-Wno-unused-function"]
                if SANITIZE:
                    cflags += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"]
                    ldflags += [f"-fsanitize={SANITIZE}"]
                if not _flag("BPROP_NO_OPENMP") and self._links(
                    "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n",
                    ["-fopenmp"], ["-fopenmp"],
                ):
                    cflags.append("-fopenmp")
                    ldflags.append("-fopenmp")
                clone_probe = (
                    '__attribute__((target_clones("arch=x86-64-v3", "default"), noinline)) int f(int x){return x + 1;}\n'
                    "int main(void){return f(-1);}\n"
                )
                if not DEBUG and not SANITIZE and self._links(clone_probe):
                    macros.append(("BPROP_CLONES", "1"))
                libs.append("m")
            ext.extra_compile_args = cflags + list(ext.extra_compile_args or [])
            ext.extra_link_args = ldflags + list(ext.extra_link_args or [])
            ext.define_macros = macros + list(ext.define_macros or [])
            ext.libraries = libs + list(ext.libraries or [])
            print(f"bprop: accelerated build, cflags={' '.join(cflags)} macros={macros} libs={libs}")
        try:
            super().build_extensions()
        except Exception as exc:
            raise SystemExit(f"{exc}{HOW_TO_SKIP}") from exc


def extensions():
    if NO_EXTENSIONS:
        print("bprop: pure-Python build (BPROP_NO_EXTENSIONS is set)")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        raise SystemExit(f"bprop: Cython >= 3 is needed to build the kernels ({exc}).{HOW_TO_SKIP}")
    import numpy

    ext = Extension(
        "bprop._kernels",
        ["bprop/_kernels.pyx"],
        include_dirs=["bprop", numpy.get_include()],
        # The C loops live in headers: an edit there must rebuild the extension.
        depends=["bprop/_kernels_math.h", "bprop/_kernels_loops.h", "bprop/_kernels_avx512.h", "bprop/_kernels_gemm.h",
                 "bprop/_kernels_batchnorm.pxi", "bprop/src/batchnorm.h", "bprop/src/batchnorm_impl.h",
                 "bprop/_kernels_optimizer.pxi", "bprop/src/optimizer.h", "bprop/src/optimizer_impl.h",
                 "bprop/_kernels_conv.pxi", "bprop/src/conv.h"],
        # keep in sync with the runtime requirement in pyproject.toml
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION"), ("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION")],
    )
    try:
        return cythonize([ext], compiler_directives=DIRECTIVES, quiet=True)
    except Exception as exc:
        raise SystemExit(f"bprop: Cython could not translate bprop/_kernels.pyx ({exc}).{HOW_TO_SKIP}") from exc


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
)
