#!/usr/bin/env bash
# alexnet-tool augment-dump over a synthesized, prepared dataset, checked by augment_dump_check.py.
# Usage: augment_dump_test.sh TOOL WORKDIR
set -euo pipefail
tool=$1 w=$2
check="$(dirname "$0")/augment_dump_check.py"
rm -rf "$w" && mkdir -p "$w"
"$tool" synth --out "$w/data" --classes 4 --train-per-class 12 --val-per-class 3 --seed 5 >/dev/null
"$tool" prepare --set data.root="$w/data" --set data.prepared="$w/prep" >/dev/null 2>&1
d=(--set data.root="$w/data" --set data.prepared="$w/prep")
"$tool" augment-dump "${d[@]}" --split train --epoch 2 --count 20 --out "$w/train.h5" --png "$w/sheet.png"
/usr/bin/python3 "$check" "$w/train.h5" "$w/prep" train 20
"$tool" augment-dump "${d[@]}" --split val --count 12 --out "$w/val.h5"
/usr/bin/python3 "$check" "$w/val.h5" "$w/prep" val 12
[ "$(head -c 4 "$w/sheet.png" | tail -c 3)" = "PNG" ] || { echo "FAIL: sheet.png is not a PNG"; exit 1; }
# Another epoch, another order and other draws; the same epoch, the same bytes.
"$tool" augment-dump "${d[@]}" --split train --epoch 3 --count 20 --out "$w/train3.h5" >/dev/null
"$tool" augment-dump "${d[@]}" --split train --epoch 2 --count 20 --out "$w/train2b.h5" >/dev/null
h5diff -q "$w/train.h5" "$w/train2b.h5" || { echo "FAIL: the same epoch dumped twice differs"; exit 1; }
if h5diff -q "$w/train.h5" "$w/train3.h5" /sample_ids /sample_ids >/dev/null; then
  echo "FAIL: epochs 2 and 3 have the same order"; exit 1
fi
expect_error() {  # expect_error PATTERN ARGS...
  local pattern=$1; shift
  if "$tool" augment-dump "${d[@]}" "$@" 2>"$w/err"; then echo "FAIL: augment-dump $* succeeded"; exit 1; fi
  grep -q -- "$pattern" "$w/err" || { echo "FAIL: no /$pattern/ in:"; cat "$w/err"; exit 1; }
}
expect_error "exceeds the 12 images" --split val --count 13 --out "$w/x.h5"
expect_error "train or val" --split test --out "$w/x.h5"
expect_error "missing required option --out" --split train
echo "augment-dump checks passed"
