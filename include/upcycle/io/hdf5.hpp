#pragma once
// HDF5 files holding tensors (checkpoints, golden test data). A thin layer over the HDF5 C API:
// the handles are RAII, HDF5's own error printing is switched off, and every failure throws
// upcycle::Error naming the file, the dataset and what was expected, so that a damaged or foreign
// file gives a readable message instead of an HDF5 stack dump or a crash.
//
// Dataset paths are absolute ("/model/blocks/03/attn/qkv/weight"); a path without a leading '/'
// is taken from the root. Stored element types map to DTypes as f32 <-> IEEE f32, f64 <-> IEEE
// f64, i32 <-> signed 32-bit, i64 <-> signed 64-bit (little-endian on disk, so h5py and h5ls read
// them as float32 / float64 / int32 / int64).
//
// Debian's libhdf5 is the serial, non-thread-safe build: use this layer from one thread at a time.
//
// hdf5.h stays out of this header: handles are held as std::int64_t (hid_t is a signed 64-bit
// integer since HDF5 1.10; src/io/hdf5.cpp checks that at compile time).
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "upcycle/core/tensor.hpp"

namespace upcycle::h5 {

class File {
 public:
  // Existing file, read-only / read-write. Throws when the file is missing, unreadable or not an
  // HDF5 file.
  static File open(const std::string& path);
  static File open_rw(const std::string& path);
  // New file; an existing one is truncated.
  static File create(const std::string& path);

  File() = default;
  ~File();
  File(File&& o) noexcept;
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  bool is_open() const { return id_ >= 0; }
  const std::string& path() const { return path_; }
  bool writable() const { return writable_; }
  std::int64_t id() const { return id_; }  // the hid_t, for code that needs the raw C API
  void flush();
  // Closes now and reports a failure (the destructor closes silently).
  void close();

 private:
  File(std::int64_t id, std::string path, bool writable);
  static File open_existing(const std::string& path, bool writable);
  std::int64_t id_ = -1;
  std::string path_;
  bool writable_ = false;
};

// True when `path` names a dataset (false for a group, a missing link or a missing parent).
bool has_dataset(const File& file, const std::string& path);
bool has_group(const File& file, const std::string& path);
// Paths of all datasets below `group` (recursively), sorted.
std::vector<std::string> list_datasets(const File& file, const std::string& group = "/");

// Shape and dtype of a stored dataset without reading it.
Shape dataset_shape(const File& file, const std::string& path);
DType dataset_dtype(const File& file, const std::string& path);

// Reads a dataset as stored (f32/f64/i32/i64 keep their dtype; any other element type throws).
// A rank-0 (scalar) dataset becomes a tensor of shape [1].
Tensor read_tensor(const File& file, const std::string& path);
// Reads and converts to `dtype` (any stored integer or floating type).
Tensor read_tensor(const File& file, const std::string& path, DType dtype);
// Reads, converts to `dtype`, and throws unless the stored shape equals `expected`.
Tensor read_tensor(const File& file, const std::string& path, DType dtype, const Shape& expected);

// Writes `t` (copied to the host when needed) to `path`, creating the intermediate groups. An
// existing dataset at `path` is replaced.
void write_tensor(File& file, const std::string& path, const Tensor& t);

// Attributes on an existing object (group or dataset; "/" is the root). Strings are stored as
// variable-length UTF-8 (h5py reads them as str); writing replaces an existing attribute.
void write_attribute(File& file, const std::string& object, const std::string& name,
                     const std::string& value);
void write_attribute(File& file, const std::string& object, const std::string& name,
                     std::int64_t value);
void write_attribute(File& file, const std::string& object, const std::string& name, double value);
// Any other integer type (int, size_t, ...) is stored as i64; without this, `5` would be
// ambiguous between the i64 and the double overloads.
template <class I, std::enable_if_t<std::is_integral_v<I>, int> = 0>
void write_attribute(File& file, const std::string& object, const std::string& name, I value) {
  write_attribute(file, object, name, static_cast<std::int64_t>(value));
}
bool has_attribute(const File& file, const std::string& object, const std::string& name);
std::string read_string_attribute(const File& file, const std::string& object,
                                  const std::string& name);
std::int64_t read_int_attribute(const File& file, const std::string& object,
                                const std::string& name);
double read_double_attribute(const File& file, const std::string& object, const std::string& name);

}  // namespace upcycle::h5
