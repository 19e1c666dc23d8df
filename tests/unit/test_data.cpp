// Data: Fashion-MNIST IDX reader, text corpus split, the sharded sampler.
#include <gtest/gtest.h>
#include <zlib.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "upcycle/core/error.hpp"
#include "upcycle/data/fashion_mnist.hpp"
#include "upcycle/data/sampler.hpp"
#include "upcycle/data/text_corpus.hpp"

using namespace upcycle;
namespace fs = std::filesystem;

namespace {
fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("upcycle_test_data_" + name + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write_gz(const fs::path& p, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(FashionMnist, LoadsTheDebianPackageAsShipped) {
  if (!fs::exists(kFashionMnistDir)) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const ImageDataset train = load_fashion_mnist(kFashionMnistDir, "train");
  const ImageDataset test = load_fashion_mnist(kFashionMnistDir, "test");
  EXPECT_EQ(train.count, 60000);
  EXPECT_EQ(test.count, 10000);
  EXPECT_EQ(train.height, 28);
  EXPECT_EQ(train.width, 28);
  ASSERT_EQ(train.pixels.size(), 60000u * 28 * 28);
  // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  std::vector<int> per_class(10, 0);
  for (auto l : train.labels) ++per_class[static_cast<std::size_t>(l)];
  for (int c : per_class) EXPECT_EQ(c, 6000);
}

TEST(FashionMnist, MissingFileNamesThePackage) {
  const std::string msg = message_of([] { load_fashion_mnist("/nonexistent", "train"); });
  EXPECT_NE(msg.find("/nonexistent/train-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
}

TEST(FashionMnist, TruncatedAndForeignFilesAreRejected) {
  const fs::path d = temp_dir("idx");
  // Header promises 2 images of 2x2 but holds 3 bytes.
  write_gz(d / "truncated.gz", {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3});
  std::vector<std::int64_t> dims;
  std::string msg = message_of([&] { read_idx_gz((d / "truncated.gz").string(), dims); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  write_gz(d / "foreign.gz", {'h', 'e', 'l', 'l', 'o'});
  msg = message_of([&] { read_idx_gz((d / "foreign.gz").string(), dims); });
  EXPECT_NE(msg.find("not an unsigned-byte IDX file"), std::string::npos) << msg;
  // A valid tiny file reads back exactly.
  write_gz(d / "ok.gz", {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6});
  auto data = read_idx_gz((d / "ok.gz").string(), dims);
  EXPECT_EQ(dims, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(data, (std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6}));
  fs::remove_all(d);
}

TEST(TextCorpus, SplitsDocumentsDeterministically) {
  const fs::path d = temp_dir("text");
  {
    std::ofstream(d / "a") << "first doc\n%\nsecond doc\n%\nthird doc\n";
    std::ofstream(d / "b") << "a file without separators\n";
    std::ofstream(d / "a.dat") << "binary index that must be skipped";
  }
  const TextCorpus c1 = load_text_corpus({d.string()}, 0.5, 7);
  const TextCorpus c2 = load_text_corpus({d.string()}, 0.5, 7);
  EXPECT_EQ(c1.train, c2.train);
  EXPECT_EQ(c1.val, c2.val);
  EXPECT_EQ(c1.train_docs + c1.val_docs, 4);
  const std::string all(c1.train.begin(), c1.train.end());
  EXPECT_EQ(all.find("binary index"), std::string::npos);
  const TextCorpus none = load_text_corpus({d.string()}, 0.0, 7);
  EXPECT_EQ(none.train_docs, 4);
  EXPECT_EQ(std::string(none.train.begin(), none.train.end()),
            "first doc\nsecond doc\nthird doc\n\na file without separators\n\n");
  EXPECT_NE(message_of([&] { load_text_corpus({(d / "missing").string()}, 0.1, 1); }).find("missing"),
            std::string::npos);
  fs::remove_all(d);
}

TEST(Sampler, GlobalBatchesDoNotDependOnTheNumberOfRanks) {
  const std::int64_t n = 103, batch = 8;
  for (int world : {1, 2, 4}) {
    std::vector<ShardedSampler> ranks;
    for (int r = 0; r < world; ++r) ranks.emplace_back(n, batch, r, world, 42);
    ShardedSampler single(n, batch, 0, 1, 42);
    for (int step = 0; step < 30; ++step) {  // crosses two epoch boundaries
      std::vector<std::int64_t> joined;
      for (auto& s : ranks) {
        auto part = s.next();
        joined.insert(joined.end(), part.begin(), part.end());
      }
      ASSERT_EQ(joined, single.next()) << "world " << world << " step " << step;
    }
  }
}

TEST(Sampler, EachEpochIsAPermutationAndEpochsDiffer) {
  ShardedSampler s(64, 16, 0, 1, 5);
  std::vector<std::int64_t> e0, e1;
  for (int i = 0; i < 4; ++i) {
    auto b = s.next();
    e0.insert(e0.end(), b.begin(), b.end());
  }
  for (int i = 0; i < 4; ++i) {
    auto b = s.next();
    e1.insert(e1.end(), b.begin(), b.end());
  }
  EXPECT_EQ(std::set<std::int64_t>(e0.begin(), e0.end()).size(), 64u);
  EXPECT_EQ(std::set<std::int64_t>(e1.begin(), e1.end()).size(), 64u);
  EXPECT_NE(e0, e1);
}

TEST(Sampler, ResumingFromTheCursorReplaysTheSameBatches) {
  ShardedSampler a(50, 10, 1, 2, 3);
  for (int i = 0; i < 7; ++i) a.next();
  ShardedSampler b(50, 10, 1, 2, 3);
  b.restore(a.cursor());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.next(), b.next());
}

TEST(Sampler, RejectsBatchesThatDoNotSplitOverRanks) {
  EXPECT_THROW(ShardedSampler(100, 10, 0, 4, 1), Error);
  EXPECT_THROW(ShardedSampler(5, 10, 0, 1, 1), Error);
}

TEST(Sampler, WithoutShuffleWalksTheExamplesInOrder) {
  ShardedSampler s(10, 4, 1, 2, 3, /*shuffle=*/false);
  EXPECT_EQ(s.next(), (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(s.next(), (std::vector<std::int64_t>{6, 7}));
  EXPECT_EQ(s.next(), (std::vector<std::int64_t>{2, 3}));  // next epoch (the last 2 examples are dropped)
}
