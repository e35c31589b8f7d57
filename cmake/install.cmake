# Install rules: `cmake --install <build> --prefix <prefix>` puts
#   <prefix>/include/bnlab/{bnlab.h, core/, layers/, optim/, data/, train/}  the public headers
#   <prefix>/lib/libbnlab.a                                          the library
#   <prefix>/lib/cmake/bnlab/bnlab{Config,ConfigVersion,Targets}.cmake  find_package(bnlab CONFIG)
#   <prefix>/lib/pkgconfig/bnlab.pc                                   pkg-config --cflags --libs bnlab
#   <prefix>/bin/bnlab                                               the command
# (lib/ is CMAKE_INSTALL_LIBDIR). docs/install.md explains how to use them.
#
# Include layout. The library's own sources include each other as "core/tensor.h", "layers/module.h";
# rewriting every include to "bnlab/core/tensor.h" would touch every file for no gain inside the tree.
# So the headers are installed under include/bnlab/ and the package puts TWO directories on the
# include path: <prefix>/include, for the consumer's `#include <bnlab/bnlab.h>` (or
# <bnlab/layers/module.h>, ...), and <prefix>/include/bnlab, through which our headers find each
# other. Consumers should write the bnlab/ form. The build tree offers the same two forms: the source
# directory, and <build>/include/bnlab, a symlink to it.
#
# Public headers are every .h under core/, layers/, optim/, data/, train/ (plus bnlab.h) except the internal
# ones listed in BNLAB_INTERNAL_HEADERS: a new header is public unless listed there. A public header
# must include only public headers; scripts/test_install.sh compiles each installed header on its
# own against the install prefix, which fails if one includes an internal (uninstalled) header.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

add_library(bnlab::bnlab ALIAS bnlab)  # the same name for add_subdirectory users as for installs

# Internal headers: implementation details no public header may include.
set(BNLAB_INTERNAL_HEADERS
  core/ops/fast_math.h core/ops/unary_op.h  # kernels shared by core/ops/*.cpp (detail)
  core/parallel.h  # OpenMP loops that enter the team only when it pays (detail)
  core/ops/pool_general.h  # max_pool2d's general path, for the 2x2 kernels' tests (detail)
  core/ops/max_pool2x2_avx512.h  # the 2x2 path's AVX-512F row kernels (detail)
  core/ops/max_pool2x2_avx2.h  # the 2x2 forward's AVX2 row kernel (detail)
  core/ops/max_pool2x2_places.h  # the 2x2 kernels' place-byte stores (detail)
  core/gemm_avx512.h  # the AVX-512 SGEMM behind bnlab::gemm (detail)
  core/gemm_avx2.h  # the AVX2 SGEMM behind bnlab::gemm (detail)
  core/gemm_common.h  # the loops, buffers and thread split the own SGEMMs share (detail)
  core/ops/conv_path.h  # which implementation computes a conv2d, and BNLAB_CONV (detail)
  core/ops/conv_winograd.h  # conv2d's Winograd F(4x4, 3x3) path (detail)
  core/ops/conv_direct.h  # conv2d's direct kernels for thin layers (detail)
  core/ops/conv_fourier.h  # conv2d's frequency-domain path for small images, large kernels (detail)
  core/ops/isa_target.h  # compiling a stretch of code for one instruction set (detail)
  core/ops/prefetch.h  # software prefetch of a run of memory, always inlined (detail)
  core/ops/finite.h  # the exponent-bit finiteness scan of the conv paths and the guard (detail)
  core/region_error.h  # carrying an exception out of an OpenMP region (detail)
  core/ops/thread_scratch.h  # scratch for an op's OpenMP threads (detail)
  data/byte_reader.h  # bounded, gzip-transparent file reads behind the IDX/CIFAR parsers (detail)
  # The Trainer's and the CLI's parts: the public train/ API is models.h, trainer.h, ablation.h,
  # study.h and plot.h (TrainResult::plots).
  train/checkpoint.h train/data_parallel.h train/interrupt.h train/knobs.h train/mechanism.h train/nonfinite_guard.h
  train/progress.h train/report_text.h train/run_dir.h
)
file(GLOB_RECURSE BNLAB_PUBLIC_HEADERS CONFIGURE_DEPENDS RELATIVE "${PROJECT_SOURCE_DIR}"
     "${PROJECT_SOURCE_DIR}/core/*.h" "${PROJECT_SOURCE_DIR}/layers/*.h"
     "${PROJECT_SOURCE_DIR}/optim/*.h" "${PROJECT_SOURCE_DIR}/data/*.h"
     "${PROJECT_SOURCE_DIR}/train/*.h")
list(REMOVE_ITEM BNLAB_PUBLIC_HEADERS ${BNLAB_INTERNAL_HEADERS})
list(PREPEND BNLAB_PUBLIC_HEADERS bnlab.h)
list(SORT BNLAB_PUBLIC_HEADERS)

# <bnlab/...> in the build tree: <build>/include/bnlab -> the source directory.
file(MAKE_DIRECTORY "${PROJECT_BINARY_DIR}/include")
file(CREATE_LINK "${PROJECT_SOURCE_DIR}" "${PROJECT_BINARY_DIR}/include/bnlab" SYMBOLIC)
target_include_directories(bnlab PUBLIC
  $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/bnlab>)
# OpenBLAS (its OpenMP build) and stb: bnlabConfig.cmake defines these two targets in the consumer's
# project, finding the libraries again there rather than freezing this machine's paths into
# bnlabTargets.cmake. (The build tree links the same libraries directly; see CMakeLists.txt.)
target_link_libraries(bnlab PUBLIC $<INSTALL_INTERFACE:bnlab::openblas_openmp>
                                   $<INSTALL_INTERFACE:bnlab::stb>)

foreach(header IN LISTS BNLAB_PUBLIC_HEADERS)
  get_filename_component(dir "${header}" DIRECTORY)
  install(FILES "${header}" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/bnlab/${dir}")
endforeach()

install(TARGETS bnlab EXPORT bnlabTargets ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}")
install(TARGETS bnlab_cli RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")

set(BNLAB_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/bnlab")
install(EXPORT bnlabTargets NAMESPACE bnlab:: DESTINATION "${BNLAB_CMAKE_DIR}")
set(BNLAB_CONFIG_MPI_NOTE "")
if(BNLAB_MPI)
  set(BNLAB_CONFIG_MPI_NOTE ", MPI")
endif()
configure_package_config_file(cmake/bnlabConfig.cmake.in "${PROJECT_BINARY_DIR}/bnlabConfig.cmake"
                              INSTALL_DESTINATION "${BNLAB_CMAKE_DIR}")
# 0.x: minor versions may break the API, so a request for 0.1 accepts only 0.1.*.
write_basic_package_version_file("${PROJECT_BINARY_DIR}/bnlabConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/bnlabConfig.cmake"
              "${PROJECT_BINARY_DIR}/bnlabConfigVersion.cmake"
        DESTINATION "${BNLAB_CMAKE_DIR}")

# pkg-config. prefix is derived from the .pc file's own location (${pcfiledir}), so the file stays
# right wherever --prefix puts the install. libbnlab is static, so its dependencies go in Libs.
file(RELATIVE_PATH BNLAB_PC_TO_PREFIX "/root/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/root")
string(REGEX REPLACE "/$" "" BNLAB_PC_TO_PREFIX "${BNLAB_PC_TO_PREFIX}")
set(BNLAB_PC_LIBS "${OpenBLAS_LIBRARIES} -Wl,-rpath,${BNLAB_OPENBLAS_LIBDIR} ${STB_LIBRARY}")
if(BNLAB_MPI)
  string(JOIN " " BNLAB_PC_MPI ${MPI_CXX_LIBRARIES})
  string(APPEND BNLAB_PC_LIBS " ${BNLAB_PC_MPI}")
endif()
string(APPEND BNLAB_PC_LIBS " ${OpenMP_CXX_FLAGS}")
configure_file(cmake/bnlab.pc.in "${PROJECT_BINARY_DIR}/bnlab.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/bnlab.pc" DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
