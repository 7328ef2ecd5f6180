#!/usr/bin/env bash
# Installs the dependencies (apt-get) and builds everything into build/ (Release).
# Usage: scripts/build.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >build-configure.log 2>&1 || { cat build-configure.log; exit 1; }
grep 'alexnet:' build-configure.log | sed 's/^-- //'
jobs=$(nproc)
cmake --build build -j"$jobs" 2>&1 | grep -E 'error|warning|Error' || true
cmake --build build -j"$jobs" >/dev/null  # fails loudly if the build above failed
echo "build: executables in build/bin: $(ls build/bin | tr '\n' ' ')"
