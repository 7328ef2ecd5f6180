# Decoding, rescaling and augmentation tests (image_fixtures.py writes PIL references at test time).
alexnet_add_test(test_image SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_image.cc
                 LIBS alexnet_data alexnet_core PkgConfig::TURBOJPEG LABELS unit)
target_compile_definitions(test_image PRIVATE ALEXNET_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
alexnet_add_test(test_augment SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_augment.cc
                 LIBS alexnet_data alexnet_core LABELS unit)
# The rescale again on the portable scalar code path (the SIMD one is chosen at run time where available).
add_test(NAME test_image_scalar_rescale COMMAND test_image --gtest_filter=*Rescale*)
set_tests_properties(test_image_scalar_rescale PROPERTIES ENVIRONMENT ALEXNET_NO_SIMD=1 LABELS unit)
add_test(NAME test_augment_scalar COMMAND test_augment --gtest_filter=*ExtractAndNormalize*)
set_tests_properties(test_augment_scalar PROPERTIES ENVIRONMENT ALEXNET_NO_SIMD=1 LABELS unit)
