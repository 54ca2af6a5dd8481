#!/bin/sh
# Builds a libFuzzer harness with clang, ASan and UBSan in its own build
# folder, and runs it for a fixed time from its seed corpus:
#   idx    tests/data/fuzz_idx.c      the idx reader, loader, verifier, shard index
#   serve  tests/runtime/fuzz_serve.c tfdist serve's routes, request JSON and key check
#   hello  tests/collective/fuzz_hello.c the TF_CONFIG mesh's hello, MAC check, ps INIT
#          check and frame reading
# Exit status: 0 when it found nothing, non-zero otherwise (the crashing input
# is left as ./crash-* or in the artifact folder given by FUZZ_ARTIFACTS).
# Usage: tests/fuzz.sh [TARGET=idx] [SECONDS=60] [BUILD_DIR=build-fuzz]
set -eu
target=${1:-idx}
secs=${2:-60}
bdir=${3:-build-fuzz}
case $target in
  idx) exe=tests/data/fuzz_idx corpus=tests/data/fuzz_corpus max_len=8192 ;;
  serve) exe=tests/runtime/fuzz_serve corpus=tests/runtime/fuzz_serve_corpus max_len=16384 ;;
  hello) exe=tests/collective/fuzz_hello corpus=tests/collective/fuzz_hello_corpus max_len=4096 ;;
  *) echo "tests/fuzz.sh: unknown target '$target' (idx, serve or hello)" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ ! -f "$bdir/build.ninja" ]; then
  CC=clang meson setup "$bdir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dgpu=disabled -Dbuildtype=debugoptimized -Dwerror=true >/dev/null
fi
ninja -C "$bdir" "$exe"
work=$(mktemp -d /tmp/tfdist-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$corpus"/* "$work/"
artifacts=${FUZZ_ARTIFACTS:-./}
# UB must stop the run like a crash, not scroll past.
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
  "$bdir/$exe" -max_total_time="$secs" -max_len="$max_len" -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts" "$work"
