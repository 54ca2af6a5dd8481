# Sourced by the wrappers of a tfdist bundle (launcher/bundle.sh installs it
# as share/tfdist/env.sh); TFDIST_BUNDLE is the bundle's root. POSIX sh.
# Sets Open MPI's and PMIx's relocation variables, then finds the CUDA
# libraries this build links (@CUDA_SONAMES@) on the host and says where:
#   $TFDIST_CUDA_LIBS (dirs, colon-separated), $LD_LIBRARY_PATH, the nvidia/*
#   wheels of python3 (PyTorch's CUDA libraries), torch/lib, /usr/local/cuda*,
#   then ldconfig. Set TFDIST_BUNDLE_QUIET=1 to silence the report.

TFDIST_CUDA_SONAMES="@CUDA_SONAMES@"

# Open MPI compiled in Debian's multiarch paths: OPAL_PREFIX alone is not enough.
export OPAL_PREFIX="$TFDIST_BUNDLE"
export OPAL_EXEC_PREFIX="$TFDIST_BUNDLE"
export OPAL_BINDIR="$TFDIST_BUNDLE/libexec"
export OPAL_LIBDIR="$TFDIST_BUNDLE/lib"
export OPAL_PKGLIBDIR="$TFDIST_BUNDLE/lib/openmpi"
export OPAL_DATADIR="$TFDIST_BUNDLE/share"
export OPAL_PKGDATADIR="$TFDIST_BUNDLE/share/openmpi"
export OPAL_SYSCONFDIR="$TFDIST_BUNDLE/etc"
# PMIx 4 ignores PMIX_PREFIX but honours these.
export PMIX_MCA_mca_base_component_path="$TFDIST_BUNDLE/lib/pmix"
export PMIX_PKGLIBDIR="$TFDIST_BUNDLE/lib/pmix"
export PMIX_PKGDATADIR="$TFDIST_BUNDLE/share/pmix"
# Only ob1 over self/vader/tcp travels (no UCX/OFI plugins).
: "${OMPI_MCA_pml:=ob1}" "${OMPI_MCA_btl:=self,vader,tcp}"
export OMPI_MCA_pml OMPI_MCA_btl
# A singleton (no mpirun) needs no orted; hosts without ssh/rsh (containers,
# VMs) make the rsh launcher fail even for a singleton.
: "${OMPI_MCA_ess_singleton_isolated:=1}"
export OMPI_MCA_ess_singleton_isolated
if [ -z "${OMPI_MCA_plm:-}" ] && ! command -v ssh >/dev/null 2>&1 && ! command -v rsh >/dev/null 2>&1; then
  export OMPI_MCA_plm='^rsh'
fi
# vader's single-copy path needs ptrace rights that containers often lack.
: "${OMPI_MCA_btl_vader_single_copy_mechanism:=none}"
export OMPI_MCA_btl_vader_single_copy_mechanism

tfdist_bundle_python_dirs() {
  for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" - <<'EOF' 2>/dev/null && return 0
import importlib.util, os
out = []
try:
    import nvidia  # namespace package of NVIDIA's wheels (nvidia-cublas, -cudnn, -nccl ...)
    for base in nvidia.__path__:
        for root, dirs, files in os.walk(base):
            if os.path.basename(root) == "lib":
                out.append(root)
except Exception:
    pass
spec = importlib.util.find_spec("torch")  # located, not imported (that takes seconds)
if spec and spec.origin:
    out.append(os.path.join(os.path.dirname(spec.origin), "lib"))
print(":".join(out))
EOF
  done
  return 1
}

# Sets TFDIST_CUDA_LIBPATH and TFDIST_CUDA_REPORT (one line per library).
tfdist_bundle_find_cuda() {
  py_dirs=$(tfdist_bundle_python_dirs || true)
  sys_dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib \
             /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib 2>/dev/null | tr '\n' ':')
  TFDIST_CUDA_LIBPATH=""
  TFDIST_CUDA_REPORT=""
  status=0
  for so in $TFDIST_CUDA_SONAMES libcuda.so.1; do
    found="" how=""
    for group in "TFDIST_CUDA_LIBS:${TFDIST_CUDA_LIBS:-}" "LD_LIBRARY_PATH:${LD_LIBRARY_PATH:-}" \
                 "python wheels:$py_dirs" "system:$sys_dirs"; do
      label=${group%%:*}
      dirs=${group#*:}
      old_ifs=$IFS; IFS=:
      for d in $dirs; do
        if [ -n "$d" ] && [ -e "$d/$so" ]; then found=$d; how=$label; break; fi
      done
      IFS=$old_ifs
      [ -n "$found" ] && break
    done
    if [ -z "$found" ] && command -v ldconfig >/dev/null 2>&1; then
      p=$(ldconfig -p 2>/dev/null | awk -v so="$so" '$1 == so && /x86-64/ {print $NF; exit}')
      [ -n "$p" ] && found=$(dirname "$p") && how=ldconfig
    fi
    if [ -n "$found" ]; then
      line=$(printf '  %-20s %s  (%s)' "$so" "$found" "$how")
      case ":$TFDIST_CUDA_LIBPATH:" in *":$found:"*) ;; *) TFDIST_CUDA_LIBPATH="$TFDIST_CUDA_LIBPATH${TFDIST_CUDA_LIBPATH:+:}$found" ;; esac
    else
      status=1
      base=${so%.so.*}
      other=""
      for d in $(echo "${TFDIST_CUDA_LIBS:-}:${LD_LIBRARY_PATH:-}:$py_dirs:$sys_dirs" | tr ':' ' '); do
        o=$(ls "$d/$base".so.* 2>/dev/null | head -n 1)
        [ -n "$o" ] && other=$o && break
      done
      if [ "$so" = libcuda.so.1 ]; then
        line=$(printf '  %-20s NOT FOUND: no NVIDIA driver here (tfdist falls back to the CPU)' "$so")
      elif [ -n "$other" ]; then
        line=$(printf '  %-20s NOT FOUND (only %s: another CUDA major release; this build needs %s)' "$so" "$other" "$so")
      else
        line=$(printf '  %-20s NOT FOUND (install the CUDA library, e.g. the nvidia-* wheels, or set TFDIST_CUDA_LIBS)' "$so")
      fi
    fi
    TFDIST_CUDA_REPORT="$TFDIST_CUDA_REPORT$line
"
  done
  return $status
}

tfdist_bundle_where() {
  echo "tfdist bundle: $TFDIST_BUNDLE"
  printf '%s' "$TFDIST_CUDA_REPORT"
  if [ -n "${TFDIST_STDCXX_FALLBACK:-}" ]; then echo "  libstdc++.so.6       $TFDIST_BUNDLE/lib/fallback  (bundled: none on the host)"; fi
  for so in $TFDIST_CUDA_SONAMES; do
    printf '%s' "$TFDIST_CUDA_REPORT" | grep -q "^  $so  *NOT FOUND" && return 1
  done
  return 0
}

# Children (mpirun's ranks) inherit the result instead of searching again.
if [ -z "${TFDIST_CUDA_LIBPATH+set}" ] || [ "${TFDIST_BUNDLE_SEARCHED:-}" != "$TFDIST_BUNDLE" ]; then
  tfdist_bundle_find_cuda || true
  export TFDIST_CUDA_LIBPATH TFDIST_CUDA_REPORT
  export TFDIST_BUNDLE_SEARCHED="$TFDIST_BUNDLE"
  rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${SLURM_PROCID:-0}}}
  if [ -z "${TFDIST_BUNDLE_QUIET:-}" ] && [ "$rank" = 0 ] && [ "$(basename "$0")" != tfdist-env ]; then
    { echo "tfdist bundle: $TFDIST_BUNDLE"; printf '%s' "$TFDIST_CUDA_REPORT"; } >&2
  fi
  TFDIST_BUNDLE_QUIET=1 # mpirun's ranks: report once
  export TFDIST_BUNDLE_QUIET
fi
TFDIST_STDCXX_FALLBACK=""
if ! { command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libstdc++.so.6 (libc6,x86-64)'; } &&
   ! ls /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6 /lib64/libstdc++.so.6 >/dev/null 2>&1; then
  TFDIST_STDCXX_FALLBACK="$TFDIST_BUNDLE/lib/fallback"
fi
case ":${LD_LIBRARY_PATH:-}:" in
  *":$TFDIST_BUNDLE/lib:"*) ;;
  *) LD_LIBRARY_PATH="$TFDIST_BUNDLE/lib${TFDIST_CUDA_LIBPATH:+:$TFDIST_CUDA_LIBPATH}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}${TFDIST_STDCXX_FALLBACK:+:$TFDIST_STDCXX_FALLBACK}" ;;
esac
export LD_LIBRARY_PATH
