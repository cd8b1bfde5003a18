"""Build bprop's one extension, ``bprop._kernels``, from ``bprop/_kernels.pyx``.

Environment switches (read at build time):

BPROP_NO_EXTENSIONS=1   build a pure-Python wheel (py3-none-any); the NumPy
                        twin of the kernels is then the only backend.
BPROP_DEBUG_BUILD=1     Cython bounds/wraparound checks on, -O0 -g.
BPROP_SANITIZE=address  compile and link with -fsanitize=address.
BPROP_NO_OPENMP=1       do not use OpenMP even when the compiler has it.
BPROP_BASELINE_ONLY=1   no per-CPU versions: compile the loops once, for
                        the compiler's default target only (baseline
                        x86-64 is SSE2), for old CPUs and compilers without
                        target attributes; Sigmoid's forward and
                        SoftmaxWithLoss's float64 forward then run on
                        NumPy's exp, which NumPy compiles per CPU. Otherwise, where the compiler
                        takes them (GCC, clang on x86-64), the portable
                        loops are also compiled for x86-64-v3 (AVX2, FMA)
                        and x86-64-v4 (AVX-512), the hand-written AVX-512
                        loops are compiled in, and the best version this
                        CPU runs is picked at import (bprop info: loops).

A compile failure fails the build: there is no silent fallback, because a
silently pure install is a slowdown nobody notices.
"""
import glob
import os
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py


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
                # Per-CPU versions (bprop/src/platform.h): functions compiled
                # under target attributes, AVX-512 intrinsics in them, and the
                # CPU checks that choose one at import.
                levels_probe = (
                    "#include <immintrin.h>\n"
                    '__attribute__((target("avx,avx2,fma,bmi,bmi2,popcnt,avx512f,avx512bw,avx512cd,avx512dq,avx512vl"),'
                    " noinline)) static double f(const double *x)\n"
                    "{ return _mm512_reduce_add_pd(_mm512_maskz_loadu_pd((__mmask8)1, x)); }\n"
                    "int main(void){ double x = 1; __builtin_cpu_init();\n"
                    '  return __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("bmi2") ? f(&x) < 1 : 0; }\n'
                )
                if _flag("BPROP_BASELINE_ONLY"):
                    print("bprop: BPROP_BASELINE_ONLY is set: no per-CPU versions, baseline code only")
                elif not DEBUG and not SANITIZE and self._links(levels_probe):
                    macros.append(("BPROP_CLONES", "1"))
                libs.append("m")
            elif self.compiler.compiler_type == "msvc":
                # setuptools already passes /O2. MSVC's default /fp:precise does
                # not reorder (the -ffast-math trap above), and without /arch:AVX2
                # there is no FMA to contract into, as in GCC's baseline loops.
                # The GCC-only parts of bprop/src are behind guards: MSVC builds
                # the portable loops. Its OpenMP is 2.0 (vcomp140.dll, which the
                # wheel repair copies in), enough for split.h's pragma and
                # Cython's prange.
                if DEBUG:
                    cflags += ["/Od", "/Zi"]
                    ldflags += ["/DEBUG"]
                if not _flag("BPROP_NO_OPENMP") and self._links(
                    "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n", ["/openmp"],
                ):
                    cflags.append("/openmp")
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
        # The C loops are headers in bprop/src, named "src/<name>.h" from the
        # .pyx and its Cython include files (bprop/*.pxi); both are picked up
        # by pattern, and an edit to any of them must rebuild.
        include_dirs=["bprop", numpy.get_include()],
        depends=sorted(glob.glob("bprop/src/*.h") + glob.glob("bprop/*.pxi")),
        # keep in sync with the runtime requirement in pyproject.toml
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION"), ("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION")],
    )
    try:
        return cythonize([ext], compiler_directives=DIRECTIVES, quiet=True)
    except Exception as exc:
        raise SystemExit(f"bprop: Cython could not translate bprop/_kernels.pyx ({exc}).{HOW_TO_SKIP}") from exc


# --- The build record: bprop/_build.py ---------------------------------------
#
# Every build (wheel, editable, in-place build_ext) writes a small generated
# module saying whether the compiled kernels were meant to be there, and with
# which compiler, so that at import bprop can tell a deliberate pure install
# (BPROP_NO_EXTENSIONS=1: silent) from a broken one (warns, says how to
# rebuild). It is git-ignored and kept out of the sdist: a plain checkout has
# none, which bprop reads as "not built".

RECORD = "_build.py"


def write_build_record(package_dir, pure, compiler=None):
    """Write ``package_dir/_build.py`` recording a pure or a compiled build."""
    os.makedirs(package_dir, exist_ok=True)
    with open(os.path.join(package_dir, RECORD), "w") as f:
        f.write(
            '"""How this copy of bprop was built (generated by setup.py; not in git)."""\n'
            "#: True when built with BPROP_NO_EXTENSIONS=1: the NumPy kernels only, on purpose.\n"
            f"PURE = {bool(pure)!r}\n"
            "#: The C compiler that built bprop._kernels (its --version line), or None.\n"
            f"COMPILER = {compiler!r}\n"
        )


def compiler_version(compiler):
    """The first line of ``CC --version`` for a setuptools compiler object, else its command name."""
    command = getattr(compiler, "compiler_so", None) or getattr(compiler, "compiler", None) or []
    if not command:
        return getattr(compiler, "compiler_type", None)
    try:
        out = subprocess.run([command[0], "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out.splitlines()[0].strip() if out.strip() else command[0]


class BuildPy(build_py):
    """Copy the Python modules, then write the build record beside them."""

    def run(self):
        super().run()
        # Editable installs import the source tree itself; wheels take build_lib.
        editable = getattr(self, "editable_mode", False)
        target = self.get_package_dir("bprop") if editable else os.path.join(self.build_lib, "bprop")
        if NO_EXTENSIONS and editable:
            # A compiled module left by an earlier in-place build would
            # contradict the record (and may be stale): a pure build has none.
            for stale in glob.glob(os.path.join(target, "_kernels.*.so")) + glob.glob(os.path.join(target, "_kernels*.pyd")):
                print(f"bprop: pure build: removing the earlier in-place build {stale}")
                os.remove(stale)
        write_build_record(target, pure=NO_EXTENSIONS)


class RecordingBuildExt(BuildExt):
    """Build the extension, then record the compiler beside it (in place or in build_lib)."""

    def run(self):
        super().run()
        if not self.extensions:
            return
        if self.inplace:
            target = self.get_finalized_command("build_py").get_package_dir("bprop")
        else:
            target = os.path.join(self.build_lib, "bprop")
        write_build_record(target, pure=False, compiler=compiler_version(self.compiler))


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": RecordingBuildExt, "build_py": BuildPy},
)
