// The main() of every gpu test program: without a usable CUDA device it prints why and exits 77,
// which CTest (SKIP_RETURN_CODE 77) reports as Skipped rather than Passed.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "upcycle/backend/devices.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string why;
  if (!upcycle::cuda_usable(&why)) {
    std::printf("%s: SKIPPED (exit 77): no usable CUDA device: %s\n", argc > 0 ? argv[0] : "gpu test", why.c_str());
    return 77;
  }
  return RUN_ALL_TESTS();
}
