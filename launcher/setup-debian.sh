#!/usr/bin/env bash
# Installs every Debian package tfdist needs to build, test and run (as root,
# or via sudo). Idempotent.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
PKGS=(
  build-essential meson ninja-build pkg-config
  openmpi-bin libopenmpi-dev libhdf5-dev hdf5-tools libcjson-dev libopenblas-dev zlib1g-dev
  dataset-fashion-mnist
  python3 python3-numpy python3-h5py
  clang libclang-rt-14-dev
  slurmctld slurmd slurm-client munge iproute2 procps time
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "setup-debian: all ${#PKGS[@]} packages present"
