// Which bnlab this is: run directories record both in config.json, so a result can be traced to
// the code that produced it.
#pragma once

namespace bnlab {

/// The library's version, "MAJOR.MINOR.PATCH" (the CMake project version).
const char* version();

/// The git commit the library was built from ("-dirty" appended when tracked files had
/// uncommitted changes; "unknown" outside a git checkout).
const char* git_commit();

}  // namespace bnlab
