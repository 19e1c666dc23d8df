// Tensors as HDF5 datasets (row-major, the dataset's dims are the tensor's shape), checksummed:
// chunked with the Fletcher32 filter, scalars compact in their object header.
#include <algorithm>
#include <cstdint>
#include <cstring>
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
  if (!d.dataset.valid()) detail::throw_failure(where(file.path(), d.path), "cannot open the dataset");
  d.type = Hid(H5Dget_type(d.dataset.get()));
  Hid space(H5Dget_space(d.dataset.get()));
  if (!d.type.valid() || !space.valid())
    detail::throw_failure(where(file.path(), d.path), "cannot read the dataset's type or shape");
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
  // The default transfer properties verify the Fletcher32 checksum of every chunk read.
  if (H5Dread(d.dataset.get(), detail::memory_type(t.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0) {
    detail::throw_failure(where(file.path(), d.path),
                          "reading " + d.shape.str() + " as " + dtype_name(t.dtype()) + " failed",
                          " (truncated or damaged file?)");
  }
}

DType require_stored_dtype(const File& file, const OpenDataset& d) {
  DType dt;
  if (!detail::stored_dtype(d.type.get(), dt))
    UPCYCLE_THROW(where(file.path(), d.path), "expected f32, f64, i32 or i64 elements, found ",
                  detail::describe_type(d.type.get()));
  return dt;
}

// The format version of an object's header (2 and later carry a checksum); -1 when unknown.
int object_header_version(hid_t object) {
#if H5_VERSION_GE(1, 12, 0)
  H5O_native_info_t info;
  if (H5Oget_native_info(object, &info, H5O_NATIVE_INFO_HDR) < 0) return -1;
#else
  H5O_info_t info;
  if (H5Oget_info2(object, &info, H5O_INFO_HDR) < 0) return -1;
#endif
  return static_cast<int>(info.hdr.version);
}

// The chunk dims of `t` when it is stored chunked (empty for a scalar or an empty tensor).
std::vector<hsize_t> chunk_dims(const Tensor& t) {
  if (t.numel() == 0 || t.ndim() == 0) return {};
  std::vector<hsize_t> chunk;
  for (std::int64_t n : chunk_shape(t.shape(), static_cast<std::int64_t>(dtype_size(t.dtype()))))
    chunk.push_back(static_cast<hsize_t>(n));
  return chunk;
}

// Creation properties that put a checksum on the stored data of `t` (invalid when HDF5 refuses).
Hid checksummed_layout(const Tensor& t, const std::vector<hsize_t>& chunk) {
  Hid dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (!dcpl.valid() || t.numel() == 0) return dcpl;  // no stored data: contiguous, nothing to corrupt
  if (t.ndim() == 0)  // HDF5 cannot chunk a scalar; compact data sit in the checksummed header
    return H5Pset_layout(dcpl.get(), H5D_COMPACT) < 0 ? Hid() : std::move(dcpl);
  if (H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()) < 0 || H5Pset_fletcher32(dcpl.get()) < 0)
    return Hid();
  return dcpl;
}

#if H5_VERSION_GE(1, 10, 3)  // H5Dwrite_chunk
// The checksum HDF5's Fletcher32 filter appends to a chunk (H5Z_FILTER_FLETCHER32, in the file
// format): running sums of the bytes taken as big-endian 16-bit words, folded to 16 bits every 360
// words (before sum2 can overflow) and twice at the end; an odd last byte counts as a high byte.
std::uint32_t fletcher32(const unsigned char* data, std::size_t bytes) {
  std::uint32_t sum1 = 0, sum2 = 0;
  const auto fold = [&] {
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  };
  for (std::size_t words = bytes / 2; words > 0;) {
    const std::size_t block = std::min<std::size_t>(words, 360);
    words -= block;
    for (std::size_t i = 0; i < block; ++i, data += 2) {
      sum1 += (std::uint32_t{data[0]} << 8) | std::uint32_t{data[1]};
      sum2 += sum1;
    }
    fold();
  }
  if (bytes % 2) {
    sum1 += std::uint32_t{data[0]} << 8;
    sum2 += sum1;
    fold();
  }
  fold();
  return (sum2 << 16) | sum1;
}

// Writes `host` into its chunked, Fletcher32-filtered dataset as stored chunks (H5Dwrite_chunk):
// each chunk is gathered once into one reused buffer and its checksum appended (little-endian)
// as the filter would. Through H5Dwrite, HDF5 allocates, copies and frees every chunk twice more:
// on a 512 MiB tensor this path wrote about 2.5 times faster than that, and about half as fast as
// a contiguous dataset without checksums (the cost is the checksum pass and the one copy).
// False when HDF5 refuses a chunk.
bool write_chunks(hid_t ds, const Tensor& host, const std::vector<hsize_t>& chunk) {
  const int rank = host.ndim();
  const std::size_t elem = dtype_size(host.dtype());
  std::vector<std::size_t> shape(host.shape().begin(), host.shape().end()), stride(static_cast<std::size_t>(rank), 1);
  for (int d = rank - 2; d >= 0; --d) stride[d] = stride[d + 1] * shape[d + 1];
  // From dim `run` on, the chunk spans whole dims of the tensor (chunk_shape makes it so), so the
  // part of a chunk at fixed leading coordinates is one contiguous run in memory and in the chunk.
  int run = rank - 1;
  while (run > 0 && chunk[run] == shape[run]) --run;
  std::size_t chunk_elems = 1;
  for (hsize_t n : chunk) chunk_elems *= n;
  std::vector<unsigned char> buf(chunk_elems * elem + 4);
  const auto* src = static_cast<const unsigned char*>(host.raw());
  std::vector<hsize_t> origin(static_cast<std::size_t>(rank), 0), extent(origin), at(origin);
  for (;;) {
    bool partial = false;
    for (int d = 0; d < rank; ++d) {
      extent[d] = std::min<hsize_t>(chunk[d], shape[d] - origin[d]);
      partial = partial || extent[d] < chunk[d];
    }
    if (partial) std::fill(buf.begin(), buf.end() - 4, 0);  // what HDF5 stores there: the fill value 0
    std::fill(at.begin(), at.end(), 0);
    const std::size_t run_elems = extent[run] * stride[run];
    for (;;) {  // each run of the chunk: the leading coordinates `at` inside the chunk
      std::size_t from = 0, to = 0, chunk_stride = 1;
      for (int d = rank - 1; d >= 0; --d) {
        from += (origin[d] + at[d]) * stride[d];
        to += at[d] * chunk_stride;
        chunk_stride *= chunk[d];
      }
      std::memcpy(buf.data() + to * elem, src + from * elem, run_elems * elem);
      int d = run - 1;
      for (; d >= 0 && ++at[d] == extent[d]; --d) at[d] = 0;
      if (d < 0) break;
    }
    const std::uint32_t sum = fletcher32(buf.data(), buf.size() - 4);
    for (int i = 0; i < 4; ++i) buf[buf.size() - 4 + i] = static_cast<unsigned char>(sum >> (8 * i));
    if (H5Dwrite_chunk(ds, H5P_DEFAULT, 0, origin.data(), buf.size(), buf.data()) < 0) return false;
    int d = rank - 1;
    for (; d >= 0 && (origin[d] += chunk[d]) >= shape[d]; --d) origin[d] = 0;
    if (d < 0) return true;
  }
}
#endif

}  // namespace

std::vector<std::int64_t> chunk_shape(const Shape& shape, std::int64_t element_bytes) {
  UPCYCLE_CHECK(shape.ndim() > 0 && element_bytes > 0, "chunk_shape of ", shape.str(), " with ", element_bytes,
                "-byte elements");
  // Why chunks of at most kMaxChunkBytes: a chunk is the unit that is checksummed, filtered and
  // moved through a temporary buffer of its size on every write and read, and HDF5 refuses chunks
  // of 4 GiB or more. 16 MiB bounds that extra memory while a 1 GiB expert tensor still takes only
  // 64 chunks, so the per-chunk work (index entry, filter call, I/O request) stays negligible.
  std::vector<std::int64_t> chunk(static_cast<std::size_t>(shape.ndim()), 1);
  std::int64_t bytes = element_bytes;  // of one chunk made of the whole trailing dims so far
  for (int i = shape.ndim() - 1; i >= 0; --i) {
    const std::int64_t n = shape[i];
    UPCYCLE_CHECK(n > 0, "chunk_shape of ", shape.str(), ": a dimension of extent 0 has no chunks");
    if (n <= kMaxChunkBytes / bytes) {
      chunk[static_cast<std::size_t>(i)] = n;
      bytes *= n;
      continue;
    }
    chunk[static_cast<std::size_t>(i)] = std::max<std::int64_t>(1, kMaxChunkBytes / bytes);
    break;
  }
  return chunk;
}

bool dataset_has_checksum(const File& file, const std::string& path) {
  const OpenDataset d = open_dataset(file, path);
  Hid dcpl(H5Dget_create_plist(d.dataset.get()));
  if (!dcpl.valid()) detail::throw_failure(where(file.path(), d.path), "cannot read the dataset's layout");
  if (d.shape.numel() == 0) return true;
  switch (H5Pget_layout(dcpl.get())) {
    case H5D_COMPACT: return object_header_version(d.dataset.get()) >= 2;  // version 1 has no checksum
    case H5D_CHUNKED: {
      unsigned flags = 0;
      const bool fletcher32 =
          H5Pget_filter_by_id2(dcpl.get(), H5Z_FILTER_FLETCHER32, &flags, nullptr, nullptr, 0, nullptr, nullptr) >= 0;
      H5Eclear2(H5E_DEFAULT);  // "not found" is an answer here, not an error
      return fletcher32;
    }
    default: return false;
  }
}

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
  const std::vector<hsize_t> chunk = chunk_dims(host);
  Hid dcpl = checksummed_layout(host, chunk);
  if (!dcpl.valid()) UPCYCLE_THROW(where(file.path(), path), "cannot set up the checksummed layout", reason());
  Hid ds(H5Dcreate2(file.id(), path.c_str(), detail::file_type(host.dtype()), space.get(), lcpl.get(),
                    dcpl.get(), H5P_DEFAULT));
  if (!ds.valid())
    UPCYCLE_THROW(where(file.path(), path), "cannot create the dataset ", describe(host), reason());
  if (host.numel() == 0) return;
  const auto failed = [&] { UPCYCLE_THROW(where(file.path(), path), "writing ", describe(host), " failed", reason()); };
#if H5_VERSION_GE(1, 10, 3)
  // Stored chunks hold the bytes as they are on disk: only when memory already has that byte
  // order; otherwise (and before HDF5 1.10.3) HDF5's filter computes the checksums.
  if (!chunk.empty() && H5Tequal(mem_type, detail::file_type(host.dtype())) > 0) {
    if (!write_chunks(ds.get(), host, chunk)) failed();
    return;
  }
#endif
  if (H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, host.raw()) < 0) failed();
}

}  // namespace upcycle::h5
