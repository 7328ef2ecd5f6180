#!/usr/bin/env bash
# Step time of the real job: alexnet-worker training the full 1000-class, 227x227 AlexNet beside one
# alexnet-data-service, on 1, 2 and 4 worker ranks, with its compute / data-wait / exposed-communication split
# and the hidden share of the allreduce, for three gradient modes:
#   overlap    buckets of parallel.bucket_mb (default 25) started during backward (the default),
#   buckets    the same buckets started after backward (parallel.overlap=false),
#   one-call   one bucket per tower after backward (parallel.bucket_mb 0, parallel.overlap=false).
# Weak scaling: the per-rank batch is fixed (--per-rank, default 16: 4 ranks = global batch 64), so each rank
# does the same work at every rank count and only the gradient averaging (and the sharing of cores) changes.
# Threads per worker: max(1, cores / ranks). Each run does --steps steps logged every --every steps; the first
# interval (warm-up) is discarded, the rest averaged. Rounds alternate over every configuration (so machine
# noise hits all alike); the table holds the medians over rounds. One rank has nothing to reduce, so it runs
# the default mode only.
# Usage: bench/run_worker_bench.sh [--rounds R] [--per-rank B] [--steps N] [--every E] [--bucket_mb M]
#                                  [--ranks "1 2 4"] [--out FILE.md]
#   ALEXNET_BIN: folder of alexnet-worker, alexnet-data-service, alexnet-tool (default build/bin)
#   ALEXNET_BENCH_DATA: a prepared dataset to use (default: a synthetic one, made in a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=3 per_rank=16 steps=6 every=2 bucket_mb=25 ranks="1 2 4" out=bench/results/worker_bench.md
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --per-rank) per_rank=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --every) every=$2; shift 2 ;;
    --bucket_mb) bucket_mb=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "run_worker_bench.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ "$steps" -ge $((2 * every)) ] || { echo "run_worker_bench.sh: --steps must be at least 2 x --every (the first interval is discarded)" >&2; exit 2; }
bin=${ALEXNET_BIN:-build/bin}
for exe in alexnet-worker alexnet-data-service alexnet-tool; do
  [ -x "$bin/$exe" ] || { echo "run_worker_bench.sh: $bin/$exe not built; run scripts/build.sh first (or set ALEXNET_BIN)" >&2; exit 1; }
done
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
cores=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

data=${ALEXNET_BENCH_DATA:-}
if [ -z "$data" ]; then
  data=$tmp/data
  "$bin/alexnet-tool" synth --out "$data" --classes 10 --train-per-class 64 --val-per-class 4 --seed 1 >/dev/null
  "$bin/alexnet-tool" prepare --set data.root="$data" --shards >/dev/null
fi

# One run; prints "step compute wait exposed inflight hidden img_per_s" over the train records after the first.
run_one() {
  local np=$1 mode=$2 dir=$tmp/run-$1-$2 extra=() mb=$bucket_mb
  local threads=$((cores / np)); [ "$threads" -ge 1 ] || threads=1
  case $mode in
    overlap) ;;
    buckets) extra=(--set parallel.overlap=false) ;;
    one-call) extra=(--set parallel.overlap=false); mb=0 ;;
  esac
  rm -rf "$dir"
  local set=(--set data.root="$data" --set model.num_classes=1000 --set model.input_size=227
             --set train.batch_size=$((per_rank * np)) --set train.max_steps="$steps" --set log.every_steps="$every"
             --set run.dir="$dir" --set parallel.bucket_mb="$mb" --set data.threads=1)
  if ! timeout 600 mpirun --oversubscribe --bind-to none -np 1 "$bin/alexnet-data-service" "${set[@]}" \
      : -np "$np" -x OMP_NUM_THREADS="$threads" "$bin/alexnet-worker" "${set[@]}" "${extra[@]}" >"$tmp/log" 2>&1; then
    echo "run_worker_bench.sh: $np rank(s), $mode failed:" >&2; tail -20 "$tmp/log" >&2; exit 1
  fi
  python3 - "$dir/metrics.jsonl" "$((per_rank * np))" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [r for r in recs if r.get("kind") == "train"][1:]  # the first interval holds the warm-up
if not train:
    sys.exit("no train records after the first interval in " + sys.argv[1])
n = len(train)
mean = lambda k: sum(r[k] for r in train) / n
step, infl, exp = mean("step_s"), mean("comm_in_flight_s"), mean("exposed_comm_s")
hidden = max(0.0, 1 - exp / infl) if infl > 0 else 0.0
print(step, mean("compute_s"), mean("data_wait_s"), exp, infl, hidden, int(sys.argv[2]) / step)
PY
}

results=$tmp/results.tsv
: >"$results"
start=$(date +%s)
for r in $(seq 1 "$rounds"); do
  for np in $ranks; do
    modes="overlap buckets one-call"
    [ "$np" = 1 ] && modes=overlap
    for mode in $modes; do
      line=$(run_one "$np" "$mode")
      echo "$r $np $mode $line" >>"$results"
      echo "round $r: $np rank(s) $mode: $line" >&2
    done
  done
done
wall=$(($(date +%s) - start))

mkdir -p "$(dirname "$out")"
python3 - "$results" "$out" "$rounds" "$per_rank" "$cores" "$wall" "$bucket_mb" "$steps" "$every" <<'PY'
import statistics, sys
path, out, rounds, per_rank, cores, wall, mb, steps, every = sys.argv[1:]
rows = {}
for line in open(path):
    r, np, mode, *v = line.split()
    rows.setdefault((int(np), mode), []).append([float(x) for x in v])
names = {"overlap": f"buckets ({mb} MiB) overlapped", "buckets": f"buckets ({mb} MiB) after backward",
         "one-call": "one bucket after backward"}
order = ["overlap", "buckets", "one-call"]
head = ["ranks", "mode", "global batch", "step s", "compute s", "data wait s", "exposed comm s",
        "comm in flight s", "hidden %", "img/s", "step vs 1 rank"]
table = []
base = None
for (np, mode) in sorted(rows, key=lambda k: (k[0], order.index(k[1]))):
    med = [statistics.median(c) for c in zip(*rows[(np, mode)])]
    step, comp, wait, exp, infl, hid, img = med
    if np == 1 and base is None:
        base = step
    one = np == 1  # nothing to reduce: in-flight time and hidden share carry no meaning
    table.append([str(np), "any (nothing to reduce)" if one else names[mode], str(int(per_rank) * np),
                  f"{step:.3f}", f"{comp:.3f}", f"{wait:.3f}", f"{exp:.3f}",
                  "—" if one else f"{infl:.3f}", "—" if one else f"{100 * hid:.0f}", f"{img:.1f}",
                  f"{step / base:.2f}" if base else "—"])
md = [f"Per-rank batch {per_rank} (weak scaling), {cores} cores, OMP_NUM_THREADS = max(1, {cores} / ranks), "
      f"{steps} steps logged every {every} (first interval discarded), medians of {rounds} rounds; "
      f"benchmark wall time {wall} s.", "",
      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
md += ["| " + " | ".join(row) + " |" for row in table]
md += ["", "Seconds per step on worker rank 0. exposed comm: time in GradBuckets::wait_all, summed over the two "
       "towers; comm in flight: from the first reduction's start to the last one's completion over both towers; hidden = 1 - exposed / "
       "in flight (0 after backward by construction); img/s: global batch / step."]
open(out, "w").write("\n".join(md) + "\n")
w = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
print(md[0])
print("  ".join(h.rjust(w[i]) for i, h in enumerate(head)))
for row in table:
    print("  ".join(c.rjust(w[i]) for i, c in enumerate(row)))
print(f"markdown: {out}")
PY
