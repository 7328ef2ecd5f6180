#!/usr/bin/env bash
# Sets everything up (dependencies, build) and runs the main job on its embedded default: the
# paper's 1000-class two-tower AlexNet on the CPU, initialised as in the paper, trained for a few
# SGD steps on a generated batch, then inspected. No GPU and no ImageNet needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
out=runs/demo
mkdir -p "$out"
tool=build/bin/alexnet-tool
$tool init --config configs/alexnet.yaml --out "$out/step0.h5"
$tool random-batch --config configs/alexnet.yaml --size 16 --seed 7 --out "$out/batch.h5"
for i in 1 2 3; do
  $tool step --checkpoint "$out/step$((i - 1)).h5" --batch "$out/batch.h5" --lr 0.01 --out "$out/step$i.h5"
done
$tool grad --checkpoint "$out/step3.h5" --batch "$out/batch.h5" --out "$out/grad3.h5"
$tool inspect "$out/step3.h5"
$tool norm-examples
