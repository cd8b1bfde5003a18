#!/usr/bin/env bash
# The compiled module built by tcc, a C compiler that is not GCC, and the
# value tests run on it. A stand-in for MSVC, which builds the Windows wheels
# and gets the same code: every GCC-only part of bprop/src behind its guard
# left out (the portable loops, conv.h's scalar products, no OpenMP, no
# AVX-512). Skipped, saying so, where tcc is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v tcc >/dev/null; then
    echo "tcc is not installed: the non-GCC build is not checked"
    exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# tcc has no complex types, which NumPy's headers declare through
# <complex.h>: an empty <complex.h> and _Complex defined away make them
# real ones. The kernels never touch a complex number.
mkdir "$WORK/include"
: > "$WORK/include/complex.h"
$PY -m venv "$WORK/venv"
CC=tcc LDSHARED="tcc -shared" CFLAGS="-D_Complex= -I$WORK/include" \
    "$WORK/venv/bin/pip" install -q ".[test]"
# pytest (not python -m pytest): the tests import the tcc-built copy; the
# report header names the compiler, checked here.
"$WORK/venv/bin/pytest" --co -p no:cacheprovider tests/test_backend.py | grep "^bprop .* from $WORK/venv/.*: compiled,"
# From outside the checkout: python -c puts its working directory on sys.path.
(cd "$WORK" && "$WORK/venv/bin/python" -c "import bprop; print(bprop.info())") > "$WORK/info"
grep -E "^compiler +tcc " "$WORK/info"
# x86-64 without per-CPU versions: sigmoid and softmax on NumPy's loops (src/numpy_loops.h).
grep -E "^exp +NumPy's " "$WORK/info"
"$WORK/venv/bin/pytest" -q -p no:cacheprovider -m "not slow" tests/test_differential.py tests/test_functions.py \
    tests/test_bad_input.py tests/test_conv.py tests/test_conv_kernels.py tests/test_batchnorm.py tests/test_optimizer.py \
    tests/test_numpy_loops.py tests/test_exp_accuracy.py
