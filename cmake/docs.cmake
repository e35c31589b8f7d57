# The API reference: `cmake --build <build> --target docs` runs Doxygen over the public headers
# (BNLAB_PUBLIC_HEADERS, from cmake/install.cmake) and the guide (docs/guide/*.md) and writes
# <build>/docs/html/index.html. Only defined when doxygen is found. scripts/docs.sh builds it with
# warnings as errors (BNLAB_DOCS_WERROR), as CI does: an undocumented public class, function,
# member or parameter fails it.
find_package(Doxygen QUIET)
if(NOT DOXYGEN_FOUND)
  message(STATUS "bnlab: doxygen not found, no `docs` target (apt-get install doxygen)")
  return()
endif()

option(BNLAB_DOCS_WERROR "Treat Doxygen warnings (e.g. undocumented public API) as errors" OFF)
set(BNLAB_DOXYGEN_WARN_AS_ERROR NO)
if(BNLAB_DOCS_WERROR)
  set(BNLAB_DOXYGEN_WARN_AS_ERROR FAIL_ON_WARNINGS)  # Doxygen 1.9.3+: report them all, then fail
endif()

file(GLOB BNLAB_GUIDE_PAGES CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/docs/guide/*.md")
list(SORT BNLAB_GUIDE_PAGES)
set(BNLAB_DOXYGEN_INPUT "")
foreach(header IN LISTS BNLAB_PUBLIC_HEADERS)
  string(APPEND BNLAB_DOXYGEN_INPUT " \\\n    \"${PROJECT_SOURCE_DIR}/${header}\"")
endforeach()
foreach(page IN LISTS BNLAB_GUIDE_PAGES)
  string(APPEND BNLAB_DOXYGEN_INPUT " \\\n    \"${page}\"")
endforeach()
configure_file(docs/Doxyfile.in "${PROJECT_BINARY_DIR}/docs/Doxyfile" @ONLY)

list(TRANSFORM BNLAB_PUBLIC_HEADERS PREPEND "${PROJECT_SOURCE_DIR}/" OUTPUT_VARIABLE bnlab_doc_deps)
add_custom_command(
  OUTPUT "${PROJECT_BINARY_DIR}/docs/html/index.html"
  COMMAND Doxygen::doxygen "${PROJECT_BINARY_DIR}/docs/Doxyfile"
  DEPENDS "${PROJECT_BINARY_DIR}/docs/Doxyfile" ${bnlab_doc_deps} ${BNLAB_GUIDE_PAGES}
  WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
  COMMENT "Doxygen: API reference -> ${PROJECT_BINARY_DIR}/docs/html/index.html"
  VERBATIM)
add_custom_target(docs DEPENDS "${PROJECT_BINARY_DIR}/docs/html/index.html")
