// Scalar attributes (strings, integers, doubles) on groups and datasets. A string's text lives in
// the global heap, the one part of an HDF5 1.10 file without a checksum, so its CRC-32 is stored
// beside it as the attribute "<name>.crc32" and checked on every read.
#include <boost/crc.hpp>

#include <cstring>
#include <vector>

#include "hdf5_detail.hpp"
#include "upcycle/io/hdf5.hpp"

namespace upcycle::h5 {

using detail::Hid;
using detail::reason;
using detail::where;

namespace {

std::string attribute_label(const std::string& object, const std::string& name) {
  return object + (object == "/" ? "" : "/") + "@" + name;  // "/model/@step"
}

Hid open_object(const File& file, const std::string& object) {
  detail::silence_errors();
  UPCYCLE_CHECK(file.is_open(), "attribute access on a closed HDF5 file '", file.path(), "'");
  const auto kind = detail::object_kind(file.id(), object);
  if (kind == detail::ObjectKind::missing)
    UPCYCLE_THROW(where(file.path(), object, "object"), "no such group or dataset");
  Hid obj(H5Oopen(file.id(), object.c_str(), H5P_DEFAULT));
  if (!obj.valid()) detail::throw_failure(where(file.path(), object, "object"), "cannot open");
  return obj;
}

std::string checksum_name(const std::string& name) { return name + ".crc32"; }

std::uint32_t crc32(const char* text) {
  boost::crc_32_type crc;
  crc.process_bytes(text, std::strlen(text));
  return crc.checksum();
}

// Removes attribute `name` of `obj` when it exists.
void remove_attribute(const File& file, hid_t obj, const std::string& label, const std::string& name) {
  if (H5Aexists(obj, name.c_str()) > 0 && H5Adelete(obj, name.c_str()) < 0)
    UPCYCLE_THROW(where(file.path(), label, "attribute"), "cannot replace it", reason());
}

// Creates attribute `name` of `type` on `obj` (replacing one of that name) and writes `data`.
void write_scalar(const File& file, hid_t obj, const std::string& label, const std::string& name, hid_t type,
                  const void* data) {
  remove_attribute(file, obj, label, name);
  Hid space(H5Screate(H5S_SCALAR));
  Hid attr(H5Acreate2(obj, name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!attr.valid() || H5Awrite(attr.get(), type, data) < 0)
    UPCYCLE_THROW(where(file.path(), label, "attribute"), "cannot write it", reason());
}

// Writes a string attribute (with its checksum) or, when `text` is null, a number of `type`.
void write_attribute_value(File& file, const std::string& raw_object, const std::string& name, hid_t type,
                           const void* data, const char* text) {
  const std::string object = detail::normalize(raw_object);
  const std::string label = attribute_label(object, name);
  UPCYCLE_CHECK(file.writable(), "writing attribute ", label, ": HDF5 file '", file.path(),
                "' is not open for writing");
  Hid obj = open_object(file, object);
  const std::string crc_name = checksum_name(name);
  if (!text) {
    remove_attribute(file, obj.get(), label, crc_name);  // a string's checksum would now be stale
    write_scalar(file, obj.get(), label, name, type, data);
    return;
  }
  const std::uint32_t crc = crc32(text);
  write_scalar(file, obj.get(), label, name, type, data);
  write_scalar(file, obj.get(), attribute_label(object, crc_name), crc_name, H5T_NATIVE_UINT32, &crc);
}

struct OpenAttribute {
  std::string label;
  Hid attr, type;
};

// Opens a single-element attribute whose type class is one of `classes`.
OpenAttribute open_scalar(const File& file, const std::string& raw_object, const std::string& name,
                          std::initializer_list<H5T_class_t> classes, const char* expected) {
  const std::string object = detail::normalize(raw_object);
  Hid obj = open_object(file, object);
  OpenAttribute a;
  a.label = attribute_label(object, name);
  if (H5Aexists(obj.get(), name.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    UPCYCLE_THROW(where(file.path(), a.label, "attribute"), "no such attribute (expected ", expected, ")");
  }
  a.attr = Hid(H5Aopen(obj.get(), name.c_str(), H5P_DEFAULT));
  a.type = Hid(a.attr.valid() ? H5Aget_type(a.attr.get()) : -1);
  Hid space(a.attr.valid() ? H5Aget_space(a.attr.get()) : -1);
  if (!a.type.valid() || !space.valid()) detail::throw_failure(where(file.path(), a.label, "attribute"), "cannot open it");
  if (H5Sget_simple_extent_npoints(space.get()) != 1)
    UPCYCLE_THROW(where(file.path(), a.label, "attribute"), "expected a single ", expected,
                  ", found ", H5Sget_simple_extent_npoints(space.get()), " elements");
  const H5T_class_t cls = H5Tget_class(a.type.get());
  for (H5T_class_t c : classes)
    if (c == cls) return a;
  UPCYCLE_THROW(where(file.path(), a.label, "attribute"), "expected ", expected, ", found ",
                detail::describe_type(a.type.get()));
}

// Compares a string read from the global heap with the CRC-32 written beside it (when there is one).
void verify_string(const File& file, const std::string& object, const std::string& name, const std::string& label,
                   const std::string& text) {
  const std::string crc_name = checksum_name(name);
  if (!has_attribute(file, object, crc_name)) return;  // not written by this layer: nothing to verify
  OpenAttribute c = open_scalar(file, object, crc_name, {H5T_INTEGER}, "a CRC-32");
  std::uint32_t stored = 0;
  if (H5Aread(c.attr.get(), H5T_NATIVE_UINT32, &stored) < 0)
    detail::throw_failure(where(file.path(), c.label, "attribute"), "cannot read the checksum");
  const std::uint32_t computed = crc32(text.c_str());
  if (computed != stored)
    throw CorruptDataError(__FILE__, __LINE__,
                           where(file.path(), label, "attribute") + "the string is corrupt: its CRC-32 is " +
                               std::to_string(computed) + ", " + c.label + " says " + std::to_string(stored));
}

}  // namespace

void write_attribute(File& file, const std::string& object, const std::string& name,
                     const std::string& value) {
  Hid type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const char* data = value.c_str();
  write_attribute_value(file, object, name, type.get(), &data, data);
}

void write_attribute(File& file, const std::string& object, const std::string& name, std::int64_t value) {
  write_attribute_value(file, object, name, H5T_NATIVE_INT64, &value, nullptr);
}

void write_attribute(File& file, const std::string& object, const std::string& name, double value) {
  write_attribute_value(file, object, name, H5T_NATIVE_DOUBLE, &value, nullptr);
}

bool has_attribute(const File& file, const std::string& object, const std::string& name) {
  detail::silence_errors();
  const std::string o = detail::normalize(object);
  if (detail::object_kind(file.id(), o) == detail::ObjectKind::missing) return false;
  Hid obj = open_object(file, o);
  const htri_t r = H5Aexists(obj.get(), name.c_str());
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

std::string read_string_attribute(const File& file, const std::string& object, const std::string& name) {
  OpenAttribute a = open_scalar(file, object, name, {H5T_STRING}, "a string");
  const auto fail = [&] { detail::throw_failure(where(file.path(), a.label, "attribute"), "cannot read the string"); };
  Hid mem(H5Tcopy(H5T_C_S1));
  H5Tset_cset(mem.get(), H5Tget_cset(a.type.get()));
  if (H5Tis_variable_str(a.type.get()) > 0) {
    H5Tset_size(mem.get(), H5T_VARIABLE);
    char* data = nullptr;
    if (H5Aread(a.attr.get(), mem.get(), &data) < 0) fail();
    std::string s = data ? data : "";
    H5free_memory(data);
    verify_string(file, object, name, a.label, s);
    return s;
  }
  // Fixed-length: read with room for a terminator, then drop NUL / space padding.
  const std::size_t size = H5Tget_size(a.type.get());
  H5Tset_size(mem.get(), size + 1);
  H5Tset_strpad(mem.get(), H5T_STR_NULLTERM);
  std::vector<char> buf(size + 1, '\0');
  if (H5Aread(a.attr.get(), mem.get(), buf.data()) < 0) fail();
  std::string s(buf.data());
  if (H5Tget_strpad(a.type.get()) == H5T_STR_SPACEPAD)
    while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::int64_t read_int_attribute(const File& file, const std::string& object, const std::string& name) {
  OpenAttribute a = open_scalar(file, object, name, {H5T_INTEGER}, "an integer");
  std::int64_t v = 0;
  if (H5Aread(a.attr.get(), H5T_NATIVE_INT64, &v) < 0)
    detail::throw_failure(where(file.path(), a.label, "attribute"), "cannot read the integer");
  return v;
}

double read_double_attribute(const File& file, const std::string& object, const std::string& name) {
  OpenAttribute a = open_scalar(file, object, name, {H5T_FLOAT, H5T_INTEGER}, "a number");
  double v = 0;
  if (H5Aread(a.attr.get(), H5T_NATIVE_DOUBLE, &v) < 0)
    detail::throw_failure(where(file.path(), a.label, "attribute"), "cannot read the number");
  return v;
}

}  // namespace upcycle::h5
