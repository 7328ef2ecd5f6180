#!/usr/bin/env bash
# mpirun tests of the data service. Usage: test_service_mpi.sh CASE FAKE_WORKER SERVICE TOOL WORKDIR
# loopback_* cases run services in-process over synthetic images (fake_worker --loopback-services);
# the others run alexnet-data-service over a dataset made by `alexnet-tool synth` + `prepare` (case setup).
# Every mpirun runs under `timeout`, so a hang fails the test instead of stalling CI.
set -euo pipefail
case_name=$1 fake=$2 service=$3 tool=$4 work=$5
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(timeout 60 mpirun --oversubscribe --bind-to none)
ds=$work/dataset
dir=$work/$case_name
rm -rf "$dir" && mkdir -p "$dir"
fail() { echo "FAIL ($case_name): $*" >&2; exit 1; }

# Sorted crop lines of every worker of one run: the same set whatever the number of workers or services.
union() { cat "$1"/worker*.txt | sort; }
# Runs a command expected to fail within the timeout; its output goes to $2. Fails the test on a hang.
expect_failure() {
  local what=$1 log=$2
  shift 2
  local start=$SECONDS rc=0
  "$@" >"$log" 2>&1 || rc=$?
  [ "$rc" -ne 124 ] || { cat "$log"; fail "$what: the job hung (killed by timeout after $((SECONDS - start)) s)"; }
  [ "$rc" -ne 0 ] || { cat "$log"; fail "$what: the job succeeded"; }
  echo "$what: the job ended with status $rc after $((SECONDS - start)) s"
}

loop=("${mpi[@]}")
common=(--set train.batch_size=32 --synthetic 256,40,10 --verify)
case $case_name in
  loopback_1x2)
    mkdir -p "$dir/a"
    "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" --set data.threads=2 --eval --epochs 2 --out "$dir/a"
    [ "$(grep -c '^T' "$dir/a/worker0.txt")" -eq $((2 * 8 * 16)) ] || fail "worker 0 did not get 2 epochs of 8 steps"
    ;;
  loopback_2x4)
    # The same global batches from 1 service + 2 workers and 2 services + 4 workers.
    mkdir -p "$dir/a" "$dir/b"
    "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" --eval --epochs 2 --out "$dir/a"
    "${loop[@]}" -np 6 "$fake" --loopback-services 2 "${common[@]}" --eval --epochs 2 --out "$dir/b"
    union "$dir/a" >"$dir/a.txt"
    union "$dir/b" >"$dir/b.txt"
    cmp "$dir/a.txt" "$dir/b.txt" || fail "1x2 and 2x4 runs served different crops"
    ;;
  loopback_threads)
    # Identical bytes whatever data.threads and data.prefetch.
    mkdir -p "$dir/a" "$dir/b"
    "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" --eval --set data.threads=1 --set data.prefetch=1 --out "$dir/a"
    "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" --eval --set data.threads=3 --set data.prefetch=6 --out "$dir/b"
    for w in 0 1; do cmp "$dir/a/worker$w.txt" "$dir/b/worker$w.txt" || fail "worker $w: threads changed the batches"; done
    ;;
  loopback_resume)
    # A client that starts at (epoch 1, step 3) gets exactly what the uninterrupted run got there.
    mkdir -p "$dir/a" "$dir/b"
    "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" --epochs 2 --out "$dir/a"
    "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" --start-epoch 1 --start-step 3 --epochs 1 --out "$dir/b"
    for w in 0 1; do
      tail -n +$(((8 + 3) * 16 + 1)) "$dir/a/worker$w.txt" | cmp - "$dir/b/worker$w.txt" || fail "worker $w: resume differs"
    done
    ;;
  loopback_ten_crop)
    # The paper's ten views per validation image, 37 images padded to fixed batches, each counted once.
    mkdir -p "$dir/a"
    "${loop[@]}" -np 3 "$fake" --loopback-services 1 --set train.batch_size=32 --synthetic 256,37,10 --verify \
      --eval --set data.ten_crop=true --set data.eval_batch=5 --out "$dir/a"
    [ "$(cat "$dir"/a/worker*.txt | grep -c '^E')" -eq $((37 * 10)) ] || fail "expected 370 evaluation crops"
    ;;
  loopback_bad)
    "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" --bad 3,17,200 --epochs 2 >"$dir/log" 2>&1 ||
      { cat "$dir/log"; fail "run with bad files failed"; }
    cat "$dir/log"
    grep -q "skipping bad image file train/synthetic_17.JPEG" "$dir/log" || fail "no warning naming the bad file"
    [ "$(grep -c 'skipping bad image file' "$dir/log")" -eq 3 ] || fail "each bad file must be warned about once"
    replaced=$(sed -n 's/.*; 3 bad files, \([0-9]*\) samples replaced.*/\1/p' "$dir/log")
    [ -n "$replaced" ] && [ "$replaced" -ge 6 ] || fail "statistics do not count the bad files and replacements"
    ;;
  loopback_strict)
    expect_failure "strict" "$dir/log" "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" --bad 17 \
      --set data.strict=true
    grep -q "bad image file train/synthetic_17.JPEG" "$dir/log" || { cat "$dir/log"; fail "the error does not name the file"; }
    ;;
  loopback_stall)
    # A worker alive but silent: its service gives up after data.timeout_s and names it.
    expect_failure "stall" "$dir/log" "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" \
      --set data.timeout_s=2 --epochs 50 --fail-worker 1 --fail-step 2 --fail-mode stall
    grep -q "worker 1 (rank 2, host .*) has sent nothing" "$dir/log" || { cat "$dir/log"; fail "the error does not name the worker"; }
    ;;
  loopback_service_stall)
    # A service alive but silent: its workers give up after data.timeout_s and name it.
    expect_failure "service stall" "$dir/log" "${loop[@]}" -np 3 "$fake" --loopback-services 1 "${common[@]}" \
      --set data.timeout_s=2 --stall-service
    grep -q "no answer from data service 0 (rank 0, host .*) for 2 s" "$dir/log" ||
      { cat "$dir/log"; fail "the error does not name the service"; }
    ;;
  setup)
    rm -rf "$ds"
    "$tool" synth --out "$ds" --classes 4 --train-per-class 24 --val-per-class 5 --seed 5
    "$tool" prepare --data "$ds"
    # A copy with two training files broken after prepare: the service meets them while serving.
    rm -rf "$work/dataset_bad"
    "$tool" synth --out "$work/dataset_bad" --classes 4 --train-per-class 24 --val-per-class 5 --seed 5
    "$tool" prepare --data "$work/dataset_bad"
    mapfile -t files < <(find "$work/dataset_bad/train" -type f | sort | sed -n '5p;40p')
    for f in "${files[@]}"; do head -c 200 "$f" >"$f.tmp" && mv "$f.tmp" "$f"; done
    printf '%s\n' "${files[@]#"$work/dataset_bad/"}" >"$work/dataset_bad.broken"
    ;;
  real_1x2 | real_2x4)
    # Through alexnet-data-service; the crops must equal a local decode (--verify) and be the same set
    # for 1 service + 2 workers as for 2 services + 4 workers.
    set_=(--set data.root="$ds" --set train.batch_size=16)
    mkdir -p "$dir/a" "$dir/b"
    "${mpi[@]}" -np 1 "$service" "${set_[@]}" : -np 2 "$fake" "${set_[@]}" --verify --eval --epochs 2 --out "$dir/a"
    if [ "$case_name" = real_2x4 ]; then
      "${mpi[@]}" -np 2 "$service" "${set_[@]}" --set data.threads=1 : -np 4 "$fake" "${set_[@]}" --eval --epochs 2 \
        --out "$dir/b"
      union "$dir/a" >"$dir/a.txt"
      union "$dir/b" >"$dir/b.txt"
      cmp "$dir/a.txt" "$dir/b.txt" || fail "1x2 and 2x4 runs served different crops"
    fi
    ;;
  real_bad)
    bad=$work/dataset_bad
    set_=(--set data.root="$bad" --set train.batch_size=16)
    "${mpi[@]}" -np 1 "$service" "${set_[@]}" : -np 2 "$fake" "${set_[@]}" --verify --epochs 1 >"$dir/log" 2>&1 ||
      { cat "$dir/log"; fail "run with bad files failed"; }
    cat "$dir/log"
    while read -r f; do grep -q "skipping bad image file .*$f" "$dir/log" || fail "no warning naming $f"; done <"$bad.broken"
    grep -q "; 2 bad files" "$dir/log" || fail "statistics do not count the bad files"
    expect_failure "strict" "$dir/strict.log" "${mpi[@]}" -np 1 "$service" "${set_[@]}" --set data.strict=true : \
      -np 2 "$fake" "${set_[@]}" --set data.strict=true --epochs 1
    grep -qE "bad image file .*($(paste -sd'|' "$bad.broken"))" "$dir/strict.log" ||
      { cat "$dir/strict.log"; fail "the strict error does not name the file"; }
    ;;
  kill_worker)
    set_=(--set data.root="$ds" --set train.batch_size=16)
    expect_failure "worker killed" "$dir/log" "${mpi[@]}" -np 1 "$service" "${set_[@]}" : -np 2 "$fake" "${set_[@]}" \
      --epochs 1000 --fail-worker 1 --fail-step 2 --fail-mode kill
    cat "$dir/log"
    grep -q "rank 2 .*signal 9" "$dir/log" || fail "the message does not name the killed rank"
    grep -q "worker 1 (rank 2)" "$dir/log" || fail "the job layout line does not say rank 2 is worker 1"
    ;;
  kill_service)
    set_=(--set data.root="$ds" --set train.batch_size=16)
    start=$SECONDS rc=0
    "${mpi[@]}" -np 1 "$service" "${set_[@]}" : -np 2 "$fake" "${set_[@]}" --epochs 100000 >"$dir/log" 2>&1 &
    job=$!
    # Wait (bounded) until the service has started serving, then kill it.
    for _ in $(seq 200); do grep -q "data service 0 (pid" "$dir/log" && break; sleep 0.1; done
    pid=$(sed -n 's/.*data service 0 (pid \([0-9]*\)).*/\1/p' "$dir/log" | head -1)
    [ -n "$pid" ] || { kill "$job"; cat "$dir/log"; fail "the service never started"; }
    kill -9 "$pid"
    wait "$job" || rc=$?
    cat "$dir/log"
    [ "$rc" -ne 124 ] || fail "the job hung after the service died"
    [ "$rc" -ne 0 ] || fail "the job succeeded without its service"
    grep -q "rank 0 .*signal 9" "$dir/log" || fail "the message does not name the killed rank"
    echo "service killed: the job ended with status $rc after $((SECONDS - start)) s"
    ;;
  *) fail "unknown case" ;;
esac
echo "OK $case_name"
