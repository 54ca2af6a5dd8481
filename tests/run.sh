#!/usr/bin/env bash
# The whole test suite: a -Werror build (with CUDA when the toolkit is there;
# GPU tests skip with 77 without a GPU), every test, then the unit tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer, then the idx, serve and hello fuzzers.
# Ends with one line: "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/.."
root=$(pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
passed=0 failed=0 skipped=0
t_start=$SECONDS

# One line per step with the time since the start, so minutes of building
# are not silence: "[  95 s] build-ci: built (159 steps)".
step() { printf '[%4d s] %s\n' "$((SECONDS - t_start))" "$*"; }

# Adds a meson build dir's results (testlog.json) to the totals.
tally() {
  local counts
  counts=$(/usr/bin/python3 - "$1/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
except OSError:
    f += 1
print(p, f, s)
PY
)
  read -r p f s <<<"$counts"
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

# build DIR SUITE-ARGS... : configure (once), build, test.
suite() {
  local dir=$1; shift
  local opts=$1; shift
  mkdir -p .logs
  # --reconfigure applies opts to an existing dir too, so a dir left by an
  # earlier run with other options is never tested as it was.
  local again=""
  [ -f "$dir/build.ninja" ] && again=--reconfigure
  # shellcheck disable=SC2086
  step "$dir: configuring (log: .logs/$dir.setup.log)"
  meson setup $again "$dir" $opts >".logs/$dir.setup.log" 2>&1 || { tail -30 ".logs/$dir.setup.log"; failed=$((failed + 1)); return; }
  step "$dir: building (log: .logs/$dir.build.log)"
  if ! ninja -C "$dir" >".logs/$dir.build.log" 2>&1; then
    tail -40 ".logs/$dir.build.log"
    echo "BUILD FAILED: $dir"
    failed=$((failed + 1))
    return
  fi
  step "$dir: built ($(grep -c '^\[' ".logs/$dir.build.log") steps); testing"
  rm -f "$dir/meson-logs/testlog.json"
  meson test -C "$dir" --print-errorlogs "$@"
  tally "$dir"
  step "$dir: tested"
}

suite build-ci "-Dwerror=true -Dgpu=auto -Dbuildtype=release"
suite build-asan "-Dwerror=true -Dgpu=disabled -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug" --suite unit
# The network-facing parsers (serve's requests, the mesh's hello) get 60 s each.
for spec in idx:45 serve:60 hello:60; do
  target=${spec%%:*} secs=${spec##*:}
  step "fuzzing $target for $secs s"
  if tests/fuzz.sh "$target" "$secs"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
