# Dataset scan, synth and prepare tests; the statistics reference is PIL + numpy (prepare_stats_ref.py).
set(ALEXNET_DATA_PYTHON /usr/bin/python3 CACHE FILEPATH "Python with numpy and PIL for the dataset tests")
alexnet_add_test(test_dataset SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dataset.cc
                 LIBS alexnet_data alexnet_core PkgConfig::TURBOJPEG LABELS unit)
alexnet_add_test(test_prepare SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_prepare.cc
                 LIBS alexnet_data alexnet_core LABELS unit)
target_compile_definitions(test_prepare PRIVATE ALEXNET_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                           ALEXNET_TEST_PYTHON="${ALEXNET_DATA_PYTHON}" ALEXNET_TOOL="$<TARGET_FILE:alexnet-tool>")
add_dependencies(test_prepare alexnet-tool)
