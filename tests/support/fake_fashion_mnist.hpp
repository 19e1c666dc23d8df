#pragma once
// A small Fashion-MNIST look-alike for machines without the dataset (the GPU test machine): gzipped
// IDX files of 28x28 images whose mean brightness depends on the label, so a model has something
// to learn. Deterministic (a fixed LCG), so every run sees the same images.
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace upcycle::testing {

// An IDX file (big-endian dims after the magic), gzipped as the reader expects.
inline void write_idx_gz(const std::filesystem::path& path, const std::vector<std::uint32_t>& dims,
                         const std::vector<unsigned char>& data) {
  std::vector<unsigned char> bytes{0, 0, 8, static_cast<unsigned char>(dims.size())};
  for (std::uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<unsigned char>(d >> s));
  bytes.insert(bytes.end(), data.begin(), data.end());
  gzFile f = gzopen(path.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("cannot write " + path.string());
  const int written = gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
  if (written != static_cast<int>(bytes.size())) throw std::runtime_error("short write to " + path.string());
}

// train-* with `train_images` images and t10k-* with `test_images`, in `dir`.
inline void write_fake_fashion_mnist(const std::filesystem::path& dir, std::uint32_t train_images,
                                     std::uint32_t test_images) {
  std::filesystem::create_directories(dir);
  for (const auto& [prefix, n] :
       {std::pair<std::string, std::uint32_t>{"train", train_images}, {"t10k", test_images}}) {
    std::vector<unsigned char> px(static_cast<std::size_t>(n) * 28 * 28), labels(n);
    std::uint32_t h = 12345;
    for (std::uint32_t i = 0; i < n; ++i) {
      labels[i] = static_cast<unsigned char>(i * 7 % 10);
      for (std::size_t p = 0; p < 28 * 28; ++p) {
        h = h * 1664525u + 1013904223u;
        px[i * 28 * 28 + p] = static_cast<unsigned char>((h >> 24) / 2 + labels[i] * 12);
      }
    }
    write_idx_gz(dir / (prefix + "-images-idx3-ubyte.gz"), {n, 28, 28}, px);
    write_idx_gz(dir / (prefix + "-labels-idx1-ubyte.gz"), {n}, labels);
  }
}

}  // namespace upcycle::testing
