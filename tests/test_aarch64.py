"""The C loops build for aarch64, and the hot ones compile to NEON vector code there.

Checked with GCC's aarch64 cross compiler (``aarch64-linux-gnu-gcc``,
Debian's ``gcc-aarch64-linux-gnu``), so it runs on any machine that has
one; CI installs it (.ci/aarch64.sh, which also runs the value tests on an
aarch64 build under qemu). Without it these tests skip.

- Every header compiles on its own for aarch64, as tests/test_c_headers.py
  checks for the host: nothing x86-specific leaks out of its ``#if``.
- ReLU forward and backward, sigmoid forward (through exp.h's exp) and the
  softmax row (the same exp) are vectorised: their functions, compiled at
  setup.py's optimisation flags and disassembled, contain the loop's work on
  full 128-bit NEON registers (``.2d``: two float64, ``.4s``: four float32,
  ``.16b``: sixteen mask bytes). A change that leaves one of them scalar (a
  branch in the loop, a load under a condition, a call to libm) fails here,
  as compiling with ``-fno-tree-vectorize`` does (checked below).
- With ``BPROP_AARCH64_MODULE`` naming an aarch64 build of
  ``bprop._kernels`` (.ci/aarch64.sh sets it), the same holds in that
  build, whatever flags setup.py gave it.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "bprop" / "src"
HEADERS = sorted(p.name for p in SRC.glob("*.h")) if SRC.is_dir() else []
CC = "aarch64-linux-gnu-gcc"
OBJDUMP = "aarch64-linux-gnu-objdump"
#: The optimisation flags setup.py gives GCC for a release build (BuildExt).
SETUP_FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math")

pytestmark = [
    pytest.mark.skipif(not HEADERS, reason="no bprop/src headers beside these tests"),
    pytest.mark.skipif(shutil.which(CC) is None or shutil.which(OBJDUMP) is None,
                       reason=f"no aarch64 cross toolchain ({CC}, {OBJDUMP}; Debian: gcc-aarch64-linux-gnu)"),
]

#: For each loop: the instructions that do its work, and the arrangement they
#: must have (None: the dtype's, .2d or .4s). ReLU forward compares x <= 0
#: lane by lane; backward widens the mask bytes and selects with bitwise ops;
#: sigmoid and softmax evaluate exp's polynomial with fused multiply-adds.
LOOPS = {
    "bp_relu_fwd": (("fcmle", "fcmge", "fcmgt", "fcmlt"), None),
    "bp_relu_bwd": (("and", "bic", "bsl", "bit", "bif"), "16b"),
    "bp_sigmoid_fwd": (("fmla", "fmls"), None),
    "bp_softmax_row": (("fmla", "fmls"), None),
}
ARRANGEMENT = {"f64": "2d", "f32": "4s"}
CASES = [(loop, dt) for loop in LOOPS for dt in ARRANGEMENT]
IDS = [f"{loop[3:]}-{dt}" for loop, dt in CASES]

#: Keeps each portable loop as a function of its own (they are static). On
#: aarch64 the loops are compiled at one level, the baseline (suffix _l0).
KEEP = "#include \"portable.h\"\nvoid *const bp_test_keep[] = {\n" + "".join(
    f"    (void *){loop}_portable_{dt}_l0,\n" for loop, dt in CASES) + "};\n"


def _compile_headers(tmp_path, *flags):
    src = tmp_path / "loops.c"
    src.write_text(KEEP)
    obj = tmp_path / "loops.o"
    r = subprocess.run([CC, *SETUP_FLAGS, *flags, "-I", str(SRC), "-c", str(src), "-o", str(obj)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return obj


def _functions(binary):
    """``{name: [instruction lines]}`` from objdump's disassembly of ``binary``."""
    out = subprocess.run([OBJDUMP, "-d", "--no-show-raw-insn", str(binary)],
                         capture_output=True, text=True, check=True).stdout
    funcs, current = {}, None
    for line in out.splitlines():
        head = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if head:
            current = funcs.setdefault(head.group(1), [])
        elif current is not None and line.strip():
            current.append(line.strip())
    return funcs


def _vector_work(funcs, loop, dt):
    """The instructions of ``loop``'s functions for ``dt`` that do its work on full NEON registers.

    Its functions are those named ``<loop>[_<anything>]_<dt>[_l<level>]``
    (GCC may add a ``.suffix``): the portable loop itself, or in a built
    module the chunk function it is inlined into.
    """
    names = [n for n in funcs if re.fullmatch(rf"{loop}(_\w+)?_{dt}(_l\d)?(\.\w+)*", n)]
    assert names, f"no function for {loop} ({dt}) in the disassembly"
    mnemonics, arrangement = LOOPS[loop]
    operand = re.compile(rf"\bv\d+\.{arrangement or ARRANGEMENT[dt]}\b")
    return [line for n in names for line in funcs[n]
            if line.split("\t")[1:2] and line.split("\t")[1] in mnemonics and operand.search(line)]


@pytest.mark.parametrize("flags", [(), ("-DBPROP_CLONES=1",), ("-DBPROP_CLONES=1", "-fopenmp")],
                         ids=["plain", "clones", "clones-openmp"])
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_alone_for_aarch64(header, flags):
    r = subprocess.run(
        [CC, "-fsyntax-only", "-std=c11", "-Werror=implicit-function-declaration", "-Werror=undef", "-I", str(SRC),
         *flags, "-x", "c", "-"],
        input=f'#include "{header}"\nint bp_header_test_anchor;\n', capture_output=True, text=True,
    )
    assert r.returncode == 0, f"{header} does not compile on its own for aarch64:\n{r.stderr}"


@pytest.fixture(scope="module")
def vectorised(tmp_path_factory):
    return _functions(_compile_headers(tmp_path_factory.mktemp("neon")))


@pytest.mark.parametrize("loop, dt", CASES, ids=IDS)
def test_loop_is_neon_vectorised(vectorised, loop, dt):
    assert _vector_work(vectorised, loop, dt), f"{loop} ({dt}) is not vectorised for aarch64"


def test_the_check_fails_on_scalar_loops(tmp_path):
    # The check above can fail: the same loops compiled without GCC's
    # vectoriser have none of the vector instructions it looks for.
    scalar = _functions(_compile_headers(tmp_path, "-fno-tree-vectorize"))
    assert [(loop, dt) for loop, dt in CASES if _vector_work(scalar, loop, dt)] == []


@pytest.mark.skipif(not os.environ.get("BPROP_AARCH64_MODULE"),
                    reason="BPROP_AARCH64_MODULE does not name an aarch64 build of bprop._kernels (.ci/aarch64.sh sets it)")
@pytest.mark.parametrize("loop, dt", CASES, ids=IDS)
def test_built_module_is_neon_vectorised(loop, dt):
    module = Path(os.environ["BPROP_AARCH64_MODULE"])
    assert module.is_file(), f"BPROP_AARCH64_MODULE={module} is not a file"
    assert _vector_work(_functions(module), loop, dt), f"{loop} ({dt}) is not vectorised in {module}"
