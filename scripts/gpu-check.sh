#!/usr/bin/env bash
# The GPU checks, in parts, for a GPU machine that has the CUDA driver, nvcc and PyTorch (with its
# pip-packaged cuDNN, cuBLAS and NCCL) but no package registry and none of our Debian libraries.
#
#   scripts/gpu-check.sh bundle    here (Debian 12, no GPU needed): builds with CUDA, then packs every
#                                  executable that ctest runs under the label `gpu`, the four product
#                                  executables, bench_train, Open MPI (mpirun, its components, PMIx) and
#                                  the shared libraries they load that a stock CUDA machine lacks
#                                  (yaml-cpp, oneDNN, HDF5, libjpeg-turbo, ...) into .gpu-bundle/bundle.tar.xz
#   scripts/gpu-check.sh run       there, from the repository root with .gpu-bundle copied along: unpacks,
#                                  points the loader at the bundle and at PyTorch's CUDA libraries and
#                                  Open MPI at its relocated tree, then (1) runs every gpu executable,
#                                  (2) the demo job through alexnet-launch on the GPU (data service +
#                                  worker under mpirun, NCCL) in float32 and bf16, and the refusal of two
#                                  ranks on one GPU, (3) the training benchmark (ours and PyTorch on the
#                                  same GPU, batch 128 and 256, float32 / tf32 / bf16), and prints a table
#                                  for each; every log goes into one archive under $OUT when set
#   scripts/gpu-check.sh rehearse  here: `run` inside a mount namespace in which every library of the
#                                  bundle and Open MPI's system folders are hidden, on the CPU (the gpu
#                                  tests skip, the demo falls back to the CPU backend, a short one):
#                                  shows before any device time is spent that the bundle is complete
#
# GPU_CHECK_TESTS=0, GPU_CHECK_DEMO=0 and GPU_CHECK_BENCH=0 leave a part out. docs/gpu-check.md says how
# to run the second part on a lent machine in one call.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
bundle_dir=.gpu-bundle
ompi_lib=/usr/lib/x86_64-linux-gnu/openmpi/lib
pmix_root=/usr/lib/x86_64-linux-gnu/pmix2

# Libraries every CUDA machine has (glibc, the C++ runtime, the driver) or that come from PyTorch's
# packages there (the CUDA runtime, cuDNN, cuBLAS, NCCL): not packed.
skip_lib() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) return 0 ;;
    # The rest of glibc (HDF5's libcurl pulls in libresolv): its parts use each other's private symbols,
    # so one from Debian's glibc beside the GPU machine's libc would not match it.
    libresolv.so*|libnss_*|libnsl.so*|libutil.so*|libanl.so*|libmvec.so*|libBrokenLocale.so*) return 0 ;;
    libthread_db.so*|libc_malloc_debug.so*|libmemusage.so*|libpcprofile.so*|libSegFault.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcudnn*|libcublas*|libnccl.so*|libnvrtc*|libnvJitLink*) return 0 ;;
  esac
  return 1
}

# Copies the shared libraries that $1 loads (except skip_lib's) into $2.
pack_deps() {
  local lib
  while read -r lib; do
    if [ -n "$lib" ] && ! skip_lib "$lib"; then cp -L "$lib" "$2/"; fi
  done < <(ldd "$1" | awk '$3 ~ /^\// {print $3}')
}

# Open MPI components that need a fabric library (UCX, libfabric, verbs, PSM) or are OpenSHMEM's: the
# GPU machine runs the ranks of one node, over shared memory and TCP, and needs none of them.
fabric_component() {
  local deps
  deps=$(ldd "$1")  # not piped into grep -q: under pipefail its early exit would fail ldd with SIGPIPE
  grep -qE 'lib(ucp|ucs|uct|ucm|fabric|ibverbs|rdmacm|psm|psm2|psm_infinipath|infinipath|oshmem)\.so' <<<"$deps"
}

# Python of the GPU machine (PyTorch, the small table helpers) under that machine's own library path,
# not the bundle's: the bundle's OpenSSL, zlib or libgomp must not replace the ones PyTorch was built with.
# host_env (set by bundle_env) is the command prefix that restores it.
host_env=(env)
host_python() { "${host_env[@]}" python3 "$@"; }

# The environment under which the bundle in $1 runs: its libraries first, then PyTorch's CUDA
# libraries; Open MPI and PMIx told where their relocated trees are.
bundle_env() {
  local pack=$1 torch_libs path
  if [ -n "${LD_LIBRARY_PATH+set}" ]; then host_env=(env "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"); else host_env=(env -u LD_LIBRARY_PATH); fi
  torch_libs=$(python3 - <<'PY' 2>/dev/null || true
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
print(":".join(sorted({d for r in roots for d in glob.glob(os.path.join(r, "*", "lib"))})))
PY
)
  # No empty entry: the loader would read it as the current folder.
  path="$pack/lib:${torch_libs}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  path=$(sed -E 's/:+/:/g; s/^:|:$//g' <<<"$path")
  export LD_LIBRARY_PATH="$path"
  export OPAL_PREFIX="$pack/ompi" OPAL_EXEC_PREFIX="$pack/ompi" OPAL_BINDIR="$pack/ompi/bin" \
         OPAL_LIBDIR="$pack/lib" OPAL_PKGLIBDIR="$pack/ompi/components" OPAL_DATADIR="$pack/ompi/share" \
         OPAL_DATAROOTDIR="$pack/ompi/share" OPAL_PKGDATADIR="$pack/ompi/share/openmpi" \
         OPAL_SYSCONFDIR="$pack/ompi/etc"
  export PMIX_PREFIX="$pack/pmix" PMIX_EXEC_PREFIX="$pack/pmix" PMIX_LIBDIR="$pack/lib" \
         PMIX_PKGLIBDIR="$pack/pmix/components" PMIX_DATADIR="$pack/pmix/share" \
         PMIX_PKGDATADIR="$pack/pmix/share/pmix" PMIX_SYSCONFDIR="$pack/pmix/etc"
  export PATH="$pack/ompi/bin:$PATH"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
}

# The last record of each kind in a run's metrics.jsonl, as one table row; "n/a" for whatever the run
# did not get to write (a missing file, a cut-off line, null for a value that was not finite).
demo_row() {
  host_python - "$@" <<'PY' || echo "| $1 | n/a | n/a | n/a | n/a | n/a | n/a |"
import json, sys
label, metrics, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
last = {}
try:
    with open(metrics) as f:
        for line in f:
            try:
                r = json.loads(line)
                last[r["kind"]] = r
            except (ValueError, KeyError, TypeError):
                pass
except OSError:
    pass
def num(record, key):
    v = (record or {}).get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
def cell(v, f, scale=1.0):
    return f % (v * scale) if v is not None else "n/a"
t, e, s = last.get("train"), last.get("eval"), last.get("summary")
step_s = num(s, "step_s")
allocs, waits = num(s, "steady_allocations_per_step"), num(s, "steady_host_waits_per_step")
print("| %s | %s | %s | %s | %s | %s | %s |" % (
    label,
    cell(num(s, "steps_run"), "%d"),
    cell(batch / step_s if step_s else None, "%.0f"),
    cell(num(t, "loss"), "%.4f"),
    cell(num(e, "top1_error"), "%.1f%%", 100),
    cell(num(e, "top5_error"), "%.1f%%", 100),
    "%.2f / %.2f" % (allocs, waits) if allocs is not None and waits is not None else "n/a"))
PY
}

# The run's time budget (GPU_CHECK_BUDGET_S, default 420 s from the start of `run`, which leaves a
# minute of an 8-minute call for unpacking and for the logs): each command runs under `timeout` with the
# smallest of its own cap ($1), what is left of its stage (stage_end: the tests may use the first 40 %
# of the budget, the demo up to 55 %, the benchmark the rest, so slow tests cannot starve the
# benchmark) and what is left of the budget. A hung test or benchmark then costs its cap, not the lent
# machine's whole time, and the run ends inside the budget with every table it got to. rc 124 is a
# timeout; 125 means no time was left to start it.
budget_end=0
stage_end=0
limited() {
  local cap=$1 left end=$budget_end
  shift
  [ "$stage_end" -gt 0 ] && [ "$stage_end" -lt "$end" ] && end=$stage_end
  left=$((end - $(date +%s)))
  [ "$left" -gt "$cap" ] && left=$cap
  [ "$left" -ge 5 ] || return 125
  timeout -k 5 "$left" "$@"
}

# "passed", "TIMEOUT", "NOT RUN (budget)" or "FAILED (rc)" for a command's exit status.
outcome() {
  case "$1" in
    0) echo passed ;;
    124|137) echo TIMEOUT ;;
    125) echo "NOT RUN (budget)" ;;
    *) echo "FAILED ($1)" ;;
  esac
}

case "$mode" in
  bundle)
    scripts/build.sh
    grep -q 'CUDA backend ON' build-configure.log || { echo "gpu-check: the build has no CUDA backend" >&2; exit 1; }
    # The executable of each gpu test: the first word of its command inside the build folder (an MPI
    # test's command starts with timeout and mpiexec).
    mapfile -t exes < <(ctest --test-dir build -L gpu --show-only=json-v1 2>/dev/null | /usr/bin/python3 -c '
import json, os, sys
build = os.path.realpath("build") + os.sep
exes = {next((w for w in t.get("command", []) if os.path.realpath(w).startswith(build)), None)
        for t in json.load(sys.stdin)["tests"]}
print("\n".join(sorted(e for e in exes if e)))')
    [ ${#exes[@]} -gt 0 ] || { echo "gpu-check: ctest lists no gpu test" >&2; exit 1; }
    [ -x /usr/bin/orterun ] && [ -d "$ompi_lib/openmpi3" ] && [ -d "$pmix_root/lib/pmix" ] ||
      { echo "gpu-check: Open MPI (openmpi-bin, libpmix2) is not installed where Debian puts it" >&2; exit 1; }
    pack=$bundle_dir/pack
    rm -rf "$bundle_dir" && mkdir -p "$pack/bin" "$pack/app" "$pack/lib" "$pack/ompi/bin" \
      "$pack/ompi/components" "$pack/ompi/share" "$pack/ompi/etc" "$pack/pmix/components" "$pack/pmix/share"
    for exe in "${exes[@]}"; do cp "$exe" "$pack/bin/"; pack_deps "$exe" "$pack/lib"; done
    for exe in alexnet-launch alexnet-worker alexnet-data-service alexnet-tool bench_train; do
      cp "build/bin/$exe" "$pack/app/"
      pack_deps "build/bin/$exe" "$pack/lib"
    done
    # Open MPI 4.1 as Debian installs it, relocated through OPAL_* / PMIX_* (bundle_env).
    cp /usr/bin/orterun "$pack/ompi/bin/mpirun"
    cp /usr/bin/orted "$pack/ompi/bin/orted"
    pack_deps /usr/bin/orterun "$pack/lib"
    components=0
    for c in "$ompi_lib"/openmpi3/mca_*.so; do
      fabric_component "$c" && continue
      cp "$c" "$pack/ompi/components/"
      pack_deps "$c" "$pack/lib"
      components=$((components + 1))
    done
    cp -r /usr/share/openmpi "$pack/ompi/share/"
    cp /etc/openmpi/openmpi-mca-params.conf "$pack/ompi/etc/"
    cp "$pmix_root"/lib/pmix/*.so "$pack/pmix/components/"
    for c in "$pmix_root"/lib/pmix/*.so; do pack_deps "$c" "$pack/lib"; done
    cp -r "$pmix_root/share/pmix" "$pack/pmix/share/"
    git rev-parse --short HEAD > "$pack/commit" 2>/dev/null || echo unknown > "$pack/commit"
    tar -C "$bundle_dir" -cJf "$bundle_dir/bundle.tar.xz" pack
    rm -rf "$pack"
    echo "gpu-check: packed ${#exes[@]} gpu test executable(s): $(printf '%s ' "${exes[@]##*/}")"
    echo "gpu-check: with the product's executables, bench_train, mpirun and $components Open MPI components"
    echo "gpu-check: $bundle_dir/bundle.tar.xz, $(du -h "$bundle_dir/bundle.tar.xz" | cut -f1) (carry $bundle_dir)"
    ;;

  rehearse)
    [ -f "$bundle_dir/bundle.tar.xz" ] || { echo "gpu-check: no $bundle_dir/bundle.tar.xz (run 'bundle' first)" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "gpu-check: rehearse needs root (a private mount namespace)" >&2; exit 1; }
    # Hides, in a private mount namespace, Open MPI's and PMIx's system folders, the system mpirun and
    # the system copy of every library the bundle packs; then runs `run` there with a short CPU demo.
    list=$(mktemp)
    tar -tJf "$bundle_dir/bundle.tar.xz" | sed -n 's|^pack/lib/||p' | grep . > "$list"
    exec unshare -m --propagation private bash -c '
      set -euo pipefail
      hidden=0
      for dir in '"$ompi_lib $pmix_root"' /etc/openmpi /usr/share/openmpi; do
        mount -t tmpfs none "$dir"; hidden=$((hidden + 1))
      done
      for f in /usr/bin/orterun /usr/bin/orted; do mount --bind /dev/null "$f"; hidden=$((hidden + 1)); done
      while read -r name; do
        for dir in /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/hdf5/serial /usr/local/lib; do
          for f in "$dir/$name" "$dir/${name%.so*}.so"*; do
            if [ -f "$f" ] && [ ! -L "$f" ]; then mount --bind /dev/null "$f"; hidden=$((hidden + 1)); fi
          done
        done
      done < "'"$list"'"
      echo "gpu-check rehearse: $hidden system files and folders hidden"
      ! command -v mpirun >/dev/null || ! mpirun --version >/dev/null 2>&1 || { echo "the system mpirun still runs" >&2; exit 1; }
      export GPU_CHECK_BENCH=${GPU_CHECK_BENCH:-0} GPU_CHECK_DEMO_BACKEND=auto
      export GPU_CHECK_DEMO_PRECISIONS=${GPU_CHECK_DEMO_PRECISIONS:-float32}
      export GPU_CHECK_DEMO_ARGS=${GPU_CHECK_DEMO_ARGS:-"--set train.epochs=1 --set data.threads=1"}
      exec scripts/gpu-check.sh run'
    ;;

  run)
    [ -f "$bundle_dir/bundle.tar.xz" ] || { echo "gpu-check: no $bundle_dir/bundle.tar.xz (run 'bundle' first)" >&2; exit 1; }
    budget=${GPU_CHECK_BUDGET_S:-420}
    run_start=$(date +%s)
    budget_end=$(( run_start + budget ))
    work=$(mktemp -d)
    # tar needs an xz program for .tar.xz; Python's tarfile has its own.
    tar -C "$work" -xJf "$bundle_dir/bundle.tar.xz" 2>/dev/null ||
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle_dir/bundle.tar.xz" "$work"
    pack=$work/pack
    logs=$work/logs
    mkdir -p "$logs"
    bundle_env "$pack"
    # Whatever ends the run, the logs reach $OUT.
    save_logs() {
      if [ -n "${OUT:-}" ]; then
        tar -C "$work" -czf "$OUT/gpu-check-logs.tar.gz" logs $(cd "$work" && ls -d runs/*/metrics.jsonl runs/*/worker.log 2>/dev/null) &&
          echo "gpu-check: logs in \$OUT/gpu-check-logs.tar.gz"
      else
        echo "gpu-check: logs in $logs"
      fi
    }
    trap save_logs EXIT
    export ALEXNET_TOOL="$pack/app/alexnet-tool"  # tests/tools/test_tool_cuda.cc
    export GTEST_COLOR=no  # mpirun gives its ranks a terminal: keep the logs plain for the counts below
    echo "gpu-check: bundle of commit $(cat "$pack/commit")"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "gpu-check: nvidia-smi not available"
    # Which CUDA libraries the product loads there (PyTorch's packages), and PyTorch's own versions.
    ldd "$pack/app/alexnet-worker" | awk '/lib(cudart|cudnn|cublas|nccl)/ {print "gpu-check: " $1 " -> " $3}' || true
    # A library that no folder on the path provides: every program that needs it fails at start.
    missing=$(ldd "$pack"/app/* "$pack"/bin/* 2>/dev/null | awk '/not found/ {print $1}' | sort -u | paste -sd' ' - || true)
    [ -z "$missing" ] || echo "gpu-check: WARNING: libraries not found: $missing"
    echo "gpu-check: $(ldd --version 2>/dev/null | head -1)"
    host_python -c 'import torch; print("gpu-check: torch", torch.__version__, "cuDNN", torch.backends.cudnn.version(),
"NCCL", ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else "")' 2>/dev/null || true
    status=0
    if [ "${GPU_CHECK_TESTS:-1}" = 1 ]; then
      stage_end=$(( run_start + budget * 40 / 100 ))
      rows=()
      gpus=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU' || true)
      runs=()
      for exe in "$pack"/bin/*; do
        case "$(basename "$exe")" in
          # MPI tests (test_comm_nccl): one rank, then one per GPU but at least two (the refusal of two
          # ranks on one GPU needs two).
          test_comm_*) runs+=("1|$exe" "$(( gpus > 2 ? gpus : 2 ))|$exe") ;;
          *) runs+=("0|$exe") ;;
        esac
      done
      for entry in "${runs[@]}"; do
        np=${entry%%|*}
        exe=${entry#*|}
        name=$(basename "$exe")
        command=(limited 180 "$exe")
        if [ "$np" -gt 0 ]; then
          name="$name -np $np"
          command=(limited 90 mpirun --oversubscribe --bind-to none -np "$np" "$exe")
        fi
        log="$logs/${name// /_}.log"
        start=$(date +%s.%N)
        rc=0
        "${command[@]}" >"$log" 2>&1 || rc=$?
        result=$(outcome "$rc")
        [ "$rc" = 0 ] || status=1
        secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
        passed=$(grep -c '^\[       OK \]' "$log" || true)
        failed=$(grep -cE '^\[  FAILED  \] .* \([0-9]+ ms\)$' "$log" || true)
        skipped=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$log" || true)
        if [ "$np" -gt 1 ]; then  # every rank prints its own lines
          passed=$((passed / np)) failed=$((failed / np)) skipped=$((skipped / np))
        fi
        rows+=("$(printf '| %-28s | %-6s | %6s | %6s | %7s | %7.1f |' "$name" "$result" "$passed" "$failed" "$skipped" "$secs")")
        if [ "$rc" != 0 ] && [ "$rc" != 125 ]; then
          echo "--- $name: $result"
          grep -E 'Failure|Expected|Which is|error|seed' "$log" | head -30 || true
          # The failed tests, or the one that was running when the program died (a crash or a CUDA
          # error out of main leaves no FAILED line).
          tests=$(sed -nE 's/^\[  FAILED  \] ([A-Za-z0-9_/.]+) \([0-9]+ ms\)$/\1/p' "$log" | sort -u | paste -sd: -)
          [ -n "$tests" ] || tests=$(sed -nE 's/^\[ RUN      \] ([A-Za-z0-9_/.]+)$/\1/p' "$log" | tail -1)
          echo "failed or last running: ${tests:-none}"
          # One rerun of those under compute-sanitizer's memcheck (not for MPI runs): an out-of-bounds
          # access or a CUDA API error then names its kernel and call site.
          sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
          if [ "$np" = 0 ] && [ -n "$tests" ] && [ -n "$sanitizer" ]; then
            slog="$logs/${name// /_}.memcheck.log"
            limited 120 "$sanitizer" --tool memcheck --error-exitcode 3 --print-limit 20 \
              "$exe" --gtest_filter="$tests" >"$slog" 2>&1 || true
            echo "memcheck of $tests:"
            grep -E '^========= (Invalid|Program hit|Error|ERROR SUMMARY|    at )|Failure' "$slog" | head -25 || true
          fi
        fi
      done
      echo
      echo "| executable                   | result | passed | failed | skipped | seconds |"
      echo "|---|---|---|---|---|---|"
      printf '%s\n' "${rows[@]}"
    fi
    if [ "${GPU_CHECK_DEMO:-1}" = 1 ]; then
      stage_end=$(( run_start + budget * 55 / 100 ))
      # The demo job of scripts/demo.sh through the product's own launcher: 1 data service and 1 worker
      # under the bundled mpirun, both towers on GPU 0 (devices_per_rank 1; one worker reduces nothing,
      # test_comm_nccl covers NCCL).
      data=$work/synth10
      app=$pack/app
      backend=${GPU_CHECK_DEMO_BACKEND:-cuda}
      read -r -a extra <<<"${GPU_CHECK_DEMO_ARGS:---set data.threads=4}"
      # Evaluation batches of 24 against training batches of 32: every evaluation chunk is a short one,
      # padded to the training shapes on the GPU (Worker::evaluate), and the steady-state column shows
      # whether the training steps after an evaluation allocate again.
      common=(--config configs/demo.yaml --set "data.root=$data" --set "parallel.backend=$backend"
              --set parallel.devices_per_rank=1 --set data.eval_batch=24)
      if limited 60 "$app/alexnet-tool" synth --out "$data" --classes 10 --train-per-class 64 --val-per-class 20 --seed 1 \
           >"$logs/demo_prepare.log" 2>&1 &&
         limited 60 "$app/alexnet-tool" prepare "${common[@]}" --shards >>"$logs/demo_prepare.log" 2>&1; then
        demo_rows=()
        graph_lines=()
        # A variant is a precision, "+graphs" after it: the same job with parallel.cuda_graphs on (the
        # worker's crops path and its evaluations between graph replays).
        for variant in ${GPU_CHECK_DEMO_PRECISIONS:-float32 bf16 float32+graphs}; do
          precision=${variant%+graphs}
          graphs=false
          [ "$variant" = "$precision" ] || graphs=true
          run_dir=$work/runs/demo-${variant/+/-}
          log=$logs/demo_${variant/+/-}.log
          start=$(date +%s)
          rc=0
          limited 150 "$app/alexnet-launch" "${common[@]}" --workers 1 --data-services 1 --bin-dir "$app" \
               --mpirun "$pack/ompi/bin/mpirun" --set "run.dir=$run_dir" --set "parallel.precision=$precision" \
               --set "parallel.cuda_graphs=$graphs" "${extra[@]}" >"$log" 2>&1 || rc=$?
          result=$(outcome "$rc")
          if [ "$rc" != 0 ]; then status=1; tail -15 "$log"; fi
          grep -m1 -oE '(CPU|CUDA) backend.*' "$log" || true
          demo_rows+=("$(demo_row "$variant, $result, $(( $(date +%s) - start )) s" "$run_dir/metrics.jsonl" 32)")
          if [ "$graphs" = true ]; then
            graph_lines+=("$variant: $(grep -m1 -oE 'summary: CUDA graphs.*' "$log" || echo 'no CUDA graphs summary in the log')")
          fi
        done
        echo
        echo "| demo job (precision, result, wall) | steps | img/s | last training loss | val top-1 error | val top-5 error | per step after 3: allocations / host waits |"
        echo "|---|---|---|---|---|---|---|"
        printf '%s\n' "${demo_rows[@]}"
        [ ${#graph_lines[@]} = 0 ] || printf '%s\n' "${graph_lines[@]}"
        # Two ranks cannot share one GPU under NCCL: the job must stop with a message that says so.
        if [ "$backend" = cuda ]; then
          if limited 60 "$app/alexnet-launch" "${common[@]}" --workers 2 --data-services 1 --bin-dir "$app" \
               --mpirun "$pack/ompi/bin/mpirun" --set "run.dir=$work/runs/shared" \
               >"$logs/demo_shared_gpu.log" 2>&1; then
            echo "gpu-check: two workers on one GPU were not refused"; status=1
          else
            echo "two workers on one GPU (expected to be refused):"
            grep -m1 -E 'NCCL needs|devices_per_rank' "$logs/demo_shared_gpu.log" || { tail -5 "$logs/demo_shared_gpu.log"; status=1; }
          fi
        fi
      else
        echo "gpu-check: the demo dataset could not be made"; tail -15 "$logs/demo_prepare.log"; status=1
      fi
    fi
    if [ "${GPU_CHECK_BENCH:-1}" = 1 ]; then
      # Training throughput of the 1000-class paper network, ours beside PyTorch's own best settings
      # (grouped two-tower model of tests/parity, cudnn.benchmark, channels-last), same GPU, same call.
      echo
      echo "| precision | batch | ours img/s | ours TFLOP/s | of the card's peak | PyTorch img/s | ours / PyTorch | ours, uint8 input from the host, img/s | ours, fastest algorithms, img/s | ours, CUDA graphs, img/s | conv passes in NHWC |"
      echo "|---|---|---|---|---|---|---|---|---|---|---|"
      # Batch 128 at every precision first: if the budget ends early, what is lost is batch 256.
      stage_end=0
      failures=()
      # bench_train once more at batch $1 and precision $2 with the settings after the log's tag $3: its
      # img/s ("(capture refused)" beside it where CUDA graphs were asked for and refused), or how it ended.
      variant_run() {
        local batch=$1 precision=$2 tag=$3 rc=0
        shift 3
        limited 60 "$pack/app/bench_train" --device cuda --batch "$batch" --iters 20 --no-sgemm --no-crops \
          --set "parallel.precision=$precision" "$@" >"$logs/bench_${precision}_${batch}_$tag.log" 2>&1 || rc=$?
        if [ "$rc" != 0 ]; then outcome "$rc"; return 0; fi
        awk '/^ours_img_per_s/ {v = $2} /^cuda_graph_refused/ {r = 1} END {print (r ? v " (capture refused)" : v)}' \
          "$logs/bench_${precision}_${batch}_$tag.log"
      }
      bench_rows() {
        local batch=$1 precision
        for precision in float32 tf32 bf16; do
          ours=n/a
          tflops=n/a
          crops=n/a
          nhwc=-
          share=n/a
          rc=0
          limited 60 "$pack/app/bench_train" --device cuda --batch "$batch" --iters 20 --no-sgemm \
            --set "parallel.precision=$precision" >"$logs/bench_${precision}_$batch.log" 2>&1 || rc=$?
          # A later failure (or the cap) after the main figures were printed keeps them: the row says
          # the outcome beside them.
          if grep -q '^ours_img_per_s' "$logs/bench_${precision}_$batch.log"; then
            ours=$(awk '/^ours_img_per_s/ {print $2}' "$logs/bench_${precision}_$batch.log")
            [ "$rc" = 0 ] || { ours="$ours ($(outcome "$rc") after)"; status=1
              failures+=("--- bench_train, $precision, batch $batch: $(outcome "$rc") after its main figures" "$(tail -5 "$logs/bench_${precision}_$batch.log")"); }
            tflops=$(awk '/^ours_gflops/ {printf "%.1f", $2 / 1000}' "$logs/bench_${precision}_$batch.log")
            crops=$(awk '/^ours_crops_img_per_s/ {print $2} /^ours_crops_error/ {print "failed"}' "$logs/bench_${precision}_$batch.log")
            [ -n "$crops" ] || crops=n/a
            share=$(awk '/^fraction_of_peak/ {printf "%.1f %% of %.0f TFLOP/s", $2 * 100, peak} /^peak_tflops/ {peak = $2}' \
                      "$logs/bench_${precision}_$batch.log")
            # bf16: of the convolution passes (forward, backward), those cuDNN timed fastest in NHWC.
            if [ "$precision" = bf16 ]; then
              nhwc=$(awk '/^bf16_nhwc_passes/ {k = $2} /^bf16_passes/ {n = $2} END {print k " of " n}' \
                       "$logs/bench_${precision}_$batch.log")
            fi
          else
            ours=$(outcome "$rc")
            status=1
            # Printed after the table, which stays in one piece.
            [ "$rc" = 125 ] || failures+=("--- bench_train, $precision, batch $batch: $ours" "$(tail -5 "$logs/bench_${precision}_$batch.log")")
          fi
          # At batch 128 two variants: parallel.deterministic false (cuDNN's fastest algorithms, as
          # cudnn.benchmark picks) and parallel.cuda_graphs (the timed steps replay the pass captured in
          # the warm-up).
          fastest=-
          graphed=-
          if [ "$batch" = 128 ]; then
            fastest=$(variant_run "$batch" "$precision" fastest --set parallel.deterministic=false)
            graphed=$(variant_run "$batch" "$precision" graphs --set parallel.cuda_graphs=true)
          fi
          torch=$(limited 90 "${host_env[@]}" python3 bench/torch_alexnet_bench.py --device cuda --precision "$precision" --batch "$batch" \
                    --iters 20 --warmup 5 2>"$logs/torch_${precision}_$batch.log" | awk '/^torch_img_per_s/ {print $2}') || torch=""
          ratio=$(host_python -c "import sys; a, b = sys.argv[1:]; print(f'{float(a) / float(b):.2f}' if a.replace('.', '', 1).isdigit() and b.replace('.', '', 1).isdigit() else 'n/a')" "$ours" "${torch:-n/a}" || echo n/a)
          echo "| $precision | $batch | $ours | $tflops | ${share:-n/a} | ${torch:-failed} | $ratio | $crops | $fastest | $graphed | $nhwc |"
        done
      }
      bench_rows 128
      # Then what the lines under the table need, before batch 256. Whether launches bound the step (what
      # CUDA graphs would remove): the same pass at batch 8, where the GPU's work is small, beside batch
      # 128. A batch-8 step close to the batch-128 one means the host's launches, not the GPU, set the pace.
      step128=$(awk '/^ours_step_s/ {printf "%.2f", $2 * 1000}' "$logs/bench_float32_128.log" 2>/dev/null || true)
      step8=failed
      if limited 60 "$pack/app/bench_train" --device cuda --batch 8 --iters 20 --no-sgemm --no-crops \
           >"$logs/bench_float32_8.log" 2>&1; then
        step8=$(awk '/^ours_step_s/ {printf "%.2f", $2 * 1000}' "$logs/bench_float32_8.log")
      fi
      # The same with the pass replayed as a CUDA graph: what graphs take off the launch floor.
      step8g=failed
      if limited 60 "$pack/app/bench_train" --device cuda --batch 8 --iters 20 --no-sgemm --no-crops \
           --set parallel.cuda_graphs=true >"$logs/bench_float32_8_graphs.log" 2>&1; then
        step8g=$(awk '/^ours_step_s/ {printf "%.2f", $2 * 1000}' "$logs/bench_float32_8_graphs.log")
      fi
      # And how long the GPU still works after the host has queued a whole step: near 0 ms, the GPU
      # waits for the launches.
      tails=""
      for run in float32_128 bf16_128 float32_8 float32_128_graphs float32_8_graphs; do
        t=$(awk '/^ours_gpu_tail_s/ {printf "%.2f", $2 * 1000}' "$logs/bench_$run.log" 2>/dev/null || true)
        name=${run/_/ batch }
        tails="$tails ${name/_graphs/ with graphs}: ${t:-failed} ms;"
      done
      # What a timed step allocates (device and page-locked memory) and how often it blocks the host (the
      # float batch already on the GPU; the demo column above has the worker's own crops path).
      steady=""
      for run in float32_128 bf16_128 float32_128_graphs; do
        a=$(awk '/^steady_allocations_per_step/ {a = $2} /^steady_host_waits_per_step/ {w = $2}
                 END {if (a != "") print a " allocations, " w " host waits"}' "$logs/bench_$run.log" 2>/dev/null || true)
        name=${run/_/ batch }
        steady="$steady ${name/_graphs/ with graphs}: ${a:-failed};"
      done
      # Why capture was refused, if it was (the graphs column then shows passes issued stream by stream).
      refused=$(grep -h -m1 '^cuda_graph_refused' "$logs"/bench_*_graphs.log 2>/dev/null | head -1 || true)
      step128g=$(awk '/^ours_step_s/ {printf "%.2f", $2 * 1000}' "$logs/bench_float32_128_graphs.log" 2>/dev/null || true)
      notes=("launch floor (float32): ${step8} ms per step at batch 8, ${step128:-failed} ms at batch 128"
             "with CUDA graphs: ${step8g} ms per step at batch 8, ${step128g:-failed} ms at batch 128${refused:+ ($refused)}"
             "GPU tail after the host queued the step (median):${tails%;}"
             "per timed step (pass and SGD):${steady%;}")
      # What the per-pass layout choice gains: bf16 at batch 128 with every convolution in NCHW.
      nchw=failed
      if limited 60 "$pack/app/bench_train" --device cuda --batch 128 --iters 20 --no-sgemm --no-crops \
           --set parallel.precision=bf16 --bf16-layout nchw >"$logs/bench_bf16_128_nchw.log" 2>&1; then
        nchw=$(awk '/^ours_img_per_s/ {print $2}' "$logs/bench_bf16_128_nchw.log")
      fi
      fastest_layout=$(awk '/^ours_img_per_s/ {print $2}' "$logs/bench_bf16_128.log" 2>/dev/null || true)
      notes+=("bf16, batch 128: ${nchw} img/s with NCHW operands only, ${fastest_layout:-failed} img/s with each pass in the layout cuDNN timed fastest")
      bench_rows 256
      # Last, as its compilation takes a good part of a minute: PyTorch through its own compiler
      # (torch.compile, where the machine's PyTorch is version 2) at batch 128, beside our figure above.
      for precision in float32 bf16; do
        rc=0
        compiled=$(limited 120 "${host_env[@]}" python3 bench/torch_alexnet_bench.py --device cuda --precision "$precision" \
                     --batch 128 --iters 20 --warmup 5 --compile 2>"$logs/torch_compile_${precision}_128.log" |
                   awk '/^torch_img_per_s/ {print $2}') || rc=$?
        if [ -n "$compiled" ]; then
          compiled="$compiled img/s"
        else
          compiled=$(outcome "$rc")
          [ "$rc" != 0 ] || compiled="no figure"
        fi
        ours128=$(awk '/^ours_img_per_s/ {print $2 " img/s"}' "$logs/bench_${precision}_128.log" 2>/dev/null || true)
        notes+=("PyTorch with torch.compile, $precision, batch 128: $compiled (ours ${ours128:-failed})")
      done
      echo
      printf '%s\n' "${notes[@]}"
      [ ${#failures[@]} = 0 ] || printf '%s\n' "${failures[@]}"
    fi
    echo "gpu-check: $(( $(date +%s) - run_start )) s in all (budget $budget s)"
    exit "$status"
    ;;

  *)
    echo "usage: scripts/gpu-check.sh bundle | run | rehearse   (docs/gpu-check.md)" >&2
    exit 2
    ;;
esac
