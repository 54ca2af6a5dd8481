#!/bin/bash
# The relocatable bundle (launcher/bundle.sh) runs where Debian's packages are
# gone: in a private mount namespace, /usr/lib/x86_64-linux-gnu is replaced by
# a folder with only glibc, libgcc_s, libstdc++ and what the shell tools need,
# Open MPI's help and config folders are emptied, and the bundle is moved
# after it was made. Then a singleton and `mpirun -np 2` train from it.
# CUDA's libraries stay where they are, as on a GPU host. Exit 77 when mount
# namespaces are not available (not root, no unshare).
set -uo pipefail

: "${TFDIST:?set by meson}" "${TFDIST_SOURCE_ROOT:?set by meson}"
BUILD=$(cd "$(dirname "$TFDIST")/.." && pwd)
if [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null; then
  echo "SKIP: needs root and unshare -m"
  exit 77
fi
TMP=$(mktemp -d /tmp/tfdist-bundle-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

"$TFDIST_SOURCE_ROOT/launcher/bundle.sh" --build "$BUILD" --out "$TMP/made/tfdist" > "$TMP/bundle.log" 2>&1 ||
  { cat "$TMP/bundle.log"; echo "FAIL: bundle.sh"; exit 1; }
tail -n 2 "$TMP/bundle.log"
PYTHONPATH="$TFDIST_SOURCE_ROOT/tests" /usr/bin/python3 -c \
  "import idxgen, numpy; idxgen.write_set('$TMP/data', numpy.random.default_rng(1), 600, 200)" || exit 1

# The host as a bare GPU node sees it: glibc and friends, nothing else.
FAKE=$TMP/hostlib
mkdir -p "$FAKE" "$TMP/empty"
for tool in sh bash env dirname readlink cat ls grep sed awk tr head tail basename mkdir rm cp mv \
            find sort uname timeout id wc ldconfig; do
  p=$(command -v "$tool") || continue
  ldd "$p" 2>/dev/null | awk '/=>/ {print $3} /^\t\/lib/ {print $1}'
done | sort -u | while read -r lib; do [ -f "$lib" ] && cp -L "$lib" "$FAKE/"; done
for lib in libgcc_s.so.1 libstdc++.so.6 libm.so.6 libc.so.6 libpthread.so.0 libdl.so.2 librt.so.1 \
           libresolv.so.2 ld-linux-x86-64.so.2; do
  cp -L "/usr/lib/x86_64-linux-gnu/$lib" "$FAKE/" 2>/dev/null
done

cat > "$TMP/inside.sh" <<EOF
set -eu
for d in /usr/share/openmpi /etc/openmpi /usr/share/pmix; do [ -d \$d ] && mount --bind "$TMP/empty" \$d; done
mount --bind "$FAKE" /usr/lib/x86_64-linux-gnu # last: mount itself needs libmount
if ls /usr/lib/x86_64-linux-gnu/libmpi.so.40 /usr/lib/x86_64-linux-gnu/libhdf5_serial.so.103 >/dev/null 2>&1; then
  echo "namespace did not hide the packages"; exit 1
fi
mv "$TMP/made/tfdist" "$TMP/moved"
B="$TMP/moved"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"\$B/bin/tfdist" --check-build
cd "$TMP"
"\$B/bin/tfdist" train --device cpu --epochs 1 --max-steps 20 --data-folder "$TMP/data" \
  --outputs "$TMP/o1" --logs "$TMP/l1" --progress off
timeout -k 5 120 "\$B/bin/mpirun" -np 2 --oversubscribe --bind-to none "\$B/bin/tfdist" train \
  --device cpu --epochs 1 --max-steps 10 --data-folder "$TMP/data" --outputs "$TMP/o2" \
  --logs "$TMP/l2" --progress off
EOF
unshare -m --propagation private bash "$TMP/inside.sh" > "$TMP/run.log" 2>&1
rc=$?
cat "$TMP/run.log"
if [ $rc -ne 0 ]; then echo "FAIL: rc=$rc"; exit 1; fi
n=$(grep -c '^final_acc' "$TMP/run.log")
if [ "$n" != 2 ]; then echo "FAIL: expected 2 final_acc lines, got $n"; exit 1; fi
grep -q 'libcublas.so' "$TMP/run.log" || { echo "FAIL: the wrapper did not report cuBLAS"; exit 1; }
# --check-build loads the CUDA module from the bundle (libexec/tfdist-cuda.so)
if grep -q 'CUDA back end' "$TMP/run.log"; then echo "FAIL: the CUDA module did not load"; exit 1; fi
echo ok
