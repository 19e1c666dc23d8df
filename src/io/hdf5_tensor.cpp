// Tensors as HDF5 datasets (contiguous, row-major, the dataset's dims are the tensor's shape).
#include <vector>

#include "hdf5_detail.hpp"
#include "upcycle/io/hdf5.hpp"

namespace upcycle::h5 {

using detail::Hid;
using detail::reason;
using detail::where;

namespace {

struct OpenDataset {
  std::string path;  // normalised
  Hid dataset, type;
  Shape shape;
};

OpenDataset open_dataset(const File& file, const std::string& raw_path) {
  detail::silence_errors();
  UPCYCLE_CHECK(file.is_open(), "reading dataset '", raw_path, "' from a closed HDF5 file '",
                file.path(), "'");
  OpenDataset d;
  d.path = detail::normalize(raw_path);
  switch (detail::object_kind(file.id(), d.path)) {
    case detail::ObjectKind::dataset: break;
    case detail::ObjectKind::missing: UPCYCLE_THROW(where(file.path(), d.path), "no such dataset");
    case detail::ObjectKind::group:
      UPCYCLE_THROW(where(file.path(), d.path), "expected a dataset, found a group");
    default: UPCYCLE_THROW(where(file.path(), d.path), "expected a dataset, found another object");
  }
  d.dataset = Hid(H5Dopen2(file.id(), d.path.c_str(), H5P_DEFAULT));
  if (!d.dataset.valid()) UPCYCLE_THROW(where(file.path(), d.path), "cannot open the dataset", reason());
  d.type = Hid(H5Dget_type(d.dataset.get()));
  Hid space(H5Dget_space(d.dataset.get()));
  if (!d.type.valid() || !space.valid())
    UPCYCLE_THROW(where(file.path(), d.path), "cannot read the dataset's type or shape", reason());
  const H5S_class_t cls = H5Sget_simple_extent_type(space.get());
  if (cls == H5S_SCALAR) {  // h5py writes numpy scalars like this; a tensor has at least one dim
    d.shape = Shape{1};
    return d;
  }
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (cls != H5S_SIMPLE || rank < 0 || rank > Shape::kMaxDims)
    UPCYCLE_THROW(where(file.path(), d.path), "expected an array of rank 1..", Shape::kMaxDims,
                  ", found ", cls == H5S_NULL ? "an empty (null) dataspace" : "rank " + std::to_string(rank));
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  for (hsize_t n : dims) d.shape.push_back(static_cast<std::int64_t>(n));
  return d;
}

void read_into(const File& file, const OpenDataset& d, Tensor& t) {
  if (t.numel() == 0) return;
  if (H5Dread(d.dataset.get(), detail::memory_type(t.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT,
              t.raw()) < 0)
    UPCYCLE_THROW(where(file.path(), d.path), "reading ", d.shape.str(), " as ", dtype_name(t.dtype()),
                  " failed (truncated or damaged file?)", reason());
}

DType require_stored_dtype(const File& file, const OpenDataset& d) {
  DType dt;
  if (!detail::stored_dtype(d.type.get(), dt))
    UPCYCLE_THROW(where(file.path(), d.path), "expected f32, f64, i32 or i64 elements, found ",
                  detail::describe_type(d.type.get()));
  return dt;
}

}  // namespace

Shape dataset_shape(const File& file, const std::string& path) { return open_dataset(file, path).shape; }

DType dataset_dtype(const File& file, const std::string& path) {
  const OpenDataset d = open_dataset(file, path);
  return require_stored_dtype(file, d);
}

Tensor read_tensor(const File& file, const std::string& path) {
  const OpenDataset d = open_dataset(file, path);
  Tensor t = Tensor::empty(d.shape, require_stored_dtype(file, d), Device::cpu);
  read_into(file, d, t);
  return t;
}

Tensor read_tensor(const File& file, const std::string& path, DType dtype) {
  const OpenDataset d = open_dataset(file, path);
  DType stored;
  if (detail::stored_dtype(d.type.get(), stored)) {
    // Read as stored and convert with our own cast, the same rounding as Tensor::to everywhere.
    Tensor t = Tensor::empty(d.shape, stored, Device::cpu);
    read_into(file, d, t);
    return t.to(dtype);
  }
  const H5T_class_t cls = H5Tget_class(d.type.get());
  if (cls != H5T_INTEGER && cls != H5T_FLOAT)
    UPCYCLE_THROW(where(file.path(), d.path), "expected numeric elements convertible to ",
                  dtype_name(dtype), ", found ", detail::describe_type(d.type.get()));
  Tensor t = Tensor::empty(d.shape, dtype, Device::cpu);  // e.g. uint8 images: HDF5 converts while reading
  read_into(file, d, t);
  return t;
}

Tensor read_tensor(const File& file, const std::string& path, DType dtype, const Shape& expected) {
  const Shape found = dataset_shape(file, path);
  if (found != expected)
    UPCYCLE_THROW(where(file.path(), detail::normalize(path)), "expected shape ", expected.str(),
                  ", found ", found.str());
  return read_tensor(file, path, dtype);
}

void write_tensor(File& file, const std::string& raw_path, const Tensor& tensor) {
  detail::silence_errors();
  const std::string path = detail::normalize(raw_path);
  UPCYCLE_CHECK(file.is_open() && file.writable(), "writing dataset '", path, "': HDF5 file '",
                file.path(), "' is not open for writing");
  UPCYCLE_CHECK(path != "/", "write_tensor: '", raw_path, "' is not a dataset path");
  UPCYCLE_CHECK(tensor.defined(), "write_tensor: undefined tensor for dataset '", path, "'");
  const Tensor host = tensor.to(Device::cpu);
  const hid_t mem_type = detail::memory_type(host.dtype());
  switch (detail::object_kind(file.id(), path)) {
    case detail::ObjectKind::missing: break;
    case detail::ObjectKind::dataset:
      if (H5Ldelete(file.id(), path.c_str(), H5P_DEFAULT) < 0)
        UPCYCLE_THROW(where(file.path(), path), "cannot replace the existing dataset", reason());
      break;
    default:
      UPCYCLE_THROW(where(file.path(), path), "cannot write a dataset: a group or other object "
                    "already has this name");
  }
  std::vector<hsize_t> dims;
  for (std::int64_t n : host.shape()) dims.push_back(static_cast<hsize_t>(n));
  Hid space(dims.empty() ? H5Screate(H5S_SCALAR)
                         : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  Hid lcpl(H5Pcreate(H5P_LINK_CREATE));
  if (!space.valid() || !lcpl.valid() || H5Pset_create_intermediate_group(lcpl.get(), 1) < 0)
    UPCYCLE_THROW(where(file.path(), path), "cannot set up the dataset", reason());
  Hid ds(H5Dcreate2(file.id(), path.c_str(), detail::file_type(host.dtype()), space.get(), lcpl.get(),
                    H5P_DEFAULT, H5P_DEFAULT));
  if (!ds.valid())
    UPCYCLE_THROW(where(file.path(), path), "cannot create the dataset ", describe(host), reason());
  if (host.numel() > 0 &&
      H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, host.raw()) < 0)
    UPCYCLE_THROW(where(file.path(), path), "writing ", describe(host), " failed", reason());
}

}  // namespace upcycle::h5
