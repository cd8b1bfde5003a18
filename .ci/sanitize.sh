#!/usr/bin/env bash
# Memory-safety checks of the compiled kernels, each on its own build of the
# extension in a throwaway copy of the source tree (the installed bprop and
# the working tree are left alone):
#
# 1. AddressSanitizer: build with BPROP_SANITIZE=address and run the
#    bad-input, differential and property tests with libasan preloaded into
#    the (uninstrumented) interpreter. PYTHONMALLOC=malloc sends Python's own
#    allocations through malloc so ASan sees them too. Leak detection is off
#    (detect_leaks=0) because CPython deliberately leaves memory allocated at
#    exit, which LeakSanitizer would report; leaks are tests/test_leaks.py's
#    job. abort_on_error=1 turns any report into a crash, and a report in the
#    log fails this script even if a test runner swallowed the crash.
# 2. Bounds-checked: build with BPROP_DEBUG_BUILD=1 (Cython bounds and
#    wraparound checks on, -O0 -g) and run the whole suite once.
#
# Usage: bash .ci/sanitize.sh   (with the project's test environment's python
# on PATH as `python`). Needs gcc with libasan; builds with pip's isolated
# build (fetches setuptools/Cython like any source install) unless Cython and
# setuptools are importable, then in place.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=.ci/copy_source.sh
. "$root/.ci/copy_source.sh"
py=$(python -c 'import sys; print(sys.executable)')  # the real interpreter, not a wrapper script
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t_start=$SECONDS

header() { printf '\n== %s ==\n' "$*"; }
fail() { printf 'sanitize.sh: %s\n' "$*" >&2; exit 1; }

# A copy of the source tree, without build products (.ci/copy_source.sh).
copy_tree() {
    local dest=$1
    copy_source "$root" "$dest"
    # tests look for the MNIST copy in ../shared beside the checkout
    if [ -d "$root/../shared" ]; then ln -s "$(cd "$root/../shared" && pwd)" "$(dirname "$dest")/shared"; fi
}

# Build bprop._kernels in place in the copy $1 with the environment given after it.
build_in_place() {
    local src=$1; shift
    if "$py" -c 'import Cython, setuptools' 2>/dev/null; then
        (cd "$src" && env "$@" "$py" setup.py -q build_ext --inplace) >"$src/../build.log" 2>&1 ||
            { cat "$src/../build.log"; fail "build failed"; }
    else
        (cd "$src" && env "$@" "$py" -m pip wheel -v --no-deps -w "$src/../wheel" .) >"$src/../build.log" 2>&1 ||
            { cat "$src/../build.log"; fail "build failed"; }
        "$py" - "$src" <<'EOF'
import glob, sys, zipfile
src = sys.argv[1]
(wheel,) = glob.glob(f"{src}/../wheel/bprop-*.whl")
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("bprop/_kernels") and n.endswith((".so", ".pyd"))]
    if not names:
        sys.exit("no compiled bprop._kernels in " + wheel)
    for n in names:
        z.extract(n, src)
EOF
    fi
    grep -E "bprop: (accelerated|pure)" "$src/../build.log" | sed "s/^ *//" || true
}

# The tests must import the copy's freshly built extension, not an installed bprop.
check_import() {
    local src=$1; shift
    local where
    where=$(cd "$src" && env "$@" PYTHONPATH="$src" "$py" -c 'import bprop._kernels as k; print(k.__file__)')
    case "$where" in
        "$src"/*) echo "testing $where" ;;
        *) fail "bprop._kernels imported from $where, not from the build in $src" ;;
    esac
}

# ---------------------------------------------------------------------------
header "AddressSanitizer run"
libasan=$(gcc -print-file-name=libasan.so)
[ -f "$libasan" ] || fail "gcc has no libasan.so (gcc -print-file-name=libasan.so gave '$libasan')"
asan_src="$work/asan/main"
copy_tree "$asan_src"
build_in_place "$asan_src" BPROP_SANITIZE=address
so=$(ls "$asan_src"/bprop/_kernels*.so)
deps=$(ldd "$so")  # not piped into grep -q: with pipefail, an early grep exit fails ldd with SIGPIPE
grep -q libasan <<<"$deps" || fail "$so is not linked against libasan: BPROP_SANITIZE had no effect"
asan_env=(LD_PRELOAD="$libasan" PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1)
check_import "$asan_src" "${asan_env[@]}"

asan_tests=()
for t in tests/test_bad_input.py tests/test_differential.py tests/test_properties.py tests/test_conv.py tests/test_conv_kernels.py; do
    if [ -f "$asan_src/$t" ]; then asan_tests+=("$t"); else echo "note: $t not found, not run"; fi
done
[ ${#asan_tests[@]} -gt 0 ] || fail "none of the sanitizer test files exist"

log="$work/asan.log"
set +e
(
    cd "$asan_src" &&
    env "${asan_env[@]}" PYTHONPATH="$asan_src" "$py" -m pytest -p no:cacheprovider -q "${asan_tests[@]}"
) 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if grep -q "ERROR: AddressSanitizer" "$log"; then
    fail "AddressSanitizer reported an error (see the log above)"
fi
[ "$status" -eq 0 ] || fail "tests failed under AddressSanitizer (exit $status)"
echo "AddressSanitizer run: clean ($((SECONDS - t_start)) s so far)"

# ---------------------------------------------------------------------------
header "bounds-checked run"
debug_src="$work/debug/main"
copy_tree "$debug_src"
build_in_place "$debug_src" BPROP_DEBUG_BUILD=1
check_import "$debug_src"
# The slow tests train networks and run the book's scripts over thousands
# of images: they check results, which the default run does, and at -O0
# they would take most of CI's time. Every kernel call path runs here.
(cd "$debug_src" && PYTHONPATH="$debug_src" "$py" -m pytest -p no:cacheprovider -q -m "not slow") ||
    fail "tests failed on the bounds-checked build"
echo "bounds-checked run: passed"

header "sanitizer checks passed in $((SECONDS - t_start)) s"
