// HDF5 layer: exact round trips per dtype, conversion, attributes, lookups, and the error messages
// for missing / foreign / mismatching data (they must name the file and the dataset); checksums on
// data, metadata and strings, and the chunk layout.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "upcycle/io/hdf5.hpp"

namespace upcycle {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "upcycle_test_io_hdf5_" + name;
}

// Runs f, expecting an upcycle::Error whose message contains every one of `parts`.
template <class F>
::testing::AssertionResult throws_with(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << p << "': " << msg;
    return ::testing::AssertionSuccess() << msg;
  }
  return ::testing::AssertionFailure() << "no upcycle::Error thrown";
}

template <class T>
void expect_bitwise_equal(const Tensor& got, const Tensor& want) {
  ASSERT_EQ(got.dtype(), want.dtype());
  ASSERT_EQ(got.shape(), want.shape());
  EXPECT_EQ(got.to_vector<T>(), want.to_vector<T>());
}

TEST(Hdf5, RoundTripEachDtypeExactly) {
  const std::string path = temp_path("roundtrip.h5");
  // Values that a lossy path would change: non-representable decimals, extremes, negatives.
  const Tensor f32 = Tensor::from_vector<float>({0.1f, -1e-30f, 3.4e38f, -2.5f, 1.0f / 3.0f, 7.0f}, {2, 3}, Device::cpu);
  const Tensor f64 = Tensor::from_vector<double>({0.1, -1e-300, 1.7e308, 1.0 / 3.0}, {4}, Device::cpu);
  const Tensor i32 = Tensor::from_vector<std::int32_t>({-2147483647 - 1, 0, 2147483647, -5}, {2, 1, 2}, Device::cpu);
  const Tensor i64 = Tensor::from_vector<std::int64_t>({-9223372036854775807LL - 1, 1LL << 40, -100}, {3}, Device::cpu);
  {
    h5::File f = h5::File::create(path);
    h5::write_tensor(f, "/model/blocks/03/w", f32);  // intermediate groups are created
    h5::write_tensor(f, "model/f64", f64);           // relative paths start at the root
    h5::write_tensor(f, "/ints/i32", i32);
    h5::write_tensor(f, "/ints/i64", i64);
  }
  h5::File f = h5::File::open(path);
  expect_bitwise_equal<float>(h5::read_tensor(f, "/model/blocks/03/w"), f32);
  expect_bitwise_equal<double>(h5::read_tensor(f, "/model/f64"), f64);
  expect_bitwise_equal<std::int32_t>(h5::read_tensor(f, "/ints/i32"), i32);
  expect_bitwise_equal<std::int64_t>(h5::read_tensor(f, "/ints/i64"), i64);
  EXPECT_EQ(h5::dataset_dtype(f, "/ints/i32"), DType::i32);
  EXPECT_EQ(h5::dataset_shape(f, "/ints/i32"), (Shape{2, 1, 2}));
  EXPECT_FALSE(f.writable());
}

TEST(Hdf5, ConvertingReads) {
  const std::string path = temp_path("convert.h5");
  {
    h5::File f = h5::File::create(path);
    h5::write_tensor(f, "a", Tensor::from_vector<double>({1.5, -2.0}, {2}, Device::cpu));
    h5::write_tensor(f, "t", Tensor::from_vector<std::int32_t>({3, -100}, {2}, Device::cpu));
  }
  h5::File f = h5::File::open(path);
  expect_bitwise_equal<float>(h5::read_tensor(f, "a", DType::f32), Tensor::from_vector<float>({1.5f, -2.0f}, {2}, Device::cpu));
  expect_bitwise_equal<std::int64_t>(h5::read_tensor(f, "t", DType::i64),
                                     Tensor::from_vector<std::int64_t>({3, -100}, {2}, Device::cpu));
  EXPECT_TRUE(throws_with([&] { h5::read_tensor(f, "a", DType::f32, Shape{3}); },
                          {path, "/a", "expected shape [3]", "found [2]"}));
}

TEST(Hdf5, ReplacesAnExistingDataset) {
  const std::string path = temp_path("replace.h5");
  h5::File f = h5::File::create(path);
  h5::write_tensor(f, "/x", Tensor::zeros({2, 2}, DType::f32, Device::cpu));
  h5::write_tensor(f, "/x", Tensor::from_vector<std::int64_t>({1, 2, 3}, {3}, Device::cpu));
  expect_bitwise_equal<std::int64_t>(h5::read_tensor(f, "/x"), Tensor::from_vector<std::int64_t>({1, 2, 3}, {3}, Device::cpu));
  EXPECT_TRUE(throws_with([&] { h5::write_tensor(f, "/", Tensor::zeros({1}, DType::f32, Device::cpu)); }, {"not a dataset path"}));
}

TEST(Hdf5, LookupsAndListing) {
  const std::string path = temp_path("lookup.h5");
  h5::File f = h5::File::create(path);
  h5::write_tensor(f, "/b/y", Tensor::zeros({1}, DType::f32, Device::cpu));
  h5::write_tensor(f, "/a", Tensor::zeros({1}, DType::f32, Device::cpu));
  h5::write_tensor(f, "/b/c/z", Tensor::zeros({1}, DType::f32, Device::cpu));
  EXPECT_TRUE(h5::has_dataset(f, "/a"));
  EXPECT_TRUE(h5::has_dataset(f, "b/c/z"));
  EXPECT_FALSE(h5::has_dataset(f, "/b"));          // a group
  EXPECT_FALSE(h5::has_dataset(f, "/nope/x/y"));   // missing parents are not an error
  EXPECT_TRUE(h5::has_group(f, "/b/c"));
  EXPECT_FALSE(h5::has_group(f, "/a"));
  EXPECT_EQ(h5::list_datasets(f), (std::vector<std::string>{"/a", "/b/c/z", "/b/y"}));
  EXPECT_EQ(h5::list_datasets(f, "/b"), (std::vector<std::string>{"/b/c/z", "/b/y"}));
}

TEST(Hdf5, Attributes) {
  const std::string path = temp_path("attrs.h5");
  {
    h5::File f = h5::File::create(path);
    h5::write_tensor(f, "/model/w", Tensor::zeros({2}, DType::f32, Device::cpu));
    h5::write_attribute(f, "/", "config", std::string("[model]\nd_model = 16\n"));
    h5::write_attribute(f, "/", "step", std::int64_t{1} << 40);
    h5::write_attribute(f, "/model/w", "init_std", 0.02);
    h5::write_attribute(f, "/model", "layers", 12);  // plain int
    h5::write_attribute(f, "/", "step", 7);          // replaces
  }
  h5::File f = h5::File::open(path);
  EXPECT_EQ(h5::read_string_attribute(f, "/", "config"), "[model]\nd_model = 16\n");
  EXPECT_EQ(h5::read_int_attribute(f, "/", "step"), 7);
  EXPECT_EQ(h5::read_int_attribute(f, "/model", "layers"), 12);
  EXPECT_EQ(h5::read_double_attribute(f, "/model/w", "init_std"), 0.02);
  EXPECT_TRUE(h5::has_attribute(f, "/", "config"));
  EXPECT_FALSE(h5::has_attribute(f, "/", "missing"));
  EXPECT_FALSE(h5::has_attribute(f, "/no/such/group", "x"));
  EXPECT_TRUE(throws_with([&] { h5::read_int_attribute(f, "/", "config"); },
                          {path, "/@config", "expected an integer", "string"}));
  EXPECT_TRUE(throws_with([&] { h5::read_string_attribute(f, "/model", "nope"); },
                          {path, "/model/@nope", "no such attribute"}));
}

TEST(Hdf5, MissingDatasetNamesFileAndDataset) {
  const std::string path = temp_path("missing_ds.h5");
  {
    h5::File f = h5::File::create(path);
    h5::write_tensor(f, "/model/w", Tensor::zeros({2}, DType::f32, Device::cpu));
  }
  h5::File f = h5::File::open(path);
  EXPECT_TRUE(throws_with([&] { h5::read_tensor(f, "/model/blocks/00/w"); },
                          {path, "'/model/blocks/00/w'", "no such dataset"}));
  EXPECT_TRUE(throws_with([&] { h5::read_tensor(f, "/model"); }, {path, "'/model'", "found a group"}));
}

TEST(Hdf5, MissingAndForeignFilesGiveClearErrors) {
  const std::string missing = temp_path("does_not_exist.h5");
  std::remove(missing.c_str());
  EXPECT_TRUE(throws_with([&] { h5::File::open(missing); }, {missing, "cannot open the file: No such file or directory"}));

  const std::string foreign = temp_path("foreign.h5");
  std::ofstream(foreign) << "this is a text file, not HDF5\n";
  EXPECT_TRUE(throws_with([&] { h5::File::open(foreign); }, {foreign, "not an HDF5 file"}));

  // Truncated: a valid file cut in half still has the signature but no readable content.
  const std::string whole = temp_path("whole.h5"), cut = temp_path("truncated.h5");
  {
    h5::File f = h5::File::create(whole);
    h5::write_tensor(f, "/w", Tensor::zeros({4096}, DType::f32, Device::cpu));
  }
  std::ifstream in(whole, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  EXPECT_TRUE(throws_with(
      [&] {
        h5::File f = h5::File::open(cut);
        h5::read_tensor(f, "/w");
      },
      {cut}));
}

TEST(Hdf5, UnsupportedElementTypeAndRank) {
  const std::string path = temp_path("uint8.h5");
  {
    h5::File f = h5::File::create(path);
    // Written through the raw C API: our writer never produces uint8, but image data sets do.
    const hsize_t dims[1] = {3};
    const unsigned char data[3] = {0, 128, 255};
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t ds = H5Dcreate2(f.id(), "/pixels", H5T_STD_U8LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(ds);
    H5Sclose(space);
    const hid_t scalar = H5Screate(H5S_SCALAR);
    const double v = 2.5;
    const hid_t s = H5Dcreate2(f.id(), "/scalar", H5T_IEEE_F64LE, scalar, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(s, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v);
    H5Dclose(s);
    H5Sclose(scalar);
  }
  h5::File f = h5::File::open(path);
  EXPECT_TRUE(throws_with([&] { h5::read_tensor(f, "/pixels"); },
                          {path, "/pixels", "expected f32, f64, i32 or i64", "unsigned 8-bit integer"}));
  expect_bitwise_equal<float>(h5::read_tensor(f, "/pixels", DType::f32),
                              Tensor::from_vector<float>({0.0f, 128.0f, 255.0f}, {3}, Device::cpu));
  expect_bitwise_equal<double>(h5::read_tensor(f, "/scalar"), Tensor::from_vector<double>({2.5}, {1}, Device::cpu));
}

TEST(Hdf5, ReadOnlyFileRejectsWrites) {
  const std::string path = temp_path("readonly.h5");
  { h5::File f = h5::File::create(path); }
  h5::File f = h5::File::open(path);
  EXPECT_TRUE(throws_with([&] { h5::write_tensor(f, "/x", Tensor::zeros({1}, DType::f32, Device::cpu)); }, {path, "not open for writing"}));
  f.close();  // HDF5 refuses to reopen a file that is open read-only in this process for writing
  h5::File rw = h5::File::open_rw(path);
  h5::write_tensor(rw, "/x", Tensor::zeros({1}, DType::f32, Device::cpu));
  EXPECT_TRUE(h5::has_dataset(rw, "/x"));
}

TEST(Hdf5, ChunkShapeKeepsChunksAtMost16MiB) {
  using Dims = std::vector<std::int64_t>;
  EXPECT_EQ(h5::chunk_shape(Shape{3, 5}, 4), (Dims{3, 5}));  // small: one chunk
  EXPECT_EQ(h5::chunk_shape(Shape{7}, 8), (Dims{7}));
  // 64 experts of 1024 x 4096 f32 (16 MiB each): one expert per chunk.
  EXPECT_EQ(h5::chunk_shape(Shape{64, 1024, 4096}, 4), (Dims{1, 1024, 4096}));
  // 128 experts of 256 x 256 f32 (256 KiB each): 64 experts per chunk.
  EXPECT_EQ(h5::chunk_shape(Shape{128, 256, 256}, 4), (Dims{64, 256, 256}));
  // An expert larger than a chunk is split along its next dim: 256 rows of 16384 f32.
  EXPECT_EQ(h5::chunk_shape(Shape{8, 4096, 16384}, 4), (Dims{1, 256, 16384}));
  EXPECT_EQ(h5::chunk_shape(Shape{std::int64_t{1} << 30}, 4), (Dims{std::int64_t{1} << 22}));
  for (const auto& shape : {Shape{64, 1024, 4096}, Shape{128, 256, 256}, Shape{8, 4096, 16384}, Shape{1000, 999, 7}}) {
    std::int64_t bytes = 4;
    for (std::int64_t n : h5::chunk_shape(shape, 4)) bytes *= n;
    EXPECT_LE(bytes, h5::kMaxChunkBytes) << shape.str();
  }
  EXPECT_THROW(h5::chunk_shape(Shape{4, 0}, 4), Error);
}

namespace {
std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void flip_byte(const std::string& path, std::size_t offset) {
  std::string bytes = file_bytes(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x01);
  put_bytes(path, bytes);
}

std::vector<hsize_t> chunk_dims(const h5::File& f, const std::string& path) {
  const hid_t ds = H5Dopen2(f.id(), path.c_str(), H5P_DEFAULT);
  const hid_t dcpl = H5Dget_create_plist(ds);
  std::vector<hsize_t> dims(8, 0);
  const int rank = H5Pget_layout(dcpl) == H5D_CHUNKED ? H5Pget_chunk(dcpl, 8, dims.data()) : 0;
  dims.resize(static_cast<std::size_t>(std::max(rank, 0)));
  H5Pclose(dcpl);
  H5Dclose(ds);
  return dims;
}
}  // namespace

TEST(Hdf5, EveryWrittenDatasetCarriesAChecksum) {
  const std::string path = temp_path("layouts.h5");
  {
    h5::File f = h5::File::create(path);
    h5::write_tensor(f, "/small", Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}, Device::cpu));
    h5::write_tensor(f, "/scalar", Tensor::from_vector<double>({2.5}, {}, Device::cpu));
    h5::write_tensor(f, "/empty", Tensor::zeros({0, 4}, DType::f32, Device::cpu));
    // 20 MiB: two chunks of up to 4 rows of 4 MiB.
    h5::write_tensor(f, "/experts", Tensor::zeros({5, 1024, 1024}, DType::f32, Device::cpu));
    // Written without a checksum, as other writers (and version-1 checkpoints) do.
    const hsize_t dims[1] = {4};
    const float data[4] = {1, 2, 3, 4};
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t ds = H5Dcreate2(f.id(), "/plain", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(ds);
    H5Sclose(space);
  }
  h5::File f = h5::File::open(path);
  for (const char* d : {"/small", "/scalar", "/empty", "/experts"}) EXPECT_TRUE(h5::dataset_has_checksum(f, d)) << d;
  EXPECT_FALSE(h5::dataset_has_checksum(f, "/plain"));
  EXPECT_EQ(chunk_dims(f, "/small"), (std::vector<hsize_t>{2, 3}));
  EXPECT_EQ(chunk_dims(f, "/experts"), (std::vector<hsize_t>{4, 1024, 1024}));
  EXPECT_EQ(h5::read_tensor(f, "/scalar").to_vector<double>(), (std::vector<double>{2.5}));
  EXPECT_EQ(h5::dataset_shape(f, "/empty"), (Shape{0, 4}));
  // The HDF5 1.10 superblock (version 3) carries a checksum, as the object headers then do.
  unsigned super = 0;
  const hid_t fcpl = H5Fget_create_plist(f.id());
  H5Pget_version(fcpl, &super, nullptr, nullptr, nullptr);
  H5Pclose(fcpl);
  EXPECT_EQ(super, 3u);
}

// Large tensors are written as stored chunks with a checksum computed by this layer; HDF5 checks
// it on every read, so a bit-exact read back proves it matches the Fletcher32 filter's. The values
// include all-ones words (0xffff), the case where the checksum's folding matters.
TEST(Hdf5, ChunkedTensorsRoundTripBitForBit) {
  const std::string path = temp_path("chunks.h5");
  // [3, 2100, 1024] i64: a 17 MB slice per leading index, so chunks of [1, 2048, 1024] with a
  // partial one after each full one; and a 1-D tensor of 20 MB: [2^21] chunks, a partial last.
  std::vector<std::int64_t> ints(std::size_t{3} * 2100 * 1024);
  for (std::size_t i = 0; i < ints.size(); ++i)
    ints[i] = i % 3 == 0 ? -1 : i % 3 == 1 ? static_cast<std::int64_t>(i * 2654435761u) : 0;
  std::vector<double> reals(std::size_t{2500} * 1000);
  for (std::size_t i = 0; i < reals.size(); ++i) reals[i] = i % 7 == 0 ? -0.0 : 1.0 / static_cast<double>(i + 1);
  const Tensor a = Tensor::from_vector<std::int64_t>(ints, {3, 2100, 1024}, Device::cpu);
  const Tensor b = Tensor::from_vector<double>(reals, {2500 * 1000}, Device::cpu);
  {
    h5::File f = h5::File::create(path);
    h5::write_tensor(f, "/a", a);
    h5::write_tensor(f, "/b", b);
  }
  h5::File f = h5::File::open(path);
  EXPECT_EQ(chunk_dims(f, "/a"), (std::vector<hsize_t>{1, 2048, 1024}));
  EXPECT_EQ(chunk_dims(f, "/b"), (std::vector<hsize_t>{std::size_t{1} << 21}));
  expect_bitwise_equal<std::int64_t>(h5::read_tensor(f, "/a"), a);
  expect_bitwise_equal<double>(h5::read_tensor(f, "/b"), b);
}

TEST(Hdf5, CorruptChunkOfALargeDatasetIsReportedAsCorrupt) {
  const std::string path = temp_path("corrupt_chunk.h5");
  std::vector<float> values(5 * 1024 * 1024);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 1000) * 0.5f;
  const Tensor experts = Tensor::from_vector<float>(values, {5, 1024, 1024}, Device::cpu);
  {
    h5::File f = h5::File::create(path);
    h5::write_tensor(f, "/model/experts", experts);
  }
  haddr_t second = 0;
  hsize_t size = 0;
  {
    h5::File f = h5::File::open(path);
    expect_bitwise_equal<float>(h5::read_tensor(f, "/model/experts"), experts);
    const hid_t ds = H5Dopen2(f.id(), "/model/experts", H5P_DEFAULT);
    const hid_t space = H5Dget_space(ds);
    hsize_t chunks = 0;
    unsigned mask = 0;
    H5Dget_num_chunks(ds, space, &chunks);
    EXPECT_EQ(chunks, 2u);
    H5Dget_chunk_info(ds, space, 1, nullptr, &mask, &second, &size);
    H5Sclose(space);
    H5Dclose(ds);
  }
  ASSERT_GT(size, 1000u);
  flip_byte(path, second + size / 2);
  h5::File f = h5::File::open(path);
  EXPECT_TRUE(throws_with([&] { h5::read_tensor(f, "/model/experts"); },
                          {path, "dataset '/model/experts'", "the data is corrupt", "Fletcher32"}));
  EXPECT_THROW(h5::read_tensor(f, "/model/experts"), h5::CorruptDataError);
}

TEST(Hdf5, CorruptMetadataIsReportedAsCorruptNotAsMissing) {
  const std::string path = temp_path("corrupt_header.h5");
  {
    h5::File f = h5::File::create(path);
    h5::write_tensor(f, "/w", Tensor::from_vector<float>({1, 2, 3}, {3}, Device::cpu));
  }
  // The last object header is the dataset's (the root group's comes first).
  const std::string bytes = file_bytes(path);
  const auto header = bytes.rfind("OHDR");
  ASSERT_NE(header, std::string::npos);
  ASSERT_GT(bytes.find("OHDR"), 0u);
  ASSERT_NE(bytes.find("OHDR"), header) << "expected two object headers";
  flip_byte(path, header + 40);
  h5::File f = h5::File::open(path);
  EXPECT_TRUE(throws_with([&] { h5::has_dataset(f, "/w"); }, {path, "'/w'", "the data is corrupt", "checksum"}));
  EXPECT_THROW(h5::read_tensor(f, "/w"), h5::CorruptDataError);
}

TEST(Hdf5, StringAttributesCarryAChecksum) {
  const std::string path = temp_path("string_crc.h5");
  {
    h5::File f = h5::File::create(path);
    h5::write_attribute(f, "/", "config", std::string("[model]\nwidth = 16\n"));
    h5::write_attribute(f, "/", "replaced", std::string("text"));
    h5::write_attribute(f, "/", "replaced", 5);  // its checksum goes with it
    // A string written by another program (no checksum) reads as before.
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(f.id(), "foreign", type, space, H5P_DEFAULT, H5P_DEFAULT);
    const char* text = "torch 2.1";
    H5Awrite(attr, type, &text);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
  }
  {
    h5::File f = h5::File::open(path);
    EXPECT_EQ(h5::read_string_attribute(f, "/", "config"), "[model]\nwidth = 16\n");
    EXPECT_TRUE(h5::has_attribute(f, "/", "config.crc32"));
    EXPECT_FALSE(h5::has_attribute(f, "/", "replaced.crc32"));
    EXPECT_EQ(h5::read_string_attribute(f, "/", "foreign"), "torch 2.1");
  }
  // The text lives in the global heap: change a digit there.
  std::string bytes = file_bytes(path);
  const auto at = bytes.find("width = 16");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 9] = '7';
  put_bytes(path, bytes);
  h5::File f = h5::File::open(path);
  EXPECT_TRUE(throws_with([&] { h5::read_string_attribute(f, "/", "config"); },
                          {path, "attribute '/@config'", "the string is corrupt", "CRC-32"}));
  EXPECT_THROW(h5::read_string_attribute(f, "/", "config"), h5::CorruptDataError);
}

TEST(Hdf5, TruncatedFileIsReportedAsCorrupt) {
  const std::string whole = temp_path("whole_for_cut.h5"), cut = temp_path("cut.h5");
  {
    h5::File f = h5::File::create(whole);
    h5::write_tensor(f, "/w", Tensor::zeros({4096}, DType::f32, Device::cpu));
  }
  const std::string bytes = file_bytes(whole);
  put_bytes(cut, bytes.substr(0, bytes.size() - 1));
  EXPECT_TRUE(throws_with([&] { h5::File::open(cut); }, {cut, "the file is truncated"}));
  EXPECT_THROW(h5::File::open(cut), h5::CorruptDataError);
}

}  // namespace
}  // namespace upcycle
