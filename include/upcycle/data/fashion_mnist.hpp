#pragma once
// Fashion-MNIST from the IDX files (gzip) of the Debian package dataset-fashion-mnist.
#include <cstdint>
#include <string>
#include <vector>

namespace upcycle {

struct ImageDataset {
  std::int64_t count = 0, height = 0, width = 0;
  std::vector<std::uint8_t> pixels;  // [count, height, width], row-major
  std::vector<std::int64_t> labels;  // [count]
  int num_classes = 10;
};

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// split = "train" or "test". Errors name the file and say which package provides it.
ImageDataset load_fashion_mnist(const std::string& dir, const std::string& split);

// Reads one gzip-compressed IDX file (unsigned bytes); dims receives its dimensions.
std::vector<std::uint8_t> read_idx_gz(const std::string& path, std::vector<std::int64_t>& dims);

}  // namespace upcycle
