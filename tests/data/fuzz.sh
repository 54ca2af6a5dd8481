#!/bin/sh
# Builds the idx fuzzer (tests/data/fuzz_idx.c) with clang, ASan and UBSan in
# its own build folder, and runs it for a fixed time from the seed corpus.
# Exit status: 0 when it found nothing, non-zero otherwise (the crashing input
# is left as ./crash-* or in the artifact folder given by FUZZ_ARTIFACTS).
# Usage: tests/data/fuzz.sh [SECONDS=60] [BUILD_DIR=build-fuzz]
set -eu
secs=${1:-60}
bdir=${2:-build-fuzz}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ ! -f "$bdir/build.ninja" ]; then
  CC=clang meson setup "$bdir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dgpu=disabled -Dbuildtype=debugoptimized -Dwerror=true >/dev/null
fi
ninja -C "$bdir" tests/data/fuzz_idx
work=$(mktemp -d /tmp/tfdist-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp tests/data/fuzz_corpus/* "$work/"
artifacts=${FUZZ_ARTIFACTS:-./}
# UB must stop the run like a crash, not scroll past.
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
  "$bdir/tests/data/fuzz_idx" -max_total_time="$secs" -max_len=8192 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts" "$work"
