// Compiling a stretch of code for one instruction set (internal; not installed): the kernels that
// come in AVX-512F, AVX2 + FMA and portable versions (core/ops/conv_direct.cpp,
// core/ops/conv_fourier.cpp) include their code once per set between these markers, inside a
// namespace of its own, and pick a version at run time.
#pragma once

// Every function defined between BNLAB_TARGET_BEGIN(isa) and BNLAB_TARGET_END is compiled for
// `isa`: GCC's target pragma; clang ignores that one and takes an attribute pushed onto each
// function instead (the fuzzing build uses clang).
#define BNLAB_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define BNLAB_TARGET_BEGIN(isa) \
  BNLAB_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define BNLAB_TARGET_END BNLAB_PRAGMA(clang attribute pop)
#else
#define BNLAB_TARGET_BEGIN(isa) BNLAB_PRAGMA(GCC push_options) BNLAB_PRAGMA(GCC target(isa))
#define BNLAB_TARGET_END BNLAB_PRAGMA(GCC pop_options)
#endif
