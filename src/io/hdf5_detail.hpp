#pragma once
// Internals shared by the src/io/hdf5*.cpp files: an owning handle for HDF5 identifiers, the
// translation of HDF5's error stack into upcycle::Error, path normalisation and type mapping.
#include <hdf5.h>

#include <string>
#include <type_traits>

#include "upcycle/core/dtype.hpp"
#include "upcycle/core/error.hpp"

namespace upcycle::h5::detail {

static_assert(std::is_same_v<hid_t, std::int64_t>,
              "upcycle/io/hdf5.hpp stores hid_t as std::int64_t (HDF5 >= 1.10)");

// Owns one HDF5 identifier (file, group, dataset, dataspace, datatype, attribute, property list)
// and closes it with the matching H5?close. Predefined types (H5T_NATIVE_*) must not be wrapped.
class Hid {
 public:
  Hid() = default;
  explicit Hid(hid_t id) : id_(id) {}
  ~Hid() { reset(); }
  Hid(Hid&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      o.id_ = -1;
    }
    return *this;
  }
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();

 private:
  hid_t id_ = -1;
};

// Switches off HDF5's automatic printing of its error stack (we throw instead). Cheap; called on
// every entry into the layer because the setting is per thread in thread-safe HDF5 builds.
void silence_errors();

// "HDF5 file 'F', dataset 'D': " (the dataset part only when `object` is not empty).
std::string where(const std::string& file, const std::string& object, const char* kind = "dataset");
// " (HDF5: outermost message: innermost message)" from the current error stack, which it clears;
// empty when the stack is empty.
std::string reason();

// What the current error stack says, taken off it (the stack is cleared).
struct Failure {
  std::string reason;              // as reason() gives it
  bool checksum_mismatch = false;  // a Fletcher32 (data) or metadata checksum did not match
  bool truncated = false;          // the file is shorter than its superblock says
};
Failure take_failure();
// Throws for the HDF5 call that just failed: `context` (from where()) + `what` + HDF5's reason. A
// checksum mismatch or a truncated file on the stack makes it a CorruptDataError that says so, so
// that damage is not reported as a missing object or a generic read error; otherwise an Error
// with `hint` after `what`.
[[noreturn]] void throw_failure(const std::string& context, const std::string& what, const std::string& hint = "");

// File access properties of every file the layer creates or opens for writing: the library
// version bounds pinned to 1.10 (see File::create).
Hid writing_access();

// Absolute path with single separators and no trailing '/': "a//b/" -> "/a/b"; "" -> "/".
std::string normalize(const std::string& path);
// The parent group of a normalised path ("/a/b" -> "/a", "/a" -> "/").
std::string parent_of(const std::string& path);

enum class ObjectKind { missing, group, dataset, other };
// What `path` (normalised) names, checking each parent link first so that a missing parent is
// "missing" rather than an HDF5 error.
ObjectKind object_kind(hid_t file, const std::string& path);

// Memory (native) and on-disk (little-endian) types for a DType; bf16 throws.
hid_t memory_type(DType dtype);
hid_t file_type(DType dtype);
// The DType a stored type reads as without conversion; false when there is none.
bool stored_dtype(hid_t type, DType& out);
// Readable name of a stored type ("unsigned 8-bit integer", "16-bit float", "string", ...).
std::string describe_type(hid_t type);

}  // namespace upcycle::h5::detail
