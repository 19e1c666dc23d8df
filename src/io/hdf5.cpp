// HDF5 files: handles, error translation, paths and object lookup. Tensors and attributes live in
// hdf5_tensor.cpp and hdf5_attribute.cpp.
#include "upcycle/io/hdf5.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "hdf5_detail.hpp"

namespace upcycle::h5 {

namespace detail {

void Hid::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: H5Idec_ref(id_); break;
  }
  id_ = -1;
}

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string where(const std::string& file, const std::string& object, const char* kind) {
  std::string s = "HDF5 file '" + file + "'";
  if (!object.empty()) s += std::string(", ") + kind + " '" + object + "'";
  return s + ": ";
}

namespace {
struct Walk {
  std::vector<std::string> messages;  // outermost (the API call) first
  bool checksum_mismatch = false, truncated = false;
};

herr_t collect_message(unsigned, const H5E_error2_t* e, void* out) {
  if (!e || !e->desc || !*e->desc) return 0;
  auto* walk = static_cast<Walk*>(out);
  walk->messages.emplace_back(e->desc);
  // HDF5 has no error code of its own for a failed checksum (the Fletcher32 filter says "data
  // error detected by Fletcher32 checksum", the metadata cache "incorrect metadata checksum ...")
  // or a file shorter than its superblock records ("truncated file: eof = ..."), so the messages
  // are what tells damage from other failures; these wordings hold from 1.10 through 1.14.
  if (std::strstr(e->desc, "checksum") != nullptr) walk->checksum_mismatch = true;
  if (std::strstr(e->desc, "truncated file") != nullptr) walk->truncated = true;
  return 0;
}
}  // namespace

Failure take_failure() {
  Walk walk;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, &collect_message, &walk);
  H5Eclear2(H5E_DEFAULT);
  Failure f;
  f.checksum_mismatch = walk.checksum_mismatch;
  f.truncated = walk.truncated;
  if (walk.messages.empty()) return f;
  // The API-level message says what failed, the innermost one why ("file signature not found").
  f.reason = " (HDF5: " + walk.messages.front();
  if (walk.messages.size() > 1 && walk.messages.back() != walk.messages.front()) f.reason += ": " + walk.messages.back();
  f.reason += ")";
  return f;
}

std::string reason() { return take_failure().reason; }

namespace {
[[noreturn]] void throw_corrupt(const std::string& context, const std::string& what, const std::string& why) {
  throw CorruptDataError(__FILE__, __LINE__,
                         context + what + ": the data is corrupt (a checksum does not match what was written)" + why);
}
}  // namespace

void throw_failure(const std::string& context, const std::string& what, const std::string& hint) {
  const Failure f = take_failure();
  if (f.checksum_mismatch) throw_corrupt(context, what, f.reason);
  if (f.truncated)
    throw CorruptDataError(__FILE__, __LINE__,
                           context + what + ": the file is truncated (shorter than when it was written)" + f.reason);
  UPCYCLE_THROW(context, what, hint, f.reason);
}

Hid writing_access() {
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS));
  if (!fapl.valid() || H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110) < 0)
    UPCYCLE_THROW("HDF5: cannot set up the file access properties", reason());
  return fapl;
}

std::string normalize(const std::string& path) {
  std::string out = "/";
  for (char c : path) {
    if (c == '/' && out.back() == '/') continue;
    out.push_back(c);
  }
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
}

namespace {
// The name a file was opened under, for messages of functions that get only its identifier.
std::string file_name(hid_t file) {
  const ssize_t n = H5Fget_name(file, nullptr, 0);
  if (n <= 0) return "?";
  std::string name(static_cast<std::size_t>(n) + 1, '\0');
  H5Fget_name(file, name.data(), name.size());
  name.resize(static_cast<std::size_t>(n));
  return name;
}
}  // namespace

ObjectKind object_kind(hid_t file, const std::string& path) {
  if (path == "/") return ObjectKind::group;
  // H5Lexists fails (rather than returning false) when a parent is missing, so walk down.
  // A failure that is a checksum mismatch is corruption, not absence: it throws.
  const auto missing_unless_corrupt = [&](const std::string& object) {
    const Failure f = take_failure();
    if (f.checksum_mismatch) throw_corrupt(where(file_name(file), object, "object"), "cannot look it up", f.reason);
    return ObjectKind::missing;
  };
  for (std::size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
    const std::string prefix = path.substr(0, pos);
    const htri_t exists = H5Lexists(file, prefix.c_str(), H5P_DEFAULT);
    if (exists == 0) return ObjectKind::missing;
    if (exists < 0) return missing_unless_corrupt(prefix);
    if (pos == std::string::npos) break;
  }
  Hid obj(H5Oopen(file, path.c_str(), H5P_DEFAULT));
  if (!obj.valid()) return missing_unless_corrupt(path);  // e.g. a dangling soft link
  switch (H5Iget_type(obj.get())) {
    case H5I_GROUP: return ObjectKind::group;
    case H5I_DATASET: return ObjectKind::dataset;
    default: return ObjectKind::other;
  }
}

hid_t memory_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return H5T_NATIVE_FLOAT;
    case DType::f64: return H5T_NATIVE_DOUBLE;
    case DType::i32: return H5T_NATIVE_INT32;
    case DType::i64: return H5T_NATIVE_INT64;
    default: UPCYCLE_THROW("HDF5 I/O does not support dtype ", dtype_name(dtype));
  }
}

hid_t file_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return H5T_IEEE_F32LE;
    case DType::f64: return H5T_IEEE_F64LE;
    case DType::i32: return H5T_STD_I32LE;
    case DType::i64: return H5T_STD_I64LE;
    default: UPCYCLE_THROW("HDF5 I/O does not support dtype ", dtype_name(dtype));
  }
}

bool stored_dtype(hid_t type, DType& out) {
  const H5T_class_t cls = H5Tget_class(type);
  const std::size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT && (size == 4 || size == 8)) {
    out = size == 4 ? DType::f32 : DType::f64;
    return true;
  }
  if (cls == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_2 && (size == 4 || size == 8)) {
    out = size == 4 ? DType::i32 : DType::i64;
    return true;
  }
  return false;
}

std::string describe_type(hid_t type) {
  const std::size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return std::string(H5Tget_sign(type) == H5T_SGN_NONE ? "unsigned " : "signed ") +
             std::to_string(bits) + "-bit integer";
    case H5T_FLOAT: return std::to_string(bits) + "-bit float";
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "variable-length sequence";
    default: return "unsupported element type";
  }
}

}  // namespace detail

using detail::Hid;
using detail::reason;
using detail::where;

File::File(std::int64_t id, std::string path, bool writable)
    : id_(id), path_(std::move(path)), writable_(writable) {}

File::~File() {
  if (id_ >= 0) H5Fclose(id_);
}

File::File(File&& o) noexcept : id_(o.id_), path_(std::move(o.path_)), writable_(o.writable_) {
  o.id_ = -1;
}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = o.id_;
    path_ = std::move(o.path_);
    writable_ = o.writable_;
    o.id_ = -1;
  }
  return *this;
}

File File::open(const std::string& path) { return open_existing(path, false); }
File File::open_rw(const std::string& path) { return open_existing(path, true); }

File File::create(const std::string& path) {
  detail::silence_errors();
  const Hid fapl = detail::writing_access();
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) UPCYCLE_THROW(where(path, ""), "cannot create the file", reason());
  return File(id, path, true);
}

File File::open_existing(const std::string& path, bool writable) {
  detail::silence_errors();
  // Tell "missing", "unreadable" and "not HDF5" apart before HDF5 reports all three alike.
  std::FILE* probe = std::fopen(path.c_str(), "rb");
  if (!probe) UPCYCLE_THROW(where(path, ""), "cannot open the file: ", std::strerror(errno));
  std::fclose(probe);
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    UPCYCLE_THROW(where(path, ""), "not an HDF5 file (no HDF5 signature found); expected a file "
                  "written by upcycle or h5py");
  }
  // Reading needs no bounds (any version is read); writing keeps what File::create promises.
  const Hid fapl = writable ? detail::writing_access() : Hid();
  const hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY,
                           writable ? fapl.get() : H5P_DEFAULT);
  if (id < 0)
    detail::throw_failure(where(path, ""), writable ? "cannot open the file for writing" : "cannot open the file for reading");
  return File(id, path, writable);
}

void File::flush() {
  UPCYCLE_CHECK(is_open(), "flush of a closed HDF5 file '", path_, "'");
  if (H5Fflush(id_, H5F_SCOPE_LOCAL) < 0) UPCYCLE_THROW(where(path_, ""), "flush failed", reason());
}

void File::close() {
  if (id_ < 0) return;
  const hid_t id = id_;
  id_ = -1;
  if (H5Fclose(id) < 0) UPCYCLE_THROW(where(path_, ""), "close failed", reason());
}

bool has_dataset(const File& file, const std::string& path) {
  UPCYCLE_CHECK(file.is_open(), "has_dataset('", path, "') on a closed HDF5 file");
  return detail::object_kind(file.id(), detail::normalize(path)) == detail::ObjectKind::dataset;
}

bool has_group(const File& file, const std::string& path) {
  UPCYCLE_CHECK(file.is_open(), "has_group('", path, "') on a closed HDF5 file");
  return detail::object_kind(file.id(), detail::normalize(path)) == detail::ObjectKind::group;
}

namespace {
// H5Ovisit's callback signature changed in 1.12 (H5O_info2_t); both ask only for the basic info.
#if H5_VERSION_GE(1, 12, 0)
using ObjectInfo = H5O_info2_t;
herr_t visit(hid_t obj, H5O_iterate2_t op, void* data) {
  return H5Ovisit3(obj, H5_INDEX_NAME, H5_ITER_INC, op, data, H5O_INFO_BASIC);
}
#else
using ObjectInfo = H5O_info_t;
herr_t visit(hid_t obj, H5O_iterate_t op, void* data) {
  return H5Ovisit2(obj, H5_INDEX_NAME, H5_ITER_INC, op, data, H5O_INFO_BASIC);
}
#endif

struct VisitState {
  std::string prefix;
  std::vector<std::string>* out;
};

herr_t visit_object(hid_t, const char* name, const ObjectInfo* info, void* data) {
  auto* s = static_cast<VisitState*>(data);
  if (info->type == H5O_TYPE_DATASET && std::string(name) != ".")
    s->out->push_back(s->prefix + name);
  return 0;
}
}  // namespace

std::vector<std::string> list_datasets(const File& file, const std::string& group) {
  const std::string g = detail::normalize(group);
  if (detail::object_kind(file.id(), g) != detail::ObjectKind::group)
    UPCYCLE_THROW(where(file.path(), g, "group"), "expected a group");
  std::vector<std::string> out;
  VisitState state{g == "/" ? "/" : g + "/", &out};
  Hid gid(H5Gopen2(file.id(), g.c_str(), H5P_DEFAULT));
  if (!gid.valid() || visit(gid.get(), &visit_object, &state) < 0)
    detail::throw_failure(where(file.path(), g, "group"), "cannot list its datasets");
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace upcycle::h5
