#!/usr/bin/env bash
# Input-pipeline img/s on one core: our decode + training transform (bench_pipeline) beside PIL + NumPy
# (bench/pil_pipeline.py) on the same generated JPEGs, alternating for ROUNDS rounds; prints medians and the
# ratios ours/PIL (per core) and ours-full/ours-decode-only.
# Usage: bench/run_pipeline_bench.sh [--build DIR] [--rounds R] [--seconds S] [--cpu N] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build rounds=5 seconds=1.5 cpu=0 keep=
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "run_pipeline_bench.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
bench=$build/bin/bench_pipeline
[ -x "$bench" ] || { echo "run_pipeline_bench.sh: $bench not built (cmake --build $build --target bench_pipeline)" >&2; exit 1; }
python=${ALEXNET_PIL_PYTHON:-/usr/bin/python3}
"$python" -c "import PIL, numpy" 2>/dev/null || { echo "run_pipeline_bench.sh: $python lacks PIL or NumPy" >&2; exit 1; }

if [ -n "$keep" ]; then dir=$keep; mkdir -p "$dir"; else dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; fi
[ -d "$dir/jpeg420" ] || "$bench" --generate "$dir"

# Both pinned to the same core, one thread each: the service decodes one image per thread.
pin="taskset -c $cpu"
command -v taskset >/dev/null || pin=
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
results=$(mktemp)
for r in $(seq 1 "$rounds"); do
  $pin "$bench" --dir "$dir" --seconds "$seconds" | sed "s/^/ours /" >>"$results"
  $pin "$python" bench/pil_pipeline.py --dir "$dir" --seconds "$seconds" | sed "s/^/pil /" >>"$results"
  echo "round $r/$rounds done" >&2
done

"$python" - "$results" "$rounds" <<'EOF'
import statistics
import sys
from collections import defaultdict

values = defaultdict(list)
for line in open(sys.argv[1]):
    who, kind, *rest = line.split()
    if kind in ("RESULT", "STAGE"):
        values[(who, kind, rest[0], rest[1])].append(float(rest[2]))
med = {k: statistics.median(v) for k, v in values.items()}
names = {"jpeg420": "500x375-ish q90 4:2:0", "jpeg444": "500x375-ish q96 4:4:4", "prepared": "prepared 256x256 q95 4:4:4"}
print("img/s on one core, medians of %s rounds" % sys.argv[2])
print("%-28s %10s %10s %10s %10s %9s %11s" % ("set", "ours dec", "ours full", "PIL dec", "PIL full",
                                              "ours/PIL", "full/dec"))
for s, title in names.items():
    od, of = med[("ours", "RESULT", s, "decode")], med[("ours", "RESULT", s, "full")]
    pd, pf = med[("pil", "RESULT", s, "decode")], med[("pil", "RESULT", s, "full")]
    print("%-28s %10.0f %10.0f %10.0f %10.0f %8.2fx %11.2f" % (title, od, of, pd, pf, of / pf, of / od))
print("targets: ours/PIL >= 2x per core, ours full/decode-only >= 0.6")
print("where our time goes (ms per image):")
for s, title in names.items():
    dec = 1000 / med[("ours", "RESULT", s, "decode")]
    parts = ["decode %.3f" % dec]
    if ("ours", "STAGE", s, "rescale") in med:
        parts.append("rescale %.3f" % (1000 / med[("ours", "STAGE", s, "rescale")]))
    parts.append("crop+flip+lighting+normalise %.3f" % (1000 / med[("ours", "STAGE", s, "crop_flip_lighting_normalise")]))
    parts.append("full %.3f" % (1000 / med[("ours", "RESULT", s, "full")]))
    print("  %-28s %s" % (title, ", ".join(parts)))
EOF
rm -f "$results"
