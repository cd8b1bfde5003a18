"""Each C header under bprop/src compiles on its own when it is the first thing a file includes.

The headers are meant to be self-contained (each includes what it uses), so
that a header can be read, moved or added without knowing an inclusion
order. Checked with the C compiler Python was built with, both as a plain
build and as the accelerated one (per-CPU levels and the AVX-512 loops,
BPROP_CLONES), and with OpenMP where the compiler has it.
"""
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
