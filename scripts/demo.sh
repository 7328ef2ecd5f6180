#!/usr/bin/env bash
# Sets everything up (dependencies, build) and runs the main job on its embedded default
# (configs/demo.yaml): on the CPU, without a GPU or ImageNet, it synthesizes a 10-class dataset in
# ImageNet's layout when it is missing, prepares it, and trains the paper's two-tower AlexNet with
# alexnet-launch: 1 data service and 2 worker ranks under mpirun, for a few minutes, with evaluation and
# checkpoints. Extra arguments go to alexnet-launch (e.g. --set train.epochs=3).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bin=build/bin
config=configs/demo.yaml
data=data/synth10
run="runs/demo/$(date -u +%Y%m%d-%H%M%S)"

echo "== dataset: $data (10 classes, 640 training and 200 validation images, ImageNet's layout and formats)"
# Writes nothing when the folder already holds this exact dataset.
$bin/alexnet-tool synth --out "$data" --classes 10 --train-per-class 64 --val-per-class 20 --seed 1
echo "== prepare: index, mean image, RGB covariance and its eigenvectors (PCA lighting), 256x256 shards"
$bin/alexnet-tool prepare --config "$config" --shards
echo "== train: alexnet-launch --config $config --workers 2 --data-services 1 --set run.dir=$run"
start=$(date +%s)
status=0
$bin/alexnet-launch --config "$config" --workers 2 --data-services 1 --set "run.dir=$run" "$@" || status=$?
echo "== the job ended with status $status after $(( $(date +%s) - start )) s"
if [ "$status" -ne 0 ] && [ "$status" -ne 75 ]; then exit "$status"; fi
latest="$run/checkpoints/$(cat "$run/checkpoints/latest")"
echo "== run directory: $run"
ls -l "$run" "$run/checkpoints"
echo "== the newest checkpoint: $latest"
$bin/alexnet-tool inspect "$latest" | head -n 12
cat <<MSG
== next
  metrics (one JSON record per line):   $run/metrics.jsonl
  the log of worker rank 0:             $run/worker.log
  continue this run for more epochs:    $bin/alexnet-launch --config $config --workers 2 --set run.dir=$run --set train.epochs=20 --resume auto
  evaluate a checkpoint (ten views):    $bin/alexnet-launch --config $config --workers 2 --set run.dir=$run --set data.ten_crop=true --resume $latest --eval-only
  inspect a checkpoint:                 $bin/alexnet-tool inspect $latest
MSG
exit "$status"
