#include "upcycle/data/fashion_mnist.hpp"

#include <zlib.h>

#include <filesystem>
#include <memory>

#include "upcycle/core/error.hpp"

namespace upcycle {

namespace {
struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};

void read_exact(gzFile f, void* dst, std::size_t bytes, const std::string& path, const char* what) {
  std::size_t done = 0;
  auto* p = static_cast<unsigned char*>(dst);
  while (done < bytes) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(bytes - done, 1u << 30));
    const int got = gzread(f, p + done, chunk);
    if (got <= 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      UPCYCLE_THROW(path, ": truncated or corrupt IDX file while reading ", what, " (read ", done, " of ",
                    bytes, " bytes", err ? std::string("; zlib: ") + msg : std::string(), ")");
    }
    done += static_cast<std::size_t>(got);
  }
}

std::uint32_t big_endian(const unsigned char b[4]) {
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
}
}  // namespace

std::vector<std::uint8_t> read_idx_gz(const std::string& path, std::vector<std::int64_t>& dims) {
  if (!std::filesystem::exists(path))
    UPCYCLE_THROW(path, ": file not found (Fashion-MNIST comes from the Debian package "
                        "dataset-fashion-mnist: apt-get install dataset-fashion-mnist)");
  std::unique_ptr<gzFile_s, GzCloser> f(gzopen(path.c_str(), "rb"));
  UPCYCLE_CHECK(f != nullptr, path, ": cannot open");
  unsigned char header[4];
  read_exact(f.get(), header, 4, path, "the magic number");
  // IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
  if (header[0] != 0 || header[1] != 0 || header[2] != 0x08 || header[3] == 0 || header[3] > 4)
    UPCYCLE_THROW(path, ": not an unsigned-byte IDX file (magic ", int(header[0]), ",", int(header[1]), ",",
                  int(header[2]), ",", int(header[3]), "; expected 0,0,8,ndim)");
  dims.assign(header[3], 0);
  std::int64_t total = 1;
  for (auto& d : dims) {
    unsigned char b[4];
    read_exact(f.get(), b, 4, path, "the dimensions");
    d = big_endian(b);
    UPCYCLE_CHECK(d > 0 && d < (1 << 28), path, ": implausible dimension ", d);
    total *= d;
  }
  std::vector<std::uint8_t> data(static_cast<std::size_t>(total));
  read_exact(f.get(), data.data(), data.size(), path, "the data");
  return data;
}

ImageDataset load_fashion_mnist(const std::string& dir, const std::string& split) {
  UPCYCLE_CHECK(split == "train" || split == "test", "Fashion-MNIST split must be train or test, got ", split);
  const std::string prefix = dir + "/" + (split == "train" ? "train" : "t10k");
  std::vector<std::int64_t> idims, ldims;
  ImageDataset ds;
  ds.pixels = read_idx_gz(prefix + "-images-idx3-ubyte.gz", idims);
  const auto labels = read_idx_gz(prefix + "-labels-idx1-ubyte.gz", ldims);
  UPCYCLE_CHECK(idims.size() == 3, prefix, "-images-idx3-ubyte.gz: expected 3 dimensions, got ", idims.size());
  UPCYCLE_CHECK(ldims.size() == 1 && ldims[0] == idims[0], prefix, "-labels-idx1-ubyte.gz: expected ", idims[0],
                " labels");
  ds.count = idims[0];
  ds.height = idims[1];
  ds.width = idims[2];
  ds.labels.resize(labels.size());
  for (std::size_t i = 0; i < labels.size(); ++i) {
    UPCYCLE_CHECK(labels[i] < ds.num_classes, prefix, "-labels-idx1-ubyte.gz: label ", int(labels[i]),
                  " at index ", i, " is not a class in [0, ", ds.num_classes, ")");
    ds.labels[i] = labels[i];
  }
  return ds;
}

}  // namespace upcycle
