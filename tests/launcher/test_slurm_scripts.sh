#!/bin/bash
# The SLURM scripts: syntax (bash -n; shellcheck when installed), and alexnet.sbatch's signal path run
# outside SLURM with a fake alexnet-launch and a fake scontrol: USR1 reaches the launcher, which exits 75
# (checkpointed on signal), and the job is requeued; another status is returned as it is, unrequeued.
# Usage: test_slurm_scripts.sh SLURM_DIR ALEXNET_LAUNCH
set -euo pipefail
slurm_dir=$1
launch=$2
fail() { echo "FAIL: $*" >&2; exit 1; }

for f in "$slurm_dir/alexnet.sbatch" "$slurm_dir/site.example.sh"; do
  bash -n "$f" || fail "bash -n $f"
done
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck -S warning -x "$slurm_dir/alexnet.sbatch" "$slurm_dir/site.example.sh" || fail "shellcheck"
else
  echo "shellcheck not installed: syntax checked with bash -n only"
fi
grep -q '^#SBATCH --signal=B:USR1@' "$slurm_dir/alexnet.sbatch" || fail "no #SBATCH --signal=B:USR1@..."
grep -q -- '--resume auto' "$slurm_dir/alexnet.sbatch" || fail "the sbatch does not pass --resume auto"
"$launch" --help | grep -q -- '--resume' || fail "alexnet-launch has no --resume option"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/fakepath"
# Fake alexnet-launch: records its arguments and USR1, says ready on a FIFO, exits with FAKE_EXIT on USR1.
cat > "$work/bin/alexnet-launch" <<FAKE
#!/bin/bash
printf '%s\n' "\$@" > "$work/launch.args"
trap 'echo USR1 >> "$work/launch.signals"; exit \${FAKE_EXIT:-75}' USR1
echo ready > "$work/ready"
while :; do sleep 5 & wait \$!; done
FAKE
cat > "$work/fakepath/scontrol" <<FAKE
#!/bin/sh
echo "\$@" >> "$work/scontrol.calls"
FAKE
chmod +x "$work/bin/alexnet-launch" "$work/fakepath/scontrol"

run_job() {  # FAKE_EXIT -> sets job_status
  rm -f "$work/ready" "$work/launch.signals" "$work/scontrol.calls"
  mkfifo "$work/ready"
  FAKE_EXIT=$1 PATH="$work/fakepath:$PATH" SLURM_JOB_ID=77 SLURM_JOB_NUM_NODES=2 SLURM_RESTART_COUNT=1 \
    SLURM_SUBMIT_DIR="$work" ALEXNET_SITE=/nonexistent ALEXNET_BIN="$work/bin" WORKERS_PER_NODE=3 \
    bash "$slurm_dir/alexnet.sbatch" --dry-run > "$work/job.out" 2>&1 &
  local pid=$!
  read -r line < "$work/ready"
  [ "$line" = ready ] || fail "fake launcher did not start"
  kill -USR1 "$pid"
  job_status=0
  wait "$pid" || job_status=$?
}

run_job 75
[ "$job_status" -eq 0 ] || fail "status $job_status after a checkpointed stop: $(cat "$work/job.out")"
[ "$(cat "$work/launch.signals")" = USR1 ] || fail "the launcher did not get USR1"
[ "$(cat "$work/scontrol.calls")" = "requeue 77" ] || fail "no 'scontrol requeue 77': $(cat "$work/job.out")"
grep -qx -- '--resume' "$work/launch.args" || fail "no --resume"
grep -qx -- '6' "$work/launch.args" || fail "--workers is not nodes x WORKERS_PER_NODE = 6"
grep -qx -- '--dry-run' "$work/launch.args" || fail "extra arguments are not passed on"

run_job 9
[ "$job_status" -eq 9 ] || fail "status $job_status, expected the launcher's 9"
[ ! -e "$work/scontrol.calls" ] || fail "requeued although the job did not checkpoint"
echo "slurm scripts: ok"
