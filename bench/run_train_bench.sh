#!/usr/bin/env bash
# Training throughput of the full 1000-class AlexNet on the CPU, beside PyTorch in the same run.
# Alternates our bench_train and bench/torch_alexnet_bench.py for ROUNDS rounds (so machine noise hits
# both alike), then prints medians, the ratio, and the fraction of the measured SGEMM rate we reach.
# Usage: bench/run_train_bench.sh [--rounds R] [--batch B] [--threads T] [--iters I] [--norm lrn|lrn2d|batchnorm|none]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 batch=64 threads=2 iters=4 norm=lrn
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --norm) norm=$2; shift 2 ;;
    *) echo "run_train_bench.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
bench=build/bin/bench_train
[ -x "$bench" ] || { echo "run_train_bench.sh: $bench not built; run scripts/build.sh first" >&2; exit 1; }
python=${ALEXNET_TORCH_PYTHON:-/usr/bin/python3}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
value() { awk -v k="$1" '$1 == k {print $2}'; }

ours=() torch=() sgemm=0
for r in $(seq 1 "$rounds"); do
  extra=--no-sgemm
  [ "$r" = 1 ] && extra=
  out=$("$bench" --batch "$batch" --threads "$threads" --iters "$iters" --set model.norm="$norm" $extra)
  ours+=("$(value ours_img_per_s <<<"$out")")
  [ "$r" = 1 ] && sgemm=$(value sgemm_gflops <<<"$out") && gflop=$(value gflop_per_image <<<"$out")
  out=$("$python" bench/torch_alexnet_bench.py --batch "$batch" --threads "$threads" --iters "$iters" --norm "$norm")
  torch+=("$(value torch_img_per_s <<<"$out")")
  echo "round $r: ours ${ours[-1]} img/s, torch ${torch[-1]} img/s"
done
mo=$(median "${ours[@]}")
mt=$(median "${torch[@]}")
echo "batch $batch, $threads threads, norm $norm, $rounds rounds (medians)"
echo "ours_img_per_s $mo"
echo "torch_img_per_s $mt"
awk -v o="$mo" -v t="$mt" 'BEGIN {printf "ratio_vs_torch %.2f\n", o / t}'
awk -v o="$mo" -v g="$gflop" -v s="$sgemm" \
  'BEGIN {printf "ours_gflops %.1f\nsgemm_gflops %.1f\nfraction_of_sgemm %.3f\n", o * g, s, o * g / s}'
