# Data-service tests: sampler and wire/layout unit tests, and mpirun tests of the transport (in-process
# services over synthetic images) and of alexnet-data-service over a synthesized, prepared dataset.
alexnet_add_test(test_sampler SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sampler.cc
                 LIBS alexnet_data alexnet_core LABELS unit)
alexnet_add_test(test_service SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_service.cc
                 LIBS alexnet_data alexnet_core LABELS unit)

add_executable(fake_worker ${CMAKE_CURRENT_LIST_DIR}/fake_worker.cc)
target_include_directories(fake_worker PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(fake_worker PRIVATE alexnet_data alexnet_comm alexnet_core)
set_target_properties(fake_worker PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

set(_svc_script ${CMAKE_CURRENT_LIST_DIR}/test_service_mpi.sh)
set(_svc_work ${CMAKE_CURRENT_BINARY_DIR}/service_work)
set(_svc_env "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
foreach(case loopback_1x2 loopback_2x4 loopback_threads loopback_bad loopback_strict loopback_resume
             loopback_stall loopback_service_stall loopback_ten_crop)
  add_test(NAME service_${case}
           COMMAND ${_svc_script} ${case} $<TARGET_FILE:fake_worker> "" "" ${_svc_work})
  set_tests_properties(service_${case} PROPERTIES LABELS mpi TIMEOUT 120 ENVIRONMENT "${_svc_env}")
endforeach()
if(TARGET alexnet-data-service AND TARGET alexnet-tool)
  add_test(NAME service_dataset_setup
           COMMAND ${_svc_script} setup $<TARGET_FILE:fake_worker> $<TARGET_FILE:alexnet-data-service>
                   $<TARGET_FILE:alexnet-tool> ${_svc_work})
  set_tests_properties(service_dataset_setup PROPERTIES LABELS mpi TIMEOUT 120 FIXTURES_SETUP service_dataset)
  foreach(case real_1x2 real_2x4 real_bad kill_worker kill_service)
    add_test(NAME service_${case}
             COMMAND ${_svc_script} ${case} $<TARGET_FILE:fake_worker> $<TARGET_FILE:alexnet-data-service>
                     $<TARGET_FILE:alexnet-tool> ${_svc_work})
    set_tests_properties(service_${case} PROPERTIES LABELS mpi TIMEOUT 120 ENVIRONMENT "${_svc_env}"
                         FIXTURES_REQUIRED service_dataset)
  endforeach()
endif()
