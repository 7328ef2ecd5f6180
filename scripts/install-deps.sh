#!/usr/bin/env bash
# Installs, with apt-get, everything the build, the tests and the benchmarks need on Debian 12.
# Idempotent: when every package is present it prints one line and changes nothing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools zlib1g-dev
  libyaml-cpp-dev
  libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev
  libdnnl-dev
  libopenblas-dev
  libgtest-dev libgmock-dev googletest
  libbenchmark-dev
  python3 python3-torch python3-h5py python3-numpy python3-pil python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: must run as root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
