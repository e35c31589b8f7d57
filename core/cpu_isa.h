/// @file
/// Which SIMD instruction set bnlab's run-time dispatched kernels use: the widest one the CPU (and
/// the OS) support, optionally capped by the environment variable BNLAB_MAX_ISA.
///
/// Every kernel that has AVX-512F or AVX2 code next to a portable one (the own GEMM, Winograd's
/// transforms, the direct and frequency-domain convolutions, batch norm's passes, the 2x2 max-pool)
/// asks cpu_isa() before taking its wide path, so one variable makes a whole process behave as on
/// a CPU without AVX-512 (or without AVX2): to test those paths on a wider machine, or to measure
/// what such a CPU would see, as ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY do for PyTorch.
/// The cap covers bnlab's own dispatch only. Code the compiler vectorized for the build machine
/// (BNLAB_NATIVE, -march=native) and OpenBLAS (OPENBLAS_CORETYPE) are outside it;
/// docs/performance.md shows how to emulate an AVX2-only CPU completely.
#pragma once

namespace bnlab {

/// Instruction sets in increasing width; each includes the ones before it.
enum class CpuIsa {
  portable,  ///< no run-time SIMD path: the code the compiler made for the build target
  avx2,      ///< AVX2 with FMA (8-float vectors)
  avx512,    ///< AVX-512F (16-float vectors)
};

/// The set this process's dispatched kernels use: min(cpu_isa_supported(), BNLAB_MAX_ISA). The
/// variable (portable, avx2 or avx512; unset or empty means no cap) is read once, at the first
/// call; a value outside those throws bnlab::Error naming the variable and the accepted values.
CpuIsa cpu_isa();

/// The widest set this CPU and OS support, regardless of BNLAB_MAX_ISA.
CpuIsa cpu_isa_supported();

/// "portable", "avx2" or "avx512": the spelling BNLAB_MAX_ISA accepts.
const char* cpu_isa_name(CpuIsa isa);

namespace detail {
/// BNLAB_MAX_ISA's value parsed: nullptr or "" is no cap (avx512); else one of the names above.
CpuIsa parse_max_isa(const char* value);
}  // namespace detail

}  // namespace bnlab
