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
// Integrity: every file the layer writes is checksummed throughout, and every read verifies.
//  - Tensors: each non-empty dataset is chunked (chunk_shape) with HDF5's Fletcher32 filter, so
//    each chunk carries a checksum that H5Dread checks; a rank-0 (scalar) tensor is stored compact,
//    inside its object header. Empty tensors have no stored data.
//  - Metadata: files are created with the library version bounds pinned to 1.10, so the superblock,
//    object headers (and the attributes and compact data in them), group link storage and the chunk
//    indexes all carry checksums (the HDF5 1.10 file format: h5py, h5ls and h5dump of HDF5 1.10 or
//    later read it).
//  - Strings: a string attribute's text lives in HDF5's global heap, which has no checksum, so
//    write_attribute stores a CRC-32 of it beside it as the attribute "<name>.crc32" (unsigned
//    32-bit), which read_string_attribute checks when present.
// A checksum that does not match, and a file shorter than HDF5 recorded (truncated), throw
// CorruptDataError naming the file and the object.
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

// A read whose checksum did not match, or of a truncated file: the bytes on disk are not those
// that were written.
class CorruptDataError : public Error {
 public:
  using Error::Error;
};

class File {
 public:
  // Existing file, read-only / read-write. Throws when the file is missing, unreadable or not an
  // HDF5 file.
  static File open(const std::string& path);
  static File open_rw(const std::string& path);
  // New file; an existing one is truncated. Written in the HDF5 1.10 file format (the version
  // bounds are pinned, not "latest", so a file does not change format with the library it was
  // built against); open_rw keeps the same bounds for what it adds.
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
// existing dataset at `path` is replaced. Checksummed as the header says.
void write_tensor(File& file, const std::string& path, const Tensor& t);

// The largest chunk write_tensor makes, in bytes (see chunk_shape).
inline constexpr std::int64_t kMaxChunkBytes = std::int64_t{16} << 20;
// The chunk dimensions write_tensor uses for a tensor of `shape` (at least one dim, no zero
// extent) with elements of `element_bytes`: whole trailing dims, as many as fit in kMaxChunkBytes,
// then as many slices of the next dim as fit (at least one), then 1 for the leading dims. An
// expert tensor [E, D, F] is thus chunked by whole experts (several per chunk when they are
// small), and a chunk is one contiguous run of the row-major tensor.
std::vector<std::int64_t> chunk_shape(const Shape& shape, std::int64_t element_bytes);
// Whether the stored data of a dataset is covered by a checksum: a Fletcher32 filter, compact
// storage (inside the checksummed object header of a file written by this layer) or no data.
bool dataset_has_checksum(const File& file, const std::string& path);

// Attributes on an existing object (group or dataset; "/" is the root). Strings are stored as
// variable-length UTF-8 (h5py reads them as str) with their CRC-32 beside them (see the header);
// writing replaces an existing attribute.
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
