#!/usr/bin/env bash
# End-to-end checks of alexnet-tool as a user types it: init, inspect, random-batch, grad, step on a
# small config, and the errors that bad input must give (naming the problem, leaving outputs intact).
# Usage: test_tool_cli.sh TOOL WORKDIR
set -uo pipefail
tool=$1
work=$2
rm -rf "$work" && mkdir -p "$work"
cd "$work"
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# expect_ok DESCRIPTION -- command...
expect_ok() {
  local what=$1; shift
  if ! "$@" >out.txt 2>err.txt; then fail "$what: exit $?"; cat out.txt err.txt; fi
}
# expect_error DESCRIPTION PATTERN -- command...: must fail with PATTERN (grep -E) in stderr.
expect_error() {
  local what=$1 pattern=$2; shift 2
  if "$@" >out.txt 2>err.txt; then fail "$what: succeeded but must fail"; return; fi
  grep -Eq -- "$pattern" err.txt || { fail "$what: stderr lacks /$pattern/"; cat err.txt; }
}
expect_in() {  # expect_in DESCRIPTION PATTERN FILE
  grep -Eq -- "$2" "$3" || { fail "$1: /$2/ not in $3"; cat "$3"; }
}

cat >small.yaml <<'YAML'
model:
  num_classes: 10
  norm: lrn
  lrn: {n: 4}
YAML

# --- the happy path ---
expect_ok "init" "$tool" init --config small.yaml --out w0.h5 --seed 3
expect_in "init reports the parameter count" "parameters" out.txt
expect_ok "inspect" "$tool" inspect w0.h5
expect_in "inspect shows the count for 10 classes" "trainable parameters: 56909194" out.txt
expect_in "inspect shows conv1's split weights" "conv1" out.txt
expect_ok "random-batch" "$tool" random-batch --config small.yaml --size 4 --seed 5 --out b.h5
expect_ok "grad" "$tool" grad --checkpoint w0.h5 --batch b.h5 --out g.h5
expect_ok "step 1" "$tool" step --checkpoint w0.h5 --batch b.h5 --lr 0.01 --out w1.h5
expect_ok "step 2 (momentum from w1)" "$tool" step --checkpoint w1.h5 --batch b.h5 --lr 0.01 --out w2.h5
expect_ok "inspect stepped" "$tool" inspect w2.h5
expect_in "stepped checkpoint has momentum" "momentum" out.txt
expect_ok "--set override" "$tool" init --config small.yaml --set model.activation=tanh --out wt.h5
expect_ok "inspect tanh" "$tool" inspect wt.h5
expect_in "override reached the checkpoint's config" "tanh" out.txt
expect_ok "help" "$tool" step --help
expect_in "help names the command" "alexnet-tool step --checkpoint" out.txt

# Same seed, same weights: init is deterministic.
expect_ok "init again" "$tool" init --config small.yaml --out w0b.h5 --seed 3
if command -v h5diff >/dev/null; then
  h5diff -q w0.h5 w0b.h5 /model /model >/dev/null || fail "init with the same seed differs"
fi

# --- bad input: clear errors, nothing lost ---
printf 'model:\n  num_classes: 10\n  nrom: lrn\n' >typo.yaml
expect_error "unknown key" "model\.nrom.*line 3|line 3.*model\.nrom" "$tool" init --config typo.yaml --out x.h5
printf 'model:\n  num_classes: ten\n' >type.yaml
expect_error "wrong type" "model\.num_classes.*line 2|line 2.*model\.num_classes" "$tool" init --config type.yaml --out x.h5
expect_error "bad --set value" "model\.norm" "$tool" init --config small.yaml --set model.norm=lrm --out x.h5
expect_error "unknown --set key" "model\.colour" "$tool" init --config small.yaml --set model.colour=1 --out x.h5
expect_error "missing config file" "nope\.yaml" "$tool" init --config nope.yaml --out x.h5
[ -e x.h5 ] && fail "a failed init left x.h5 behind"
expect_error "unknown option" "--outt" "$tool" init --config small.yaml --outt x.h5
expect_error "missing --out" "--out" "$tool" grad --checkpoint w0.h5 --batch b.h5
expect_error "missing checkpoint" "missing\.h5" "$tool" grad --checkpoint missing.h5 --batch b.h5 --out g2.h5
echo "not hdf5" >junk.h5
expect_error "not a checkpoint" "junk\.h5" "$tool" inspect junk.h5
expect_error "unknown command" "frobnicate" "$tool" frobnicate
# A batch made for another input size or class count is refused by name.
expect_ok "random-batch 1000 classes" "$tool" random-batch --size 2 --seed 1 --out b1000.h5
expect_error "labels out of range" "label" "$tool" grad --checkpoint w0.h5 --batch b1000.h5 --out g3.h5
expect_ok "random-batch other size" "$tool" random-batch --config small.yaml --set model.input_size=195 --size 2 --out b195.h5
expect_error "image size mismatch" "images|227|195" "$tool" grad --checkpoint w0.h5 --batch b195.h5 --out g4.h5
# A failed step does not touch an existing output.
cp w1.h5 keep.h5
expect_error "bad lr" "--lr|lr" "$tool" step --checkpoint w0.h5 --batch b.h5 --lr abc --out keep.h5
cmp -s w1.h5 keep.h5 || fail "a failed step changed its --out file"
expect_error "output folder missing" "no_such_dir/g\.h5" "$tool" grad --checkpoint w0.h5 --batch b.h5 --out no_such_dir/g.h5
ls ./*.tmp >/dev/null 2>&1 && fail "a failed write left a .tmp file behind"
expect_error "cuda without a GPU build or device" "cuda|CUDA|GPU" "$tool" grad --checkpoint w0.h5 --batch b.h5 --out g5.h5 --device cuda

if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all alexnet-tool CLI checks passed"
