"""Each C header under bprop/src compiles on its own when it is the first thing a file includes.

The headers are meant to be self-contained (each includes what it uses), so
that a header can be read, moved or added without knowing an inclusion
order. Checked with the C compiler Python was built with, both as a plain
build and as the accelerated one (per-CPU levels and the AVX-512 loops,
BPROP_CLONES), and with OpenMP where the compiler has it.

The Windows wheels are built by MSVC, which has none of GCC's extensions
(attributes, __builtin_*, vector types, statement expressions, VLAs in C):
every such construct must sit behind a guard, leaving portable loops MSVC
compiles. MSVC does not run here, so three stand-ins check that:

- tcc, a C99 compiler that does not claim to be GCC (no __GNUC__): each
  header compiles, and the conv product's scalar form (the one MSVC gets)
  computes the right numbers;
- clang with __GNUC__ and __clang__ undefined, GCC's extension keywords
  poisoned and ISO C enforced (-pedantic-errors, no VLAs), once as a
  compiler that is not GCC and once with _MSC_VER defined, as MSVC;
- MinGW-w64's GCC, for the Windows headers and types (32-bit long, no POSIX).

Each skips when its compiler is absent; CI (.ci/run) installs them.
"""
import os
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "bprop" / "src"
HEADERS = sorted(p.name for p in SRC.glob("*.h")) if SRC.is_dir() else []
CC = shlex.split(sysconfig.get_config_var("CC") or "cc")

pytestmark = [
    pytest.mark.skipif(not HEADERS, reason="no bprop/src headers beside these tests"),
    pytest.mark.skipif(shutil.which(CC[0]) is None, reason=f"no C compiler ({CC[0]})"),
]


def _compile(header, *flags, where=SRC):
    return subprocess.run(
        [*CC, "-fsyntax-only", "-std=c11", "-Werror=implicit-function-declaration", "-Werror=undef", "-I", str(where), *flags,
         "-x", "c", "-"],
        input=f'#include "{header}"\nint bp_header_test_anchor;\n', capture_output=True, text=True,
    )


@pytest.mark.parametrize("flags", [(), ("-DBPROP_CLONES=1",), ("-DBPROP_CLONES=1", "-fopenmp")],
                         ids=["plain", "clones", "clones-openmp"])
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_alone(header, flags):
    if "-fopenmp" in flags and _compile("stddef.h", "-fopenmp").returncode:
        pytest.skip("the compiler has no OpenMP")
    r = _compile(header, *flags)
    assert r.returncode == 0, f"{header} does not compile on its own:\n{r.stderr}"


def test_a_header_missing_an_include_fails(tmp_path):
    # The check above can fail: a header using a type it does not include is refused.
    (tmp_path / "bad.h").write_text("static ptrdiff_t bp_bad(void) { return 0; }\n")
    (tmp_path / "good.h").write_text("#include <stddef.h>\nstatic ptrdiff_t bp_good(void) { return 0; }\n")
    assert _compile("good.h", where=tmp_path).returncode == 0
    assert _compile("bad.h", where=tmp_path).returncode != 0



# --- Compilers that are not GCC (stand-ins for MSVC) ---------------------------

TCC = shutil.which("tcc")
CLANG = shutil.which("clang")
MINGW = shutil.which("x86_64-w64-mingw32-gcc")

#: Included before the header under test: the C library first (its headers may
#: use extensions; once included, their guards keep them out), then GCC's
#: extension keywords poisoned, so that any later use is an error.
NO_GNU_PRELUDE = """#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
"""
POISONED = ("__attribute__", "__attribute", "__builtin_cpu_init", "__builtin_cpu_supports", "__builtin_expect",
            "__builtin_assume_aligned", "__builtin_prefetch", "__builtin_ctz", "__builtin_clz", "__builtin_popcount",
            "__restrict__", "__typeof__", "typeof", "__extension__", "__asm__", "asm", "__inline__", "__int128")
NO_GNU_PRELUDE += "".join(f"#undef {name}\n" for name in POISONED)
NO_GNU_PRELUDE += "#pragma GCC poison " + " ".join(POISONED) + "\n"
#: clang names the C library's GCC-only parts by __GNUC__ and its own by
#: __clang__; with both undefined the headers see a compiler that is neither.
NO_GNU_FLAGS = ("-std=c11", "-pedantic-errors", "-Werror=vla", "-Werror=implicit-function-declaration",
                "-Werror=undef", "-U__GNUC__", "-U__GNUC_MINOR__", "-U__GNUC_PATCHLEVEL__", "-U__clang__",
                "-Wno-builtin-macro-redefined")


def _run(cmd, source, where):
    return subprocess.run([*cmd, "-I", str(where), "-x", "c", "-"], input=source, capture_output=True, text=True)


def _tcc(header, *flags, where=SRC, tmp):
    obj = str(tmp / "header.o")
    return _run([TCC, "-std=c11", "-Wall", "-Werror", *flags, "-c", "-o", obj], f'#include "{header}"\nint anchor;\n',
                where)


def _no_gnu(header, msvc=False, where=SRC):
    # _MSC_VER after the C library: glibc's headers would take MSVC for their compiler.
    source = NO_GNU_PRELUDE + ("#define _MSC_VER 1930\n" if msvc else "") + f'#include "{header}"\nint anchor;\n'
    return _run([CLANG, "-fsyntax-only", *NO_GNU_FLAGS, "-DBPROP_CLONES=1"], source, where)


# BPROP_CLONES too: setup.py only defines it after GCC links a target_clones
# probe, but a header must not assume so.
@pytest.mark.skipif(TCC is None, reason="tcc is not installed (Debian package tcc)")
@pytest.mark.parametrize("flags", [(), ("-DBPROP_CLONES=1",)], ids=["plain", "clones"])
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_with_tcc(header, flags, tmp_path):
    r = _tcc(header, *flags, tmp=tmp_path)
    assert r.returncode == 0, f"{header} does not compile with tcc (not GCC):\n{r.stderr}"


@pytest.mark.skipif(CLANG is None, reason="clang is not installed")
@pytest.mark.parametrize("msvc", [False, True], ids=["not-gcc", "as-msvc"])
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_without_gnu_extensions(header, msvc):
    if _no_gnu("stddef.h").returncode:
        pytest.skip("this C library's headers need GCC's extensions (glibc's do not)")
    r = _no_gnu(header, msvc=msvc)
    assert r.returncode == 0, f"{header} uses a GCC extension outside a guard:\n{r.stderr}"


@pytest.mark.skipif(MINGW is None, reason="MinGW-w64 is not installed (Debian package gcc-mingw-w64-x86-64)")
@pytest.mark.parametrize("flags", [(), ("-fopenmp",)], ids=["plain", "openmp"])
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_for_windows(header, flags):
    r = _run([MINGW, "-fsyntax-only", "-std=c11", "-Werror=implicit-function-declaration", "-Werror=undef", *flags],
             f'#include "{header}"\nint anchor;\n', SRC)
    assert r.returncode == 0, f"{header} does not compile for Windows (MinGW-w64):\n{r.stderr}"


@pytest.mark.skipif(CLANG is None or TCC is None, reason="needs clang and tcc")
def test_an_unguarded_extension_fails(tmp_path):
    # The checks above can fail: GCC's vector type outside a guard is refused by both.
    vec = "typedef double bp_v __attribute__((vector_size(64)));\nstatic double bp_f(bp_v v) { return v[0]; }\n"
    (tmp_path / "bad.h").write_text(vec)
    (tmp_path / "good.h").write_text("#if defined(__GNUC__)\n" + vec + "#endif\n")
    assert _no_gnu("good.h", where=tmp_path).returncode == 0
    assert _no_gnu("bad.h", where=tmp_path).returncode != 0
    assert _tcc("good.h", where=tmp_path, tmp=tmp_path).returncode == 0
    assert _tcc("bad.h", where=tmp_path, tmp=tmp_path).returncode != 0


#: Runs conv.h's product on integer-valued inputs, whose sums are exact in
#: any order, against a plain triple loop: exit 0 when all agree.
CONV_PRODUCTS = r"""
#include <stdio.h>
#include "conv.h"
#define F64(name) BP_AT(name##_f64)
#define F32(name) BP_AT(name##_f32)
/* 7 rows: a block of 6 and a leftover; 19 columns: vectors and a tail. */
#define CHECK(T, S)                                                                        \
    do {                                                                                   \
        enum { M = 7, K = 5, P = 19 };                                                     \
        T A[M * K], At[K * M], B[K * P], C[M * P], bias[M];                                \
        ptrdiff_t i, j, k;                                                                 \
        for (i = 0; i < M * K; i++) A[i] = (T)((i * 7) % 11 - 5);                          \
        for (i = 0; i < M; i++)                                                            \
            for (k = 0; k < K; k++) At[k * M + i] = A[i * K + k];                          \
        for (i = 0; i < K * P; i++) B[i] = (T)((i * 5) % 13 - 6);                          \
        for (i = 0; i < M; i++) bias[i] = (T)(i - 3);                                      \
        for (int pass = 0; pass < 2; pass++) { /* A, then A read as a transpose */         \
            if (pass == 0) S(bp_conv_gemm)(A, K, 1, B, C, bias, M, K, P);                  \
            else S(bp_conv_gemm)(At, 1, M, B, C, bias, M, K, P);                           \
            for (i = 0; i < M; i++)                                                        \
                for (j = 0; j < P; j++) {                                                  \
                    T want = 0;                                                            \
                    for (k = 0; k < K; k++) want += A[i * K + k] * B[k * P + j];           \
                    if (C[i * P + j] != want + bias[i]) return 1;                          \
                }                                                                          \
        }                                                                                  \
    } while (0)

/* Every level this CPU runs (one without BPROP_CLONES). */
int main(void)
{
    const int top = bp_cpu_level();
    for (bp_level = BP_LEVEL_BASE; bp_level <= top; bp_level++) {
        CHECK(double, F64);
        CHECK(float, F32);
    }
    puts("ok");
    return 0;
}
"""


@pytest.mark.skipif(TCC is None, reason="tcc is not installed (Debian package tcc)")
def test_conv_products_without_vector_types(tmp_path):
    """conv.h's scalar form of its product (what a compiler without GCC's vectors builds) computes it right."""
    prog = tmp_path / "conv_products.c"
    prog.write_text(CONV_PRODUCTS)
    r = subprocess.run([TCC, "-std=c11", "-I", str(SRC), "-run", str(prog)], capture_output=True, text=True)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), f"exit {r.returncode}\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("flags", [(), ("-DBPROP_CLONES=1",)], ids=["plain", "clones"])
def test_conv_products_with_vector_types(tmp_path, flags):
    """The same program built by Python's C compiler (GCC's vectors where it has them, at every level with
    BPROP_CLONES): checks the check."""
    exe = tmp_path / ("conv_products.exe" if os.name == "nt" else "conv_products")
    prog = tmp_path / "conv_products.c"
    prog.write_text(CONV_PRODUCTS)
    built = subprocess.run([*CC, "-O2", "-std=c11", *flags, "-I", str(SRC), str(prog), "-o", str(exe)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), f"exit {r.returncode}\n{r.stdout}{r.stderr}"
