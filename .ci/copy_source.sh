# Sourced by the CI scripts that build the extension in a throwaway copy.
#
# copy_source ROOT DEST: copy the source tree at ROOT into DEST without build
# products (*.so, build/, bprop/_kernels.c, bprop/_build.py), so that the
# copy builds from scratch: in a git checkout, the tracked files plus the
# untracked ones that are not ignored (files deleted but not yet committed
# are skipped); elsewhere, everything but those products.
copy_source() {
    local root=$1 dest=$2
    mkdir -p "$dest"
    if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$root" ls-files -z --cached --others --exclude-standard |
            (cd "$root" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done) |
            (cd "$root" && tar --null -T - -cf -) | tar -C "$dest" -xf -
    else
        (cd "$root" && tar --exclude=.git --exclude=build --exclude='*.so' --exclude='bprop/_kernels.c' \
            --exclude=bprop/_build.py -cf - .) | tar -C "$dest" -xf -
    fi
}
