#!/usr/bin/env bash
# aarch64: build bprop._kernels for aarch64 with GCC's cross compiler, check
# that its hot loops are NEON-vectorised, and run the value tests on that
# build under qemu's user-mode emulation, all on an x86-64 Debian machine.
#
# Recipe (the working tree and the host's packages are left alone; the
# cross toolchain and qemu are installed with apt):
#
# 1. An aarch64 Python, Debian's own: its packages (python3.X-minimal and
#    libpython3.X-stdlib, for the X of Debian's python3, with everything
#    they need, the headers of libpython3.X-dev, libstdc++ and libgomp for
#    NumPy and OpenMP) are downloaded with apt and unpacked into a private
#    root, never installed: an arm64 python3.X would replace the host's.
#    qemu-aarch64 runs it with that root as its library prefix
#    (QEMU_LD_PREFIX).
# 2. Its site-packages: aarch64 wheels of the build and test requirements,
#    for its Python version and glibc, unpacked by pip --target.
# 3. The build: setup.py, run by that Python under qemu, in a copy of the
#    tree. It compiles with aarch64-linux-gnu-gcc (the CC of Debian's arm64
#    Python; qemu hands the compiler, an x86-64 program, to the kernel to run
#    natively), so the sysconfig, extension suffix, NumPy headers, flags,
#    probes and build record are the ones a native aarch64 build gets. Only
#    the Python headers' directory is named, as it is inside the root.
# 4. Checks: the module is an aarch64 ELF that imports there as the compiled
#    backend; tests/test_aarch64.py (on the host, with the cross binutils)
#    disassembles the built module and the headers; then, under qemu, the
#    value tests of both backends and the bad-input tests, whose report
#    header must say compiled. The tests that start a second Python
#    (test_backend.py and the like) need qemu registered with binfmt_misc,
#    which a container may not allow, so they are not run here.
#
# Usage: bash .ci/aarch64.sh, as root on Debian/Ubuntu, with the project's
# test environment's python on PATH as `python` (for pip and pytest).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=.ci/copy_source.sh
. "$root/.ci/copy_source.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t_start=$SECONDS

header() { printf '\n== %s (%d s) ==\n' "$*" "$((SECONDS - t_start))"; }
fail() { printf 'aarch64.sh: %s\n' "$*" >&2; exit 1; }

command -v apt-get >/dev/null || fail "needs apt-get (Debian or Ubuntu) to install the aarch64 cross toolchain and qemu"
command -v dpkg-deb >/dev/null || fail "needs dpkg-deb"
[ "$(dpkg --print-architecture)" = amd64 ] || fail "written for an amd64 host, not $(dpkg --print-architecture)"
[ "$(id -u)" -eq 0 ] || fail "needs root for apt-get"

# ---------------------------------------------------------------------------
header "cross toolchain, qemu and the arm64 package lists"
apt=(apt-get -o DPkg::Lock::Timeout=600 -q -y)
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
"${apt[@]}" update >/dev/null
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends \
    gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user >/dev/null
aarch64-linux-gnu-gcc --version | head -n 1
qemu-aarch64 --version | head -n 1

# ---------------------------------------------------------------------------
header "an aarch64 Debian Python in a private root"
sysroot="$work/sysroot"
mkdir -p "$work/debs" "$sysroot"
# python3.X, the version Debian's python3 stands for.
pyname=$(apt-cache depends python3-minimal:arm64 | sed -nE 's/^ *PreDepends: (python3\.[0-9]+)-minimal(:arm64)?$/\1/p')
[ -n "$pyname" ] || fail "apt knows no arm64 python3-minimal"
# Pre-dependencies are not followed: they are what dpkg needs to install them.
roots=("$pyname-minimal:arm64" "lib$pyname-stdlib:arm64" libstdc++6:arm64 libgomp1:arm64)
mapfile -t debs < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances --no-pre-depends "${roots[@]}" | grep -E '^[a-z0-9][^ ]*:arm64$' | sort -u)
[ ${#debs[@]} -gt 4 ] || fail "apt found no arm64 packages for ${roots[*]}"
# apt's download sandbox user cannot write into mktemp's private directory.
(cd "$work/debs" && apt-get -q -o APT::Sandbox::User=root download "${debs[@]}" >/dev/null)
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
[ -x "$sysroot/usr/bin/$pyname" ] || fail "no aarch64 $pyname in the unpacked packages"
(cd "$work/debs" && apt-get -q -o APT::Sandbox::User=root download "lib$pyname-dev:arm64" >/dev/null)
dpkg-deb -x "$work"/debs/"lib$pyname-dev"_*_arm64.deb "$sysroot"
glibc=$(dpkg-deb -f "$work"/debs/libc6_*_arm64.deb Version | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
echo "${#debs[@]} packages: $pyname, glibc $glibc"

export QEMU_LD_PREFIX="$sysroot"
site="$work/site"
qpy() { PYTHONPATH="$site${PYTHONPATH_EXTRA:+:$PYTHONPATH_EXTRA}" qemu-aarch64 "$sysroot/usr/bin/$pyname" "$@"; }
pyver=$(qpy -c 'import platform, sys; assert platform.machine() == "aarch64"; print("%d.%d" % sys.version_info[:2])')

# ---------------------------------------------------------------------------
header "aarch64 wheels of the build and test requirements"
# setup.py's build requirements and bprop's dependencies from pyproject.toml;
# pytest and hypothesis from its test extra (the tests run here need no more).
mapfile -t reqs < <(python - "$root/pyproject.toml" <<'EOF'
import re, sys, tomllib
meta = tomllib.load(open(sys.argv[1], "rb"))
test = [r for r in meta["project"]["optional-dependencies"]["test"]
        if re.match(r"(pytest|hypothesis)\b", r) and not r.startswith("pytest-")]
print("\n".join(meta["build-system"]["requires"] + meta["project"]["dependencies"] + test))
EOF
)
# Wheels for every manylinux glibc up to the target's.
platforms=(--platform manylinux2014_aarch64)
for ((minor = 17; minor <= ${glibc#*.}; minor++)); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
python -m pip install -q --target "$site" --only-binary=:all: --implementation cp --python-version "$pyver" \
    "${platforms[@]}" "${reqs[@]}"
qpy -c 'import numpy, Cython, setuptools, pytest; print("numpy", numpy.__version__, "Cython", Cython.__version__)'

# ---------------------------------------------------------------------------
header "build bprop._kernels with setup.py under qemu"
src="$work/src"
copy_source "$root" "$src"
pyinc=$(qpy -c 'import sysconfig; print(sysconfig.get_config_var("INCLUDEPY"))')
(cd "$src" && qpy setup.py build_ext --inplace --include-dirs "$sysroot$pyinc:$sysroot/usr/include") \
    >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "the aarch64 build failed"; }
grep -E "^bprop: " "$work/build.log"
so=$(ls "$src"/bprop/_kernels*.so)
aarch64-linux-gnu-readelf -h "$so" | grep -q "Machine: *AArch64" || fail "$so is not an aarch64 module"

# The build record says compiled, and the module imports from the copy as the active backend.
(cd "$src" && PYTHONPATH_EXTRA="$src" qpy - "$src") <<'EOF'
import os, platform, sys
import bprop, bprop._build, bprop._kernels
assert platform.machine() == "aarch64", platform.machine()
assert bprop._build.PURE is False and "aarch64" in (bprop._build.COMPILER or ""), vars(bprop._build)
assert bprop._kernels.__file__.startswith(os.path.join(sys.argv[1], "bprop", "")), bprop._kernels.__file__
assert bprop.backend() == "cython", bprop.info()
print(bprop.info())
EOF

# ---------------------------------------------------------------------------
header "the hot loops are NEON code, in the headers and in the built module"
# On the host: test_aarch64.py needs only the cross binutils and pytest. With
# both and the module here, a skip would be a check that did not run.
(cd "$root" && BPROP_AARCH64_MODULE="$so" python -m pytest -p no:cacheprovider -q -rs tests/test_aarch64.py) |
    tee "$work/neon.log" || fail "tests/test_aarch64.py failed"
! grep -q SKIPPED "$work/neon.log" || fail "tests/test_aarch64.py skipped checks with the toolchain and the module present"

# ---------------------------------------------------------------------------
header "value and bad-input tests on aarch64, under qemu"
# Emulation makes these tests many times slower than on the host, so the two
# that took about half of their time there are left out. test_large_arrays
# repeats the other differential tests' loops on half a million elements
# (the thread splitting it also covers is checked by the threading-threshold
# tests).
# test_kernel_checks_buffer_sizes resizes each argument of each kernel along
# each axis, 1500 cases each in a forked child: those size checks are the same
# integer arithmetic on any 64-bit platform, while the hostile-argument,
# zero-size and other bad-input tests still run every kernel here.
tests=(tests/test_differential.py tests/test_functions.py tests/test_exp_accuracy.py tests/test_bad_input.py
       tests/test_backend.py::test_compiled_module_is_an_extension)
log="$work/tests.log"
set +e
# Not -q: the report header names the bprop the tests import and its build.
(cd "$src" && PYTHONPATH_EXTRA="$src" qpy -m pytest -p no:cacheprovider -m "not slow" \
    -k "not test_large_arrays and not test_kernel_checks_buffer_sizes" \
    "${tests[@]}") 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || fail "tests failed on aarch64 (exit $status)"
grep -E "^bprop .* from $src/bprop: compiled in the source tree $src, backend cython$" "$log" ||
    fail "the tests did not run on the compiled aarch64 module (see the report header above)"

header "aarch64 checks passed"
