# The fuzz drivers and the apps code the grid-spec driver links (apps/ablation.cpp and what it
# needs: every apps source but the CLI's, which need CLI11), listed once for both the libFuzzer build
# (fuzz/CMakeLists.txt) and the regression replay in the test suite (tests/fuzz/sources.cmake).
include("${CMAKE_CURRENT_LIST_DIR}/../apps/sources.cmake")
set(BNLAB_FUZZ_SOURCES fuzz/drivers.cpp ${BNLAB_APP_SOURCES})
list(FILTER BNLAB_FUZZ_SOURCES EXCLUDE REGEX "apps/(main|cmd_[a-z_]+|config_flags)\\.cpp$")
