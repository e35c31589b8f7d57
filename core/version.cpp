#include "core/version.h"

// BNLAB_VERSION comes from CMakeLists.txt (the project version); git_commit() is generated into the
// build tree by cmake/build_info.cmake.
const char* bnlab::version() { return BNLAB_VERSION; }
