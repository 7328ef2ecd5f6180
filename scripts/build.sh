#!/usr/bin/env bash
# Installs the dependencies (apt-get) and builds everything into build/ (Release).
# Usage: scripts/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >build-configure.log 2>&1 || { cat build-configure.log; exit 1; }
grep 'alexnet:' build-configure.log | sed 's/^-- //'
jobs=$(nproc)
if ! cmake --build build -j"$jobs" >build.log 2>&1; then
  grep -E -A5 'error:|Error [0-9]' build.log | head -60
  echo "build: failed; the whole log is in build.log" >&2
  exit 1
fi
grep -E 'warning:' build.log || true
echo "build: executables in build/bin: $(ls build/bin | tr '\n' ' ')"
