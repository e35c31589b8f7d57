# The 2-rank data-parallel tests (tests/mpi/test_data_parallel.cpp), only with BNLAB_MPI. They are
# doctest cases of bnlab_tests like any other (scripts/test.sh requires every ctest entry to be one
# bnlab_tests case), each a driver that launches `mpirun --oversubscribe -np 2 bnlab train` itself
# with Open MPI's allow-root variables and mpirun's own --timeout against a hung job.
target_sources(bnlab_tests PRIVATE tests/mpi/test_data_parallel.cpp)
target_compile_definitions(bnlab_tests PRIVATE BNLAB_MPIEXEC="${MPIEXEC_EXECUTABLE}")
# One MPI job at a time under ctest -j (why: tests/mpi/mpi_serial.cmake), set by a script ctest
# includes after the discovered tests, since their names exist only then.
set_property(DIRECTORY ${CMAKE_SOURCE_DIR} APPEND PROPERTY TEST_INCLUDE_FILES
             ${CMAKE_SOURCE_DIR}/tests/mpi/mpi_serial.cmake)
