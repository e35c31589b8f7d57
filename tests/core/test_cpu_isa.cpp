// cpu_isa() and BNLAB_MAX_ISA: the cap's parsing, that the cap never widens what the CPU has, and
// that the dispatched kernels (own GEMM, direct convolution) follow it. The kernels' own results
// under each cap are tested by running the ops, gemm and layers tests again with
// BNLAB_MAX_ISA=avx2 and =portable (CMakeLists.txt registers those runs).
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "apps/apps_test_util.h"
#include "core/blas.h"
#include "core/cpu_isa.h"
#include "core/error.h"
#include "core/ops/conv_direct.h"

using namespace bnlab;
using namespace apps_test;

TEST_CASE("cpu_isa: BNLAB_MAX_ISA accepts the three names, and unset or empty is no cap") {
  CHECK(detail::parse_max_isa(nullptr) == CpuIsa::avx512);
  CHECK(detail::parse_max_isa("") == CpuIsa::avx512);
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx2, CpuIsa::avx512}) {
    CAPTURE(cpu_isa_name(isa));
    CHECK(detail::parse_max_isa(cpu_isa_name(isa)) == isa);
  }
  CHECK(std::string(cpu_isa_name(CpuIsa::avx2)) == "avx2");
}

TEST_CASE("cpu_isa: any other value throws naming the variable, the value and the choices") {
  for (const char* bad : {"AVX2", "sse", "avx512 ", "avx-512", "native"}) {
    CAPTURE(bad);
    const std::string want =
        "BNLAB_MAX_ISA is '" + std::string(bad) + "'; expected portable, avx2 or avx512";
    CHECK_THROWS_WITH_AS(detail::parse_max_isa(bad), doctest::Contains(want.c_str()), Error);
  }
}

TEST_CASE("cpu_isa: the cap narrows what the CPU has and the kernels follow it") {
  const CpuIsa cap = detail::parse_max_isa(std::getenv("BNLAB_MAX_ISA"));
  const CpuIsa supported = cpu_isa_supported();
  CAPTURE(cpu_isa_name(cap));
  CAPTURE(cpu_isa_name(supported));
  CHECK(cpu_isa() == (cap < supported ? cap : supported));
  CHECK(gemm_avx512_available() == (cpu_isa() == CpuIsa::avx512));
  const char* gemm_env = std::getenv("BNLAB_GEMM");
  const bool openblas_forced = gemm_env != nullptr && std::string(gemm_env) == "openblas";
  CHECK((gemm_path() == GemmPath::avx512) == (cpu_isa() == CpuIsa::avx512 && !openblas_forced));
  CHECK(gemm_avx2_available() == (cpu_isa() >= CpuIsa::avx2));
  CHECK((gemm_path() == GemmPath::avx2) == (cpu_isa() == CpuIsa::avx2 && !openblas_forced));
  CHECK(static_cast<int>(detail::direct_conv_isa()) == static_cast<int>(cpu_isa()));
}

TEST_CASE("cpu_isa: bnlab info reports the cap, and a bad value exits 1 before any work") {
  CliResult capped = run_shell("BNLAB_MAX_ISA=portable " + shell_quote(BNLAB_CLI_PATH) + " info");
  CAPTURE(capped.output);
  CHECK(capped.exit_code == 0);
  CHECK(contains(capped.output, "SIMD:    portable"));
  CHECK(contains(capped.output, "GEMM:    openblas"));

  CliResult bad = run_shell("BNLAB_MAX_ISA=sse4 " + shell_quote(BNLAB_CLI_PATH) + " info");
  CAPTURE(bad.output);
  CHECK(bad.exit_code == 1);
  CHECK(contains(bad.output, "error: BNLAB_MAX_ISA is 'sse4'"));
  CHECK(!contains(bad.output, "SIMD:"));
}
