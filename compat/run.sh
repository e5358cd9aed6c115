#!/usr/bin/env bash
# `make compat`: this working tree against every release point in compat/releases.
#
# For each release it extracts the release's commit into <target>/compat/<tag>/src (git archive),
# builds its CLI (cargo build --release --bin memotag, into <target>/compat/<tag>/target) and its
# Python extension (maturin develop, into the virtualenv <target>/compat/<tag>/venv), then runs
# compat/scenarios.py: old and new builds, as real processes, opening, writing and maintaining
# each other's stores. A release's build is reused while its commit is the same (the stamp
# <target>/compat/<tag>/built holds the commit it was built from).
#
# The new build is the working tree's: <target>/release/memotag (built here) and the Python
# extension in .venv (`make develop`, which `make compat` runs first).
#
# Environment: COMPAT_RELEASES (space-separated tags, default every line of compat/releases),
# CARGO_TARGET_DIR (default ./target), COMPAT_NEW_PYTHON (default .venv/bin/python), MATURIN
# (default .venv/bin/maturin), COMPAT_REBUILD=1 (rebuild the releases even if built).
#
# Output: the matrix on stdout and in <target>/compat/matrix-<tag>.txt (and .json); exit status 1
# if any cell's outcome differs from what the compatibility rules say.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
SCRATCH="$TARGET/compat"
CARGO="${CARGO:-cargo}"
NEW_PYTHON="${COMPAT_NEW_PYTHON:-$ROOT/.venv/bin/python}"
MATURIN="${MATURIN:-$ROOT/.venv/bin/maturin}"
PYTHON="${PYTHON:-python3}"

die() { echo "compat: $*" >&2; exit 1; }
log() { echo "compat: $*" >&2; }

[ -x "$NEW_PYTHON" ] || die "$NEW_PYTHON is missing: run \`make develop\` first (make compat does)"
[ -x "$MATURIN" ] || die "$MATURIN is missing: run \`make venv\` first (make compat does)"
"$NEW_PYTHON" -c 'import memotag' || die "the new build's Python package does not import: run \`make develop\`"

log "building this working tree's CLI"
"$CARGO" build --release --bin memotag --quiet
NEW_CLI="$TARGET/release/memotag"
[ -x "$NEW_CLI" ] || die "$NEW_CLI was not built"

# The release points: "tag commit" lines, comments and blank lines skipped.
declare -A HASH
ORDER=()
while read -r tag hash _rest; do
    case "$tag" in ''|'#'*) continue ;; esac
    [[ "$hash" =~ ^[0-9a-f]{40}$ ]] || die "compat/releases: $tag needs a full 40-digit commit hash"
    HASH[$tag]=$hash
    ORDER+=("$tag")
done < "$ROOT/compat/releases"
[ "${#ORDER[@]}" -gt 0 ] || die "compat/releases lists no release"
WANTED=(${COMPAT_RELEASES:-${ORDER[@]}})

# The commit of a release: its tag when this clone has it (and it must agree with the file),
# else the hash from the file.
resolve() {
    local tag=$1 want=${HASH[$1]:-} got
    [ -n "$want" ] || die "$tag is not in compat/releases"
    if got=$(git rev-parse -q --verify "refs/tags/$tag^{commit}" 2>/dev/null); then
        [ "$got" = "$want" ] || die "tag $tag is $got but compat/releases says $want"
    elif ! git cat-file -e "$want^{commit}" 2>/dev/null; then
        die "neither tag $tag nor commit $want is in this clone (a shallow clone? git fetch --unshallow --tags)"
    fi
    echo "$want"
}

# Builds one release into $SCRATCH/<tag>, unless it is already built from the same commit.
build_release() {
    local tag=$1 commit=$2 dir="$SCRATCH/$1"
    if [ "${COMPAT_REBUILD:-0}" != 1 ] && [ "$(cat "$dir/built" 2>/dev/null)" = "$commit" ] \
        && [ -x "$dir/target/release/memotag" ] && [ -x "$dir/venv/bin/python" ]; then
        log "$tag: reusing the build of ${commit:0:12} in $dir"
        return
    fi
    log "$tag: building ${commit:0:12} in $dir (log: $dir/build.log; several minutes)"
    rm -rf "$dir/src" "$dir/venv" "$dir/built"
    mkdir -p "$dir/src"
    git archive --format=tar "$commit" | tar -x -C "$dir/src"
    # The release shares most dependencies with the working tree: start from its compiled ones
    # (cargo rebuilds whatever does not match) instead of compiling every crate again.
    if [ ! -d "$dir/target/release" ] && [ -d "$TARGET/release/.fingerprint" ]; then
        mkdir -p "$dir/target/release/deps"
        cp -a "$TARGET/release/.fingerprint" "$TARGET/release/build" "$dir/target/release/"
        find "$TARGET/release/deps" -maxdepth 1 -name 'lib*' -exec cp -a {} "$dir/target/release/deps/" \;
    fi
    {
        echo "== cargo build --release --bin memotag ($tag, $commit)"
        (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" "$CARGO" build --release --locked --bin memotag)
        echo "== Python extension into $dir/venv"
        "$PYTHON" -m venv "$dir/venv"
        (cd "$dir/src/python" && CARGO_TARGET_DIR="$dir/target" VIRTUAL_ENV="$dir/venv" \
            PATH="$dir/venv/bin:$PATH" "$MATURIN" develop --release)
    } > "$dir/build.log" 2>&1 || { tail -30 "$dir/build.log" >&2; die "$tag: build failed (see $dir/build.log)"; }
    env -u PYTHONPATH "$dir/venv/bin/python" -c 'import memotag' \
        || die "$tag: its Python package does not import (see $dir/build.log)"
    echo "$commit" > "$dir/built"
}

status=0
for tag in "${WANTED[@]}"; do
    commit=$(resolve "$tag")
    build_release "$tag" "$commit"
    dir="$SCRATCH/$tag"
    "$PYTHON" "$ROOT/compat/scenarios.py" \
        --release "$tag" --release-commit "$commit" --release-src "$dir/src" \
        --old-python "$dir/venv/bin/python" --old-cli "$dir/target/release/memotag" \
        --new-src "$ROOT" --new-python "$NEW_PYTHON" --new-cli "$NEW_CLI" \
        --work "$SCRATCH/work-$tag" --matrix "$SCRATCH/matrix-$tag" || status=1
done
exit $status
