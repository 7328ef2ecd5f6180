#!/bin/bash
# alexnet-launch starting a real job: Open MPI's mpirun, alexnet-data-service over the prepared synthetic
# dataset of the data-service tests, and the data-service tests' fake_worker in place of alexnet-worker.
# The workers check every crop against a local decode (--verify); the launcher returns the job's status.
# Usage: test_launch_job.sh ALEXNET_LAUNCH ALEXNET_DATA_SERVICE FAKE_WORKER DATASET WORKDIR
set -euo pipefail
launch=$1 service=$2 fake=$3 ds=$4 work=$5
fail() { echo "FAIL: $*" >&2; exit 1; }
rm -rf "$work" && mkdir -p "$work/bin" "$work/out"
ln -s "$service" "$work/bin/alexnet-data-service"
cat > "$work/bin/alexnet-worker" <<FAKE
#!/bin/sh
exec "$fake" "\$@" --verify --epochs 1 --out "$work/out"
FAKE
chmod +x "$work/bin/alexnet-worker"
args=(--set data.root="$ds" --set train.batch_size=16 --set checkpoint.dir="$work/ckpt" --bin-dir "$work/bin")

rc=0
timeout 120 "$launch" "${args[@]}" --workers 2 >"$work/log" 2>&1 || rc=$?
[ "$rc" -eq 0 ] || { cat "$work/log"; fail "the job ended with status $rc"; }
for w in 0 1; do
  [ -s "$work/out/worker$w.txt" ] || { cat "$work/log"; fail "worker $w received nothing"; }
done
grep -q 'data service 0 (rank 0, host [^)]*) serves worker 0 (rank 1), worker 1 (rank 2)' "$work/log" ||
  { cat "$work/log"; fail "the service is not rank 0 serving workers at ranks 1 and 2"; }

# A failing job's status comes back through the launcher (fake_worker rejects an unknown option).
cat > "$work/bin/alexnet-worker" <<FAKE
#!/bin/sh
exec "$fake" "\$@" --no-such-option
FAKE
rc=0
timeout 120 "$launch" "${args[@]}" --workers 2 >"$work/log2" 2>&1 || rc=$?
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then cat "$work/log2"; fail "a failing job gave status $rc"; fi
# SIGTERM to the launcher reaches every rank as SIGUSR1 while the job runs. The data service ignores it
# and serves on; these workers ignore it too (the trap survives exec), so the job still ends with 0. The
# TERM comes twice, 0.1 s apart, as timeout(1) or a shell may deliver one stop (to the process, then to
# its group): the repeat must not become the hard stop a second request means.
cat > "$work/bin/alexnet-worker" <<FAKE
#!/bin/sh
trap '' USR1
exec "$fake" "\$@" --epochs 300 --steps 1 --out "$work/out"
FAKE
rm -f "$work/out"/*
timeout 120 "$launch" "${args[@]}" --workers 2 >"$work/log3" 2>&1 &
pid=$!
# The service logs the job layout once every rank has started and set up its signals.
for _ in $(seq 600); do
  grep -q 'job layout:' "$work/log3" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
grep -q 'job layout:' "$work/log3" || { cat "$work/log3"; fail "the job did not start"; }
launcher_pid=$(pgrep -P "$pid")
[ -n "$launcher_pid" ] || { cat "$work/log3"; fail "no launcher process under timeout"; }
kill -TERM "$launcher_pid"
sleep 0.1
kill -TERM "$launcher_pid"
rc=0
wait "$pid" || rc=$?
grep -q 'Forwarding signal 10' "$work/log3" || { cat "$work/log3"; fail "mpirun did not get SIGUSR1"; }
[ "$rc" -eq 0 ] || { cat "$work/log3"; fail "status $rc after SIGUSR1: a rank did not survive it"; }
grep -q 'fake_worker 0: 300 batches' "$work/log3" || { cat "$work/log3"; fail "worker 0 did not finish"; }
echo "launch job: ok"
