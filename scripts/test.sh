#!/usr/bin/env bash
# Sets everything up (dependencies, build) and runs every test: unit, MPI and PyTorch parity.
# A GPU is used when present; without one the GPU tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
