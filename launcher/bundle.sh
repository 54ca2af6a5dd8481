#!/bin/bash
# Makes a relocatable tfdist bundle: the binary and its CUDA module
# (tfdist-cuda.so, loaded on demand; plus the GPU tests and benchmarks) with
# its non-CUDA runtime libraries (Open MPI with its plugins,
# mpirun/orted and help files, PMIx plugins, HDF5, cJSON, OpenBLAS, zlib ...)
# and wrappers that set the paths. It runs where only glibc, the NVIDIA
# driver and the CUDA libraries (cuBLAS, cuDNN, NCCL: e.g. PyTorch's wheels)
# exist; the wrappers find those at run time and say where.
#
#   launcher/bundle.sh [--build DIR] [--out DIR] [--tar FILE.tar.xz] [--data DIR DEST]
#
# --build  a meson build dir with CUDA (default: build-cuda)
# --out    the bundle folder (default: .bundle/tfdist)
# --tar    also write it as one xz tarball (what travels to a GPU machine)
# --data   copy DIR's idx files (*.gz or raw) to DEST, e.g. Fashion-MNIST
#
# Left to the host: glibc (libc, libm, libpthread, libdl, librt, ld.so),
# libgcc_s, libstdc++ (a copy waits in lib/fallback/ for hosts without one),
# the driver (libcuda.so.1) and cuBLAS/cuDNN/NCCL: libcublasLt alone is
# 540 MB, far over any bundle budget, and the CUDA runtime is linked statically.
# HDF5's S3 driver pulls in libcurl/libcrypto (~16 MB of TLS and network
# libraries) that plain file I/O never calls: small stubs with the same
# sonames and symbol versions stand in for them (lib/, see stub_libs).
set -euo pipefail

BUILD=build-cuda
OUT=.bundle/tfdist
TAR=""
DATA_SRC=""
DATA_DST=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --tar) TAR=$2; shift 2 ;;
    --data) DATA_SRC=$2; DATA_DST=$3; shift 3 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "bundle.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

die() { echo "bundle.sh: error: $*" >&2; exit 1; }
[ -x "$BUILD/cli/tfdist" ] || die "$BUILD/cli/tfdist not found (build first: ninja -C $BUILD)"

MPI_PLUGINS=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3
PMIX_ROOT=/usr/lib/x86_64-linux-gnu/pmix2
for d in "$MPI_PLUGINS" "$PMIX_ROOT/lib/pmix" /usr/share/openmpi; do
  [ -d "$d" ] || die "$d missing (Debian's openmpi-bin / libopenmpi-dev)"
done

rm -rf "$OUT"
mkdir -p "$OUT"/{bin,libexec,lib/openmpi,lib/pmix,lib/fallback,share/openmpi,share/pmix,share/tfdist,etc}
OUT=$(cd "$OUT" && pwd)

# --- executables -----------------------------------------------------------
EXES=("$BUILD/cli/tfdist")
for f in tests/gpu/test_gpu_ops tests/gpu/test_gpu_step tests/collective/test_nccl_allreduce \
         benchmarks/gpu/gpu_step_bench benchmarks/gpu/gpu_allreduce_bench; do
  [ -x "$BUILD/$f" ] && EXES+=("$BUILD/$f")
done
for f in "${EXES[@]}"; do cp -L "$f" "$OUT/libexec/"; done
# The CUDA back end, loaded on demand: beside the binary is where tfdist looks.
CUDA_MODULE="$BUILD/tfdist-cuda.so"
[ -f "$CUDA_MODULE" ] || die "$CUDA_MODULE not found (a build with CUDA makes it)"
cp -L "$CUDA_MODULE" "$OUT/libexec/"
for f in orterun orted ompi_info; do cp -L "/usr/bin/$f" "$OUT/libexec/"; done

# Open MPI plugins, less the transports and OpenSHMEM parts a GPU node of
# this kind never uses (UCX, OFI, verbs, PSM): ob1 over self/vader/tcp stays.
for f in "$MPI_PLUGINS"/*.so; do
  case "$(basename "$f")" in
    *ucx*|*ofi*|*openib*|*psm*|*uct*|*verbs*|*usnic*|*portals*|mca_spml_*|mca_sshmem_*|mca_scoll_*|mca_atomic_*|mca_memheap_*|mca_mtl_*|mca_pml_cm.so) ;;
    *) cp -L "$f" "$OUT/lib/openmpi/" ;;
  esac
done
cp -L "$PMIX_ROOT"/lib/pmix/*.so "$OUT/lib/pmix/"
cp -L /usr/share/openmpi/help-*.txt "$OUT/share/openmpi/"
[ -d /usr/share/openmpi/amca-param-sets ] && cp -rL /usr/share/openmpi/amca-param-sets "$OUT/share/openmpi/"
[ -d "$PMIX_ROOT/share/pmix" ] && cp -L "$PMIX_ROOT"/share/pmix/* "$OUT/share/pmix/" 2>/dev/null || true
cp -L /etc/openmpi/openmpi-mca-params.conf "$OUT/etc/" 2>/dev/null || true
cp -L /etc/openmpi/openmpi-default-hostfile "$OUT/etc/" 2>/dev/null || true

# --- library closure ---------------------------------------------------------
# Host-provided (never copied): glibc, libgcc_s, the CUDA stack, the stubbed.
is_host_lib() {
  case "$1" in
    linux-vdso*|ld-linux*|libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|libutil.so.*|libgcc_s.so.*) return 0 ;;
    libcuda.so.*|libcublas*|libcudnn*|libnccl*|libcudart*|libnvidia-*|libnvrtc*|libnvJitLink*) return 0 ;;
  esac
  return 1
}
STUBBED="libcurl.so.4 libcrypto.so.3"

declare -A WHERE=()   # soname -> path, from ldd of every root
declare -A DONE=()
ROOTS=("$OUT"/libexec/* "$OUT"/lib/openmpi/*.so "$OUT"/lib/pmix/*.so)
for r in "${ROOTS[@]}"; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] && [ -n "$path" ] && [ "$path" != "not" ] && WHERE[$name]=$path
  done < <(ldd "$r" 2>/dev/null || true)
done

needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

queue=()
for r in "${ROOTS[@]}"; do
  while read -r n; do queue+=("$n"); done < <(needed "$r")
done
missing=()
while [ ${#queue[@]} -gt 0 ]; do
  n=${queue[0]}; queue=("${queue[@]:1}")
  [ -n "${DONE[$n]:-}" ] && continue
  DONE[$n]=1
  is_host_lib "$n" && continue
  case " $STUBBED " in *" $n "*) continue ;; esac
  p=${WHERE[$n]:-}
  if [ -z "$p" ]; then missing+=("$n"); continue; fi
  if [ "$n" = libstdc++.so.6 ]; then cp -L "$p" "$OUT/lib/fallback/"; continue; fi
  cp -L "$p" "$OUT/lib/$n"
  while read -r m; do queue+=("$m"); done < <(needed "$p")
done
[ ${#missing[@]} -eq 0 ] || die "could not resolve: ${missing[*]}"

# --- stubs for HDF5's unused S3 driver ---------------------------------------
stub_libs() {
  local tmp; tmp=$(mktemp -d)
  cat > "$tmp/curl.c" <<'EOF'
/* Stand-in for libcurl.so.4: HDF5's S3 (ros3) driver links it, tfdist never
 * opens S3 files. Every call fails cleanly instead of crashing. */
#include <stddef.h>
void *curl_easy_init(void) { return NULL; }
int curl_global_init(long flags) { (void)flags; return 2; }
void curl_global_cleanup(void) {}
void curl_easy_cleanup(void *h) { (void)h; }
int curl_easy_perform(void *h) { (void)h; return 2; }
int curl_easy_setopt(void *h, int opt, ...) { (void)h; (void)opt; return 2; }
void *curl_slist_append(void *l, const char *s) { (void)l; (void)s; return NULL; }
void curl_slist_free_all(void *l) { (void)l; }
EOF
  cat > "$tmp/crypto.c" <<'EOF'
/* Stand-in for libcrypto.so.3, needed only by HDF5's S3 request signing. */
#include <stddef.h>
const void *EVP_sha256(void) { return NULL; }
unsigned char *HMAC(const void *md, const void *k, int kl, const unsigned char *d, size_t n,
                    unsigned char *out, unsigned int *ol) {
  (void)md; (void)k; (void)kl; (void)d; (void)n; (void)out; (void)ol; return NULL;
}
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md) {
  (void)d; (void)n; (void)md; return NULL;
}
EOF
  echo 'CURL_OPENSSL_4 { global: curl_*; local: *; };' > "$tmp/curl.map"
  echo 'OPENSSL_3.0.0 { global: EVP_sha256; HMAC; SHA256; local: *; };' > "$tmp/crypto.map"
  cc -shared -fPIC -O2 -o "$OUT/lib/libcurl.so.4" -Wl,-soname,libcurl.so.4 \
     -Wl,--version-script="$tmp/curl.map" "$tmp/curl.c"
  cc -shared -fPIC -O2 -o "$OUT/lib/libcrypto.so.3" -Wl,-soname,libcrypto.so.3 \
     -Wl,--version-script="$tmp/crypto.map" "$tmp/crypto.c"
  rm -rf "$tmp"
}
stub_libs

# --- the sonames of the CUDA stack this build links ---------------------------
CUDA_SONAMES=$(needed "$CUDA_MODULE" | grep -E '^lib(cublas|cudnn|nccl|cudart)' | tr '\n' ' ')
for s in $CUDA_SONAMES; do # cuBLAS loads its Lt half from the same release
  case $s in libcublas.so.*) CUDA_SONAMES="$CUDA_SONAMES libcublasLt.so.${s#libcublas.so.}" ;; esac
done

# --- wrappers -------------------------------------------------------------------
sed "s|@CUDA_SONAMES@|$(echo $CUDA_SONAMES)|" "$(dirname "$0")/bundle_env.sh" > "$OUT/share/tfdist/env.sh"
write_wrapper() { # name, command (after sourcing env.sh)
  cat > "$OUT/bin/$1" <<EOF
#!/bin/sh
# $1 from a relocatable tfdist bundle: sets the library and plugin paths first.
TFDIST_BUNDLE=\$(cd "\$(dirname "\$(readlink -f "\$0")")/.." && pwd)
. "\$TFDIST_BUNDLE/share/tfdist/env.sh" || exit 1
$2
EOF
  chmod +x "$OUT/bin/$1"
}
write_wrapper tfdist 'exec "$TFDIST_BUNDLE/libexec/tfdist" "$@"'
write_wrapper mpirun 'exec "$TFDIST_BUNDLE/libexec/orterun" "$@"'
write_wrapper ompi_info 'exec "$TFDIST_BUNDLE/libexec/ompi_info" "$@"'
write_wrapper tfdist-env 'if [ "${1:-}" = --where ]; then tfdist_bundle_where; exit $?; fi
[ $# -gt 0 ] || { echo "usage: tfdist-env --where | tfdist-env CMD [ARGS]" >&2; exit 2; }
case "$1" in */*) exec "$@" ;; *) [ -x "$TFDIST_BUNDLE/libexec/$1" ] && { c=$1; shift; exec "$TFDIST_BUNDLE/libexec/$c" "$@"; }; exec "$@" ;; esac'

# --- data, manifest, tarball ----------------------------------------------------
if [ -n "$DATA_SRC" ]; then
  mkdir -p "$DATA_DST"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    src=$(find -L "$DATA_SRC" \( -name "$f" -o -name "$f.gz" \) -print -quit)
    [ -n "$src" ] || die "--data: $f[.gz] not under $DATA_SRC"
    cp -L "$src" "$DATA_DST/"
  done
fi
( cd "$OUT" && find . -type f | sort | xargs ls -la | awk '{print $5, $9}' ) > "$OUT/share/tfdist/MANIFEST"
echo "cuda sonames (found at run time): $CUDA_SONAMES" >> "$OUT/share/tfdist/MANIFEST"
echo "bundle: $OUT ($(du -sh "$OUT" | cut -f1); $(ls "$OUT/lib" | wc -l) libraries, $(ls "$OUT/lib/openmpi" | wc -l) MPI plugins)"
echo "needs from the host at run time: glibc, libgcc_s, libstdc++ (else lib/fallback), libcuda.so.1, $CUDA_SONAMES"
if [ -n "$TAR" ]; then
  mkdir -p "$(dirname "$TAR")"
  tar -C "$(dirname "$OUT")" -cf - "$(basename "$OUT")" | xz -T0 -6 > "$TAR.tmp"
  mv "$TAR.tmp" "$TAR"
  echo "tarball: $TAR ($(du -h "$TAR" | cut -f1))"
fi
