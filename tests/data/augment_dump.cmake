# alexnet-tool augment-dump over a synthesized, prepared dataset, checked by an independent numpy script.
if(TARGET alexnet-tool)
  add_test(NAME augment_dump
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/augment_dump_test.sh $<TARGET_FILE:alexnet-tool>
                   ${CMAKE_CURRENT_BINARY_DIR}/augment_dump_work)
  set_tests_properties(augment_dump PROPERTIES LABELS unit TIMEOUT 120)
endif()
