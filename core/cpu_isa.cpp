// cpu_isa(): the CPU's widest SIMD set, capped by BNLAB_MAX_ISA, decided once per process.
//
// Decided once because what consults it keeps per-process choices made for one width (the GEMM
// path, read once by gemm_path()): a cap that changed mid-process would mix them, and a run's
// numerics would depend on when it changed.
#include "core/cpu_isa.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace bnlab {

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::portable:
      return "portable";
    case CpuIsa::avx2:
      return "avx2";
    case CpuIsa::avx512:
      return "avx512";
  }
  return "?";
}

CpuIsa cpu_isa_supported() {
  // libgcc's checks include the OS's consent (XCR0 saves the ymm / zmm state), not only CPUID.
  static const CpuIsa supported = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return CpuIsa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::avx2;
    return CpuIsa::portable;
  }();
  return supported;
}

namespace detail {
CpuIsa parse_max_isa(const char* value) {
  if (value == nullptr || *value == '\0') return CpuIsa::avx512;
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx2, CpuIsa::avx512}) {
    if (std::strcmp(value, cpu_isa_name(isa)) == 0) return isa;
  }
  BNLAB_FAIL("BNLAB_MAX_ISA is '", value, "'; expected portable, avx2 or avx512 (or unset)");
}
}  // namespace detail

CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    const CpuIsa cap = detail::parse_max_isa(std::getenv("BNLAB_MAX_ISA"));
    const CpuIsa supported = cpu_isa_supported();
    return cap < supported ? cap : supported;
  }();
  return isa;
}

}  // namespace bnlab
