#!/bin/bash
# alexnet-worker jobs under mpirun beside one alexnet-data-service (MPMD), over a small synthesized and
# prepared dataset (case setup): a short run's outputs, 1/2/4-rank invariance of the weights, a bit-exact
# resume, the stop signal (exit 75) and its resume, the fallback past a damaged newest checkpoint, a killed
# worker ending the job, a stopped (stuck) worker ending it after parallel.comm_timeout_s, a resume refused
# for a different model, and pre-flight config errors of alexnet-launch. Every job runs under `timeout`, so a hang fails the test instead of stalling CI.
# Usage: test_worker_mpi.sh CASE ALEXNET_WORKER ALEXNET_DATA_SERVICE ALEXNET_TOOL ALEXNET_LAUNCH WORKDIR
set -euo pipefail
case_name=$1 worker=$2 service=$3 tool=$4 launch=$5 work=$6
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
ds=$work/dataset
dir=$work/$case_name
rm -rf "$dir" && mkdir -p "$dir"
# A Python with h5py and numpy (the checkpoint checks): the first on PATH that has them, else the system's.
py=python3
for c in python3 /usr/bin/python3; do if "$c" -c 'import h5py, numpy' 2>/dev/null; then py=$c; break; fi; done
fail() { echo "FAIL ($case_name): $*" >&2; exit 1; }
show_fail() { cat "$1" >&2; shift; fail "$@"; }

# The smallest network input (67) and a global batch of 16: 20 steps per epoch over 320 images.
printf 'model:\n  num_classes: 10\n' >"$dir/config.yaml"
common=(--config "$dir/config.yaml" --set data.root="$ds" --set model.num_classes=10 --set model.input_size=67 --set train.batch_size=16
        --set train.lr=0.001 --set log.every_steps=1 --set train.seed=7)
# job WORKERS LOG ARGS...: one service and WORKERS workers, ARGS to both, the array wflags to the workers
# only; returns the job's status (124: a hang).
wflags=()
job() {
  local n=$1 log=$2
  shift 2
  local rc=0
  timeout 120 mpirun --oversubscribe --bind-to none -np 1 "$service" "${common[@]}" "$@" : \
    -np "$n" -x OMP_NUM_THREADS=1 "$worker" "${common[@]}" "$@" ${wflags[@]+"${wflags[@]}"} >"$log" 2>&1 || rc=$?
  [ "$rc" -ne 124 ] || show_fail "$log" "the job hung (killed by timeout)"
  return "$rc"
}
ok_job() { local log=$2; job "$@" || show_fail "$log" "the job ended with status $?"; }
# Waits (up to 60 s) until the run directory's metrics.jsonl holds a training record.
wait_for_progress() {
  local metrics=$1/metrics.jsonl
  for _ in $(seq 600); do
    if [ -f "$metrics" ] && grep -q '"kind": "train"' "$metrics"; then return 0; fi
    sleep 0.1
  done
  return 1
}
train_step() { "$py" -c 'import h5py,sys; print(int(h5py.File(sys.argv[1],"r")["/train/step"][()].reshape(-1)[0]))' "$1"; }
latest() { echo "$1/checkpoints/$(cat "$1/checkpoints/latest")"; }

case $case_name in
  setup)
    rm -rf "$ds"
    "$tool" synth --out "$ds" --classes 10 --train-per-class 32 --val-per-class 8 --seed 1
    "$tool" prepare --data "$ds"
    ;;

  train_2)
    ok_job 2 "$dir/log" --set train.max_steps=4 --set run.dir="$dir/run"
    m=$dir/run/metrics.jsonl
    [ "$(grep -c '"kind": "train"' "$m")" -ge 4 ] || show_fail "$m" "fewer than 4 training records"
    grep -q '"kind": "eval"' "$m" || show_fail "$m" "no evaluation record"
    ck=$(latest "$dir/run")
    [ -f "$ck" ] || fail "no checkpoint named by the latest marker"
    h5ls -r "$ck" >"$dir/h5ls"
    for g in /model /optimizer/momentum /train /model/conv1/weight /train/step; do
      grep -q "^$g " "$dir/h5ls" || show_fail "$dir/h5ls" "$g missing from $ck"
    done
    [ "$(train_step "$ck")" -eq 4 ] || fail "/train/step of the final checkpoint is not 4"
    for f in worker.log config.yaml; do [ -s "$dir/run/$f" ] || fail "run directory lacks $f"; done
    ;;

  batchnorm)
    # Batch norm on 2 ranks: the running statistics are averaged across ranks each step on the towers'
    # own buffers; they end finite and moved from their initial 0 / 1, and the run evaluates.
    ok_job 2 "$dir/log" --set train.max_steps=3 --set model.norm=batchnorm --set run.dir="$dir/run"
    grep -q '"kind": "eval"' "$dir/run/metrics.jsonl" || show_fail "$dir/run/metrics.jsonl" "no evaluation record"
    "$py" - "$(latest "$dir/run")" <<'PY'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
for layer in ("norm1", "norm2"):
    m, v = f[f"/model/{layer}/running_mean"][()], f[f"/model/{layer}/running_var"][()]
    assert np.all(np.isfinite(m)) and np.all(np.isfinite(v)), f"{layer}: non-finite running statistics"
    assert np.any(m != 0) and np.any(v != 1), f"{layer}: running statistics still at their initial values"
    assert np.all(v > 0), f"{layer}: a running variance is not positive"
print("batch-norm running statistics finite and updated")
PY
    ;;

  invariance)
    # The same global batch and seed on 1, 2 and 4 ranks give the same weights up to float reduction order.
    for n in 1 2 4; do
      ok_job "$n" "$dir/log$n" --set train.max_steps=3 --set run.dir="$dir/run$n"
    done
    "$py" - "$(latest "$dir/run1")" "$(latest "$dir/run2")" "$(latest "$dir/run4")" <<'PY'
import sys, h5py, numpy as np
files = [h5py.File(p, "r") for p in sys.argv[1:]]
ref = files[0]
names = []
ref["/model"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
assert len(names) >= 16, names
worst = 0.0
for f, n in zip(files[1:], (2, 4)):
    assert int(f["/train/step"][()].reshape(-1)[0]) == 3
    for name in names:
        a, b = ref["/model/" + name][()].astype(np.float64), f["/model/" + name][()].astype(np.float64)
        scale = max(np.abs(a).max(), 1e-30)
        rel = np.abs(a - b).max() / scale
        worst = max(worst, rel)
        assert rel < 1e-4, f"{n} ranks: /model/{name} differs by {rel:.3g} of its largest value"
print(f"largest difference of 2 and 4 ranks from 1 rank: {worst:.3g} of the tensor's largest value")
# Training happened: biases start at exactly 0 (conv1, conv3, fc8) and the momentum is not zero.
for name in ("conv1/bias", "fc8/bias"):
    assert np.any(ref["/model/" + name][()] != 0), f"/model/{name} is still at its initial value"
assert any(np.any(ref["/optimizer/momentum/" + n][()] != 0) for n in names), "momentum all zero"
PY
    ;;

  resume_exact)
    # Six steps at once against three steps, a checkpoint, and three more after --resume auto: the final
    # checkpoints are identical (h5diff finds nothing). 20 steps make an epoch, so no epoch ends between.
    ok_job 2 "$dir/logA" --set train.max_steps=6 --set run.dir="$dir/run"
    cp "$(latest "$dir/run")" "$dir/a.h5"
    rm -rf "$dir/run"
    ok_job 2 "$dir/logB1" --set train.max_steps=3 --set run.dir="$dir/run"
    [ "$(train_step "$(latest "$dir/run")")" -eq 3 ] || fail "the first half did not stop at step 3"
    wflags=(--resume auto)
    ok_job 2 "$dir/logB2" --set train.max_steps=6 --set run.dir="$dir/run"
    grep -q "resuming from $dir/run/checkpoints/step-00000003.h5" "$dir/logB2" ||
      show_fail "$dir/logB2" "no resume from step 3"
    b=$(latest "$dir/run")
    h5diff "$dir/a.h5" "$b" >"$dir/h5diff" 2>&1 || show_fail "$dir/h5diff" "the resumed run differs"
    [ ! -s "$dir/h5diff" ] || show_fail "$dir/h5diff" "h5diff reports differences"
    ;;

  signal)
    # SIGTERM to alexnet-launch reaches the workers as SIGUSR1: checkpoint at the next step, exit 75.
    run=$dir/run
    args=("${common[@]}" --set train.max_steps=400 --set run.dir="$run")
    rc=0
    "$launch" --workers 2 --bin-dir "$(dirname "$worker")" "${args[@]}" >"$dir/log" 2>&1 &
    pid=$!
    wait_for_progress "$run" || { kill -KILL "$pid" 2>/dev/null; show_fail "$dir/log" "no progress within 60 s"; }
    kill -TERM "$pid"
    for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; show_fail "$dir/log" "the job did not stop within 60 s"; fi
    wait "$pid" || rc=$?
    [ "$rc" -eq 75 ] || show_fail "$dir/log" "the stopped job ended with status $rc, not 75"
    ck=$(latest "$run")
    s=$(train_step "$ck")
    [ "$s" -ge 1 ] && [ "$s" -lt 400 ] || fail "the stop checkpoint is at step $s"
    echo "stopped at step $s"
    # It continues to the end (a shorter run: max_steps is not part of the model).
    end=$((s + 2))
    wflags=(--resume auto)
    ok_job 2 "$dir/log2" --set train.max_steps=$end --set run.dir="$run"
    grep -q "resuming from $ck" "$dir/log2" || show_fail "$dir/log2" "no resume from $ck"
    [ "$(train_step "$(latest "$run")")" -eq "$end" ] || fail "the resumed run did not reach step $end"
    ;;

  corrupt)
    # Checkpoints at steps 2 and 4; the newest is damaged (a flipped byte, then a truncation) and
    # --resume auto falls back to step 2.
    run=$dir/run
    args=(--set train.max_steps=4 --set checkpoint.every_steps=2 --set checkpoint.keep=3 --set run.dir="$run")
    ok_job 2 "$dir/log" "${args[@]}"
    c2=$run/checkpoints/step-00000002.h5 c4=$run/checkpoints/step-00000004.h5
    [ -f "$c2" ] && [ -f "$c4" ] || fail "no checkpoints at steps 2 and 4"
    "$py" - "$c4" <<'PY'
import sys, h5py
path = sys.argv[1]
with h5py.File(path, "r") as f:
    ds = f["/model/fc6/weight"]
    offset = ds.id.get_offset()
    assert offset is not None and ds.nbytes > 4096
with open(path, "r+b") as out:
    out.seek(offset + 1000)
    b = out.read(1)
    out.seek(offset + 1000)
    out.write(bytes([b[0] ^ 0x01]))
PY
    for how in flipped truncated; do
      if [ "$how" = truncated ]; then truncate -s $(($(stat -c %s "$c4") / 2)) "$c4"; fi
      wflags=(--resume auto)
      ok_job 2 "$dir/log_$how" "${args[@]}"
      grep -q "$c4 is damaged" "$dir/log_$how" || show_fail "$dir/log_$how" "$how: no warning that $c4 is damaged"
      grep -q "resuming from $c2" "$dir/log_$how" || show_fail "$dir/log_$how" "$how: no resume from $c2"
      [ "$(train_step "$c4")" -eq 4 ] || fail "$how: step 4 was not written again"
    done
    ;;

  kill | stuck)
    # One worker of a 2-worker job is disrupted mid-run: SIGKILL (kill) ends the whole job through mpirun;
    # SIGSTOP (stuck) leaves it alive but never joining the gradient allreduce, so the other worker gives
    # up after parallel.comm_timeout_s (2 s), names the key, and its MPI_Abort ends the job. Either way
    # the job ends non-zero within 15 s of the disruption.
    run=$dir/run
    sig=KILL extra=()
    if [ "$case_name" = stuck ]; then sig=STOP extra=(--set parallel.comm_timeout_s=2); fi
    rc=0
    timeout 60 mpirun --oversubscribe --bind-to none -np 1 "$service" "${common[@]}" --set run.dir="$run" : \
      -np 2 -x OMP_NUM_THREADS=1 "$worker" "${common[@]}" --set train.max_steps=400 --set run.dir="$run" \
      "${extra[@]}" >"$dir/log" 2>&1 &
    pid=$!
    wait_for_progress "$run" || { kill -KILL "$pid" 2>/dev/null; show_fail "$dir/log" "no progress within 60 s"; }
    victim=$(pgrep -f "^$worker .*run.dir=$run${extra[*]:+ ${extra[*]}}\$" | tail -1)
    [ -n "$victim" ] || fail "no worker process found"
    kill -"$sig" "$victim"
    start=$SECONDS
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$victim" 2>/dev/null || true
      kill -TERM "$pid"; wait "$pid" || true
      show_fail "$dir/log" "the job still ran 15 s after a worker got SIG$sig"
    fi
    wait "$pid" || rc=$?
    kill -KILL "$victim" 2>/dev/null || true
    echo "the job ended with status $rc $((SECONDS - start)) s after SIG$sig to a worker"
    [ "$rc" -ne 0 ] || show_fail "$dir/log" "the job succeeded"
    [ "$rc" -ne 124 ] || show_fail "$dir/log" "the job hung"
    if [ "$case_name" = kill ]; then
      grep -Eiq "rank [0-9]+.*(signal 9|killed)|killed|exited on signal|died|lost" "$dir/log" ||
        show_fail "$dir/log" "no message names the failure"
    else
      grep -q "timed out after .* (parallel.comm_timeout_s: 2) in MPI_I.* a peer rank is stuck" "$dir/log" ||
        show_fail "$dir/log" "no message names the timeout"
    fi
    ;;

  incompatible)
    run=$dir/run
    ok_job 2 "$dir/log" --set train.max_steps=1 --set run.dir="$run" --set model.norm=lrn
    rc=0
    wflags=(--resume auto)
    job 2 "$dir/log2" --set train.max_steps=2 --set run.dir="$run" --set model.norm=batchnorm || rc=$?
    [ "$rc" -ne 0 ] || show_fail "$dir/log2" "a resume with a different model.norm succeeded"
    grep -q "model.norm" "$dir/log2" || show_fail "$dir/log2" "the error does not name model.norm"
    grep -q "a resume needs the same model" "$dir/log2" || show_fail "$dir/log2" "the error does not say why"
    ;;

  bad_config)
    # alexnet-launch refuses a bad config before it starts anything: a fake mpirun first on PATH records
    # whether it ran, and no run directory appears.
    mkdir -p "$dir/bin"
    printf '#!/bin/sh\ntouch "%s/mpirun-ran"\n' "$dir" >"$dir/bin/mpirun"
    chmod +x "$dir/bin/mpirun"
    printf 'train:\n  lr: 0.01\n  no_such_key: 3\n' >"$dir/unknown.yaml"
    check() {
      local what=$1 key=$2
      shift 2
      local rc=0
      PATH="$dir/bin:$PATH" timeout 30 "$launch" --workers 2 --bin-dir "$(dirname "$worker")" \
        --set run.dir="$dir/run" "$@" >"$dir/log_$what" 2>&1 || rc=$?
      [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || show_fail "$dir/log_$what" "$what: status $rc"
      grep -q "$key" "$dir/log_$what" || show_fail "$dir/log_$what" "$what: the message does not name $key"
      [ ! -e "$dir/mpirun-ran" ] || show_fail "$dir/log_$what" "$what: mpirun ran"
      [ ! -e "$dir/run" ] || fail "$what: the run directory was created"
    }
    check lr_decay train.lr_decay --set train.lr_decay=2
    check unknown_key no_such_key --config "$dir/unknown.yaml"
    ;;

  *) fail "unknown case" ;;
esac
echo "PASS ($case_name)"
