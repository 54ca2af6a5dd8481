#!/bin/bash
# A CUDA build's main binary links no CUDA library, and a training run on the
# CPU never loads the CUDA module or cuBLAS/cuDNN/NCCL (that is what kept a
# CPU run at 2.6x the memory of a CPU-only build); --check-build loads the
# module for its versions, and a module that is not there is one line.
set -uo pipefail
: "${TFDIST:?set by meson}" "${TFDIST_SOURCE_ROOT:?set by meson}"
fail() { echo "FAIL: $*"; exit 1; }
TMP=$(mktemp -d /tmp/tfdist-lazy-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

needed=$(readelf -d "$TFDIST" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
if echo "$needed" | grep -E '^lib(cudart|cublas|cudnn|nccl|cuda)\.'; then
  fail "tfdist links CUDA libraries"
fi
echo "ok: tfdist NEEDs no CUDA library"

LD_DEBUG=files "$TFDIST" --check-build > "$TMP/cb.log" 2> "$TMP/cb-ld.log" || fail "--check-build"
grep -q 'file=.*tfdist-cuda\.so' "$TMP/cb-ld.log" || fail "--check-build did not load tfdist-cuda.so"
if grep -q 'CUDA back end' "$TMP/cb.log"; then cat "$TMP/cb.log"; fail "--check-build: module error"; fi
echo "ok: --check-build loads the module"

TFDIST_CUDA_MODULE=/nonexistent/tfdist-cuda.so "$TFDIST" --check-build > "$TMP/cb2.log" 2>&1
grep -q '^      CUDA back end: cannot load /nonexistent/tfdist-cuda\.so: ' "$TMP/cb2.log" ||
  { cat "$TMP/cb2.log"; fail "a missing module is not said in one line"; }
echo "ok: a missing module is one line"

PYTHONPATH="$TFDIST_SOURCE_ROOT/tests" /usr/bin/python3 -c \
  "import idxgen, numpy; idxgen.write_set('$TMP/data', numpy.random.default_rng(1), 600, 200)" || exit 1
device=cpu # auto where no GPU is visible: the probe alone must not load the module
grep -q 'GPUs visible: 0 ' "$TMP/cb.log" && device=auto
LD_DEBUG=files "$TFDIST" train --device $device --epochs 1 --max-steps 5 --data-folder "$TMP/data" \
  --outputs "$TMP/o" --logs "$TMP/l" --progress off > "$TMP/run.log" 2> "$TMP/run-ld.log" ||
  { tail -5 "$TMP/run.log"; fail "train --device $device"; }
if grep -E 'file=.*(tfdist-cuda\.so|libcublas|libcudnn|libnccl|libcudart)' "$TMP/run-ld.log" | head -3 | grep .; then
  fail "a CPU run (--device $device) loaded CUDA libraries"
fi
echo "ok: train --device $device loads no CUDA library"
