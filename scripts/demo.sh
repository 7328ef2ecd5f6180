#!/usr/bin/env bash
# Sets everything up (dependencies, build) and runs the main job on its embedded default, on the CPU with
# a generated dataset (no GPU, no ImageNet): synthesize an ImageNet-layout dataset, prepare it (index,
# mean image, PCA lighting statistics, shards), dump the samples the data service would send with a
# contact sheet, then take SGD steps of the paper's 1000-class two-tower AlexNet on them and inspect
# the checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=runs/demo
mkdir -p "$out"
tool=build/bin/alexnet-tool
data="$out/data"
set_data=(--set "data.root=$data" --set "data.prepared=$out/prepared")

echo "== synthesize a 10-class dataset in ImageNet's layout"
$tool synth --out "$data" --classes 10 --train-per-class 32 --val-per-class 8 --seed 1
echo "== prepare: index, mean image, RGB covariance and its eigenvectors, pre-resized shards"
$tool prepare --config configs/alexnet.yaml "${set_data[@]}" --shards
echo "== augment-dump: the first 16 training samples of epoch 0, as the service sends them"
$tool augment-dump --config configs/alexnet.yaml "${set_data[@]}" --split train --epoch 0 --count 16 \
  --out "$out/augment.h5" --png "$out/augment.png"
echo "== model: paper init, 3 SGD steps of the paper's rule on those samples (the loss falls), gradients, inspect"
$tool init --config configs/alexnet.yaml --out "$out/step0.h5"
# One small batch taken again and again: the learning rate is a tenth of the paper's 0.01 (batch 128).
for i in 1 2 3; do
  $tool step --checkpoint "$out/step$((i - 1)).h5" --batch "$out/augment.h5" --lr 0.001 --out "$out/step$i.h5"
done
$tool grad --checkpoint "$out/step3.h5" --batch "$out/augment.h5" --out "$out/grad3.h5"
$tool inspect "$out/step3.h5"
echo "== LRN and batch norm on the worked examples"
$tool norm-examples
