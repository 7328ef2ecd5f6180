#!/usr/bin/env bash
# A rank of an allreduce job is killed: the job must end (non-zero) within the timeout, not hang.
# Usage: comm_kill_rank.sh TEST_COMM_MPI NP
set -uo pipefail
bin=$1 np=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
start=$SECONDS
timeout 60 mpirun --oversubscribe --bind-to none -np "$np" "$bin" --kill-rank 1 >kill_rank_$np.log 2>&1
rc=$?
echo "job with a killed rank ended with status $rc after $((SECONDS - start)) s"
# timeout exits 124 on a hang; mpirun itself passes on the killed rank's status (137).
if [ "$rc" -eq 124 ]; then cat kill_rank_$np.log; echo "FAIL: the job hung"; exit 1; fi
if [ "$rc" -eq 0 ]; then cat kill_rank_$np.log; echo "FAIL: the job reported success"; exit 1; fi
exit 0
