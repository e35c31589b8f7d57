# The fuzz regression replay: every kept finding and seed through the fuzz drivers, built with the
# normal compiler, and scripts/fuzz.sh's argument checks. The drivers and the apps code they use come
# from fuzz/sources.cmake.
include(fuzz/sources.cmake)
set(BNLAB_TEST_FUZZ_SOURCES
  tests/fuzz/test_fuzz_regressions.cpp
  tests/fuzz/test_fuzz_script.cpp
  ${BNLAB_FUZZ_SOURCES}
)
