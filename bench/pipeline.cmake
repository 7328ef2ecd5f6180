# bench_pipeline: single-core input-pipeline img/s (decode only, full training transform) against PIL
# (bench/pil_pipeline.py, driven by bench/run_pipeline_bench.sh).
add_executable(bench_pipeline ${CMAKE_CURRENT_LIST_DIR}/bench_pipeline.cc)
target_link_libraries(bench_pipeline PRIVATE alexnet_data alexnet_core PkgConfig::TURBOJPEG)
target_compile_options(bench_pipeline PRIVATE -O3)
