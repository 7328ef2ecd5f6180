# bench_allreduce: bucketed, overlapped gradient averaging on AlexNet's gradient sizes under a simulated
# backward pass (bench/run_allreduce_bench.sh runs it on 1, 2 and 4 ranks).
add_executable(bench_allreduce ${CMAKE_CURRENT_LIST_DIR}/bench_allreduce.cc)
target_link_libraries(bench_allreduce PRIVATE alexnet_comm alexnet_model alexnet_core)
