# examples/python/torch_tests.cmake - ctest cases of the PyTorch executor (docs/torch-executor.md).
#
# Included by examples/python/CMakeLists.txt, which defines PARAFLEX_PYTHON_EXECUTABLE (Debian's
# python3, which has python3-torch) and PARAFLEX_PYTHON_MODULE_DIR (where the built `paraflex`
# package is). One ctest case per tests/test_torch_*.py, run with `python3 -m unittest`. Skipped,
# with a message, when that interpreter cannot import torch.distributed.
#
# The cases start worker processes (2-4, small models, 4 steps): each needs about 15-45 s on two
# cores. They take a shared lock so that they never run at the same time as each other (their
# transports and pacing assume the CPUs are not shared with another multi-process test).

if(NOT PARAFLEX_BUILD_TESTS OR NOT PARAFLEX_PYTHON_EXECUTABLE)
  return()
endif()

execute_process(
  COMMAND "${PARAFLEX_PYTHON_EXECUTABLE}" -c "import torch, torch.distributed as d; assert d.is_available() and d.is_gloo_available()"
  RESULT_VARIABLE _pf_torch_rc OUTPUT_QUIET ERROR_QUIET)
if(NOT _pf_torch_rc EQUAL 0)
  message(STATUS "paraflex: PyTorch executor tests skipped: ${PARAFLEX_PYTHON_EXECUTABLE} cannot import torch.distributed with gloo "
                 "(Debian: python3-torch)")
  return()
endif()

file(GLOB _pf_torch_tests CONFIGURE_DEPENDS "${CMAKE_CURRENT_LIST_DIR}/tests/test_torch_*.py")
foreach(_t IN LISTS _pf_torch_tests)
  get_filename_component(_n "${_t}" NAME_WE)
  add_test(NAME python_${_n} COMMAND "${PARAFLEX_PYTHON_EXECUTABLE}" -m unittest -v ${_n}
           WORKING_DIRECTORY "${CMAKE_CURRENT_LIST_DIR}/tests")
  set_tests_properties(python_${_n} PROPERTIES
    LABELS "python;torch"
    TIMEOUT 120
    PROCESSORS 2
    RESOURCE_LOCK paraflex_torch_processes
    ENVIRONMENT "PYTHONPATH=${PARAFLEX_PYTHON_MODULE_DIR};PYTHONDONTWRITEBYTECODE=1;OMP_NUM_THREADS=1")
endforeach()
