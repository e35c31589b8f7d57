# The fuzz drivers, listed once for both the libFuzzer build (fuzz/CMakeLists.txt) and the
# regression replay in the test suite (tests/fuzz/sources.cmake). The code they drive (data/ and
# train/ablation.cpp's grid parser) is in libbnlab.
set(BNLAB_FUZZ_SOURCES fuzz/drivers.cpp)
