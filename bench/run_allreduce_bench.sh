#!/usr/bin/env bash
# Gradient averaging on AlexNet's gradient sizes with and without bucketing/overlap, on 1, 2 and 4 ranks
# (mpirun --oversubscribe: more ranks than cores share them). Options go to bench_allreduce.
# Usage: bench/run_allreduce_bench.sh [--steps N] [--step_s S] [--compute_scale F] [--bucket_mb M] [--poll_ms P]
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${ALEXNET_BUILD:-build}/bin/bench_allreduce
[ -x "$bench" ] || { echo "run_allreduce_bench.sh: $bench not built; run scripts/build.sh first" >&2; exit 1; }
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
for np in ${ALEXNET_BENCH_RANKS:-1 2 4}; do
  timeout 600 mpirun --oversubscribe --bind-to none -np "$np" "$bench" "$@"
  echo
done
