#!/usr/bin/env bash
# The GPU checks, in two halves, for a GPU machine that has the CUDA driver, nvcc and PyTorch (with its
# pip-packaged cuDNN, cuBLAS and NCCL) but no package registry and none of our Debian libraries.
#
#   scripts/gpu-check.sh bundle   here (Debian 12, no GPU needed): builds with CUDA, then packs every
#                                 executable that ctest runs under the label `gpu`, alexnet-tool (for the
#                                 --device cuda test) and bench_train, with the shared libraries they load
#                                 that a stock CUDA machine lacks (yaml-cpp, oneDNN, HDF5, ...), into
#                                 .gpu-bundle/bundle.tar.xz
#   scripts/gpu-check.sh run      there, from the repository root with .gpu-bundle copied along: unpacks,
#                                 points the loader at the bundle and at PyTorch's CUDA libraries, runs
#                                 every gpu executable, then the training benchmark (ours and PyTorch on
#                                 the same GPU, batch 128 and 256, float32 / tf32 / bf16), and prints
#                                 the tables (logs under $OUT when set)
#
# docs/gpu-check.md says how to run the second half on a lent machine in one call.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
bundle_dir=.gpu-bundle

# Libraries every CUDA machine has (glibc, the C++ runtime, the driver) or that come from PyTorch's
# packages there (the CUDA runtime, cuDNN, cuBLAS, NCCL): not packed.
skip_lib() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcudnn*|libcublas*|libnccl.so*|libnvrtc*|libnvJitLink*) return 0 ;;
  esac
  return 1
}

case "$mode" in
  bundle)
    scripts/build.sh
    grep -q 'CUDA backend ON' build-configure.log || { echo "gpu-check: the build has no CUDA backend" >&2; exit 1; }
    mapfile -t exes < <(ctest --test-dir build -L gpu --show-only=json-v1 2>/dev/null | /usr/bin/python3 -c '
import json, sys
print("\n".join(sorted({t["command"][0] for t in json.load(sys.stdin)["tests"] if t.get("command")})))')
    [ ${#exes[@]} -gt 0 ] || { echo "gpu-check: ctest lists no gpu test" >&2; exit 1; }
    rm -rf "$bundle_dir" && mkdir -p "$bundle_dir/pack/bin" "$bundle_dir/pack/bench" "$bundle_dir/pack/lib"
    cp build/bin/bench_train build/bin/alexnet-tool "$bundle_dir/pack/bench/"
    for exe in "${exes[@]}" build/bin/bench_train build/bin/alexnet-tool; do
      case "$exe" in build/bin/bench_train|build/bin/alexnet-tool) ;; *) cp "$exe" "$bundle_dir/pack/bin/" ;; esac
      while read -r lib; do
        if [ -n "$lib" ] && ! skip_lib "$lib"; then cp -L "$lib" "$bundle_dir/pack/lib/"; fi
      done < <(ldd "$exe" | awk '$3 ~ /^\// {print $3}')
    done
    git rev-parse --short HEAD > "$bundle_dir/pack/commit" 2>/dev/null || echo unknown > "$bundle_dir/pack/commit"
    tar -C "$bundle_dir" -cJf "$bundle_dir/bundle.tar.xz" pack
    rm -rf "$bundle_dir/pack"
    echo "gpu-check: packed ${#exes[@]} executable(s): $(printf '%s ' "${exes[@]##*/}")"
    echo "gpu-check: $bundle_dir/bundle.tar.xz, $(du -h "$bundle_dir/bundle.tar.xz" | cut -f1) (carry $bundle_dir)"
    ;;
  run)
    [ -f "$bundle_dir/bundle.tar.xz" ] || { echo "gpu-check: no $bundle_dir/bundle.tar.xz (run 'bundle' first)" >&2; exit 1; }
    work=$(mktemp -d)
    tar -C "$work" -xJf "$bundle_dir/bundle.tar.xz"
    out=${OUT:-$work/out}
    mkdir -p "$out"
    # PyTorch's CUDA libraries: nvidia/<package>/lib folders beside torch.
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
    export LD_LIBRARY_PATH="$work/pack/lib:${torch_libs}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
    export ALEXNET_TOOL="$work/pack/bench/alexnet-tool"  # tests/tools/test_tool_cuda.cc
    echo "gpu-check: bundle of commit $(cat "$work/pack/commit")"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "gpu-check: nvidia-smi not available"
    status=0
    rows=()
    for exe in "$work"/pack/bin/*; do
      name=$(basename "$exe")
      log="$out/$name.log"
      start=$(date +%s.%N)
      if "$exe" >"$log" 2>&1; then result=passed; else result=FAILED; status=1; fi
      secs=$(echo "$(date +%s.%N) - $start" | bc)
      passed=$(grep -c '^\[       OK \]' "$log" || true)
      failed=$(grep -cE '^\[  FAILED  \] .* \([0-9]+ ms\)$' "$log" || true)
      skipped=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$log" || true)
      rows+=("$(printf '| %-28s | %-6s | %6s | %6s | %7s | %7.1f |' "$name" "$result" "$passed" "$failed" "$skipped" "$secs")")
      if [ "$result" = FAILED ]; then grep -E 'Failure|Expected|Which is|error|seed' "$log" | head -40; fi
    done
    echo
    echo "| executable                   | result | passed | failed | skipped | seconds |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    if [ "${GPU_CHECK_BENCH:-1}" = 1 ]; then
      # Training throughput of the 1000-class paper network, ours beside PyTorch's own best settings
      # (grouped two-tower model of tests/parity, cudnn.benchmark, channels-last), same GPU, same call.
      echo
      echo "| precision | batch | ours img/s | ours TFLOP/s | PyTorch img/s | ours / PyTorch |"
      echo "|---|---|---|---|---|---|"
      for precision in float32 tf32 bf16; do
        for batch in 128 256; do
          ours=n/a
          tflops=n/a
          if "$work/pack/bench/bench_train" --device cuda --batch "$batch" --iters 20 --no-sgemm \
               --set "parallel.precision=$precision" >"$out/bench_${precision}_$batch.log" 2>&1; then
            ours=$(awk '/^ours_img_per_s/ {print $2}' "$out/bench_${precision}_$batch.log")
            tflops=$(awk '/^ours_gflops/ {printf "%.1f", $2 / 1000}' "$out/bench_${precision}_$batch.log")
          else
            ours=failed
            status=1
            tail -5 "$out/bench_${precision}_$batch.log"
          fi
          torch=$(python3 bench/torch_alexnet_bench.py --device cuda --precision "$precision" --batch "$batch" \
                    --iters 20 --warmup 5 2>"$out/torch_${precision}_$batch.log" | awk '/^torch_img_per_s/ {print $2}') || torch=""
          ratio=$(python3 -c "import sys; a, b = sys.argv[1:]; print(f'{float(a) / float(b):.2f}' if a.replace('.', '', 1).isdigit() and b.replace('.', '', 1).isdigit() else 'n/a')" "$ours" "${torch:-n/a}")
          echo "| $precision | $batch | $ours | $tflops | ${torch:-failed} | $ratio |"
        done
      done
    fi
    exit "$status"
    ;;
  *)
    echo "usage: scripts/gpu-check.sh bundle | run   (docs/gpu-check.md)" >&2
    exit 2
    ;;
esac
