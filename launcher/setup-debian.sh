#!/bin/sh
# Installs every Debian package tfdist needs to build, test and benchmark:
# the toolchain and libraries, the test oracles, and Slurm/munge/iproute2 for
# the launcher tests (python3-venv: tests/show make a venv with TensorBoard
# and ONNX Runtime from PyPI; python3-matplotlib: the benchmark plots).
# Idempotent; run as root (or through sudo).
#   launcher/setup-debian.sh          install
#   launcher/setup-debian.sh --list   print the package names only
set -eu

PACKAGES="
  build-essential meson ninja-build pkg-config
  openmpi-bin libopenmpi-dev
  libhdf5-dev hdf5-tools
  libcjson-dev libopenblas-dev libblis-dev zlib1g-dev
  libmicrohttpd-dev gnutls-bin curl openssl
  dataset-fashion-mnist
  python3 python3-numpy python3-h5py python3-venv python3-matplotlib
  clang libclang-rt-14-dev
  slurmctld slurmd slurm-client munge
  iproute2 util-linux procps time
"

if [ "${1:-}" = "--list" ]; then
  for p in $PACKAGES; do echo "$p"; done
  exit 0
fi
if [ $# -gt 0 ]; then
  echo "setup-debian.sh: error: unknown argument '$1' (only --list)" >&2
  exit 2
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
  else
    echo "setup-debian.sh: error: run as root (no sudo found)" >&2
    exit 1
  fi
fi

missing=
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  echo "setup-debian: all $(echo $PACKAGES | wc -w) packages present"
  exit 0
fi

echo "setup-debian.sh: installing:$missing"
# Services are not started by apt here (no systemd); the tests start their own daemons.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
