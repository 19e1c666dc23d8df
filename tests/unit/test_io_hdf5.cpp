// HDF5 layer: exact round trips per dtype, conversion, attributes, lookups, and the error messages
// for missing / foreign / mismatching data (they must name the file and the dataset).
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <fstream>
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

}  // namespace
}  // namespace upcycle
