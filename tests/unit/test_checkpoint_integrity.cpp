// Checkpoint integrity: a changed byte anywhere in a checkpoint is either detected when it loads or
// changes nothing that loads; corruption and truncation name the dataset and the previous
// checkpoint; check_checkpoint reports what is wrong without throwing; newest_valid_checkpoint
// skips temporary and corrupt files; version-1 files (no checksums) still load.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "error_of.hpp"
#include "tiny_configs.hpp"
#include "upcycle/io/config.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/nn/vit.hpp"
#include "upcycle/train/checkpoint.hpp"

using namespace upcycle;
using upcycle::testing::error_of;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("upcycle_test_ckpt_integrity_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

bool any_contains(const std::vector<std::string>& texts, const std::string& part) {
  return std::any_of(texts.begin(), texts.end(), [&](const std::string& t) { return contains(t, part); });
}

// Where the stored chunks of every dataset of a file lie: [offset, offset + size) per chunk.
struct Span {
  std::string dataset;
  std::uint64_t offset, size;
};

std::vector<Span> chunk_spans(const std::string& path) {
  std::vector<Span> spans;
  const h5::File f = h5::File::open(path);
  for (const auto& name : h5::list_datasets(f)) {
    const hid_t ds = H5Dopen2(f.id(), name.c_str(), H5P_DEFAULT);
    const hid_t space = H5Dget_space(ds);
    hsize_t chunks = 0;
    if (H5Dget_num_chunks(ds, space, &chunks) >= 0)
      for (hsize_t i = 0; i < chunks; ++i) {
        unsigned mask = 0;
        haddr_t addr = 0;
        hsize_t size = 0;
        if (H5Dget_chunk_info(ds, space, i, nullptr, &mask, &addr, &size) >= 0) spans.push_back({name, addr, size});
      }
    H5Eclear2(H5E_DEFAULT);  // a compact or empty dataset has no chunks
    H5Sclose(space);
    H5Dclose(ds);
  }
  return spans;
}

Span chunk_of(const std::string& path, const std::string& dataset) {
  for (const auto& s : chunk_spans(path))
    if (s.dataset == dataset) return s;
  ADD_FAILURE() << dataset << " has no stored chunk in " << path;
  return {dataset, 0, 0};
}

// A tiny ViT with AdamW moments of random values, a training state, and the config they belong to:
// what a checkpoint holds.
struct Trained {
  explicit Trained(std::uint64_t seed)
      : cfg(parse_config(upcycle::testing::tiny_vit_ini(1), "test")), rng(seed), model(vit_config(), rng),
        optimizer(model.named_parameters(), AdamWOptions{}) {
    std::mt19937 gen(static_cast<std::uint32_t>(seed));
    std::uniform_real_distribution<float> uniform(0.001f, 1.0f);
    for (auto& s : optimizer.slots())
      for (Tensor t : {s.m, s.v})
        for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = uniform(gen);
    optimizer.set_steps_taken(static_cast<std::int64_t>(seed % 1000));
    state.stage = "dense";
    state.step = 100;
    state.dropout_rng = RngStream(seed * 7 + 1, seed * 13 + 5);
    state.cursor = {static_cast<std::int64_t>(seed % 5), static_cast<std::int64_t>(seed % 97)};
  }
  static nn::ViTConfig vit_config() {
    nn::ViTConfig c;
    c.image_size = 28;
    c.patch_size = 7;
    c.depth = 2;
    c.block.d_model = 16;
    c.block.n_heads = 2;
    c.block.d_ff = 32;
    return c;
  }
  void save(const std::string& path, std::int64_t step) {
    state.step = step;
    save_checkpoint(path, cfg, model, &optimizer, state);
  }
  void load(const std::string& path) { load_checkpoint(path, model, &optimizer, &state); }

  // Every loaded value as bytes, to compare bit for bit.
  std::vector<std::string> snapshot() const {
    std::vector<std::string> out;
    auto bytes = [&](const Tensor& t) {
      out.emplace_back(static_cast<const char*>(t.raw()), static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype()));
    };
    for (const auto& [name, p] : model.named_parameters()) bytes(p.value());
    for (const auto& s : optimizer.slots()) {
      bytes(s.m);
      bytes(s.v);
    }
    out.push_back(state.stage + " " + std::to_string(state.step) + " " + std::to_string(state.dropout_rng.seed()) + " " +
                  std::to_string(state.dropout_rng.offset()) + " " + std::to_string(state.cursor.epoch) + " " +
                  std::to_string(state.cursor.position) + " " + std::to_string(optimizer.steps_taken()));
    return out;
  }

  Config cfg;
  RngStream rng;
  nn::ViT model;
  AdamW optimizer;
  TrainState state;
};

const char* const kTensor = "/model/blocks/01/mlp/fc1/weight";

// A folder with two step checkpoints of one run: step-0000050.h5 and step-0000100.h5 (latest.h5).
struct StageFolder {
  explicit StageFolder(const std::string& name) : root(fresh_dir(name)), dir((root / "checkpoints" / "dense").string()) {
    Trained run(11);
    run.state.step = 50;
    save_run_checkpoint(dir, 0, run.cfg, run.model, &run.optimizer, run.state);
    run.state.step = 100;
    save_run_checkpoint(dir, 0, run.cfg, run.model, &run.optimizer, run.state);
    expected = run.snapshot();
  }
  ~StageFolder() { fs::remove_all(root); }
  std::string step(std::int64_t s) const { return step_checkpoint_path(dir, s); }

  fs::path root;
  std::string dir;
  std::vector<std::string> expected;  // what step 100 holds
};

// Flips `count` bytes of a copy of the file from `offset` on (XOR, so every byte changes).
void flip_bytes(const std::string& path, std::uint64_t offset, std::size_t count) {
  std::string bytes = read_bytes(path);
  ASSERT_LE(offset + count, bytes.size());
  for (std::size_t i = 0; i < count; ++i) bytes[offset + i] = static_cast<char>(bytes[offset + i] ^ 0x5a);
  write_bytes(path, bytes);
}

}  // namespace

TEST(CheckpointIntegrity, FlippedBytesInADatasetAreDetectedNamingItAndThePreviousCheckpoint) {
  const StageFolder folder("flipped");
  const std::string newest = folder.step(100);
  const Span chunk = chunk_of(newest, kTensor);
  ASSERT_GT(chunk.size, 64u);
  flip_bytes(newest, chunk.offset + chunk.size / 2, 4);

  Trained fresh(99);
  const auto before = fresh.snapshot();
  const std::string msg = error_of([&] { fresh.load(newest); });
  EXPECT_TRUE(contains(msg, kTensor)) << msg;
  EXPECT_TRUE(contains(msg, "corrupt")) << msg;
  EXPECT_TRUE(contains(msg, newest)) << msg;
  EXPECT_TRUE(contains(msg, "the previous checkpoint of this stage is " + folder.step(50))) << msg;
  EXPECT_TRUE(contains(msg, "checkpoint.resume = auto")) << msg;
  EXPECT_TRUE(fresh.snapshot() == before) << "a failed load changed the model";
  // Through latest.h5 the message still points at the step before the one it names.
  const std::string via_latest = error_of([&] { fresh.load(latest_checkpoint_path(folder.dir)); });
  EXPECT_TRUE(contains(via_latest, "the previous checkpoint of this stage is " + folder.step(50))) << via_latest;
  // The error is typed, so callers can tell corruption from a mismatched model.
  EXPECT_THROW(fresh.load(newest), h5::CorruptDataError);

  const CheckpointCheck check = check_checkpoint(newest);
  EXPECT_FALSE(check.ok);
  ASSERT_FALSE(check.problems.empty());
  EXPECT_TRUE(any_contains(check.problems, kTensor) && any_contains(check.problems, "corrupt"))
      << ::testing::PrintToString(check.problems);
  // Every other dataset still read back.
  const CheckpointCheck good = check_checkpoint(folder.step(50));
  EXPECT_TRUE(good.ok) << ::testing::PrintToString(good.problems);
  EXPECT_EQ(check.datasets_checked + 1, good.datasets_checked);

  // The earlier checkpoint loads and holds what was saved (the same values at step 50).
  Trained resumed(98);
  resumed.load(folder.step(50));
  auto want = folder.expected;
  want.back().replace(want.back().find(" 100 "), 5, " 50 ");
  EXPECT_TRUE(resumed.snapshot() == want) << "step 50 did not load as saved";
}

TEST(CheckpointIntegrity, CorruptionWithoutAnEarlierCheckpointSaysSo) {
  const StageFolder folder("no_previous");
  fs::remove(folder.step(50));
  const Span chunk = chunk_of(folder.step(100), kTensor);
  flip_bytes(folder.step(100), chunk.offset + 8, 1);
  Trained fresh(99);
  const std::string msg = error_of([&] { fresh.load(folder.step(100)); });
  EXPECT_TRUE(contains(msg, kTensor) && contains(msg, "no earlier step checkpoint in " + folder.dir + " verifies")) << msg;
}

// Blocks of zeros and of random bytes written at offsets spread over the whole file: each either
// makes loading fail with an upcycle::Error (and check_checkpoint report it) or leaves every loaded
// value bit-identical (it hit bytes no load reads). A block over stored tensor data that changes
// it must be detected.
TEST(CheckpointIntegrity, OverwrittenBlocksAreDetectedOrChangeNothing) {
  const StageFolder folder("blocks");
  const std::string original = read_bytes(folder.step(100));
  const std::vector<Span> chunks = chunk_spans(folder.step(100));
  const std::uint64_t n = original.size();
  const std::uint64_t block = 64;
  std::vector<std::uint64_t> offsets = {0, 8, 40, 100, 200, 300, 500, 700, 1000, 1500, 2000, 3000};
  for (int i = 1; i < 40; ++i) offsets.push_back(n * static_cast<std::uint64_t>(i) / 40);
  for (std::uint64_t back : {1000u, 500u, 300u, 200u, 100u, 64u}) offsets.push_back(n - back);
  const std::string trial = (folder.root / "trial.h5").string();
  std::mt19937 gen(1234);
  int detected = 0, harmless = 0;
  for (const bool random : {false, true})
    for (const std::uint64_t offset : offsets) {
      std::string bytes = original;
      for (std::uint64_t i = offset; i < std::min(n, offset + block); ++i)
        bytes[i] = random ? static_cast<char>(gen() & 0xff) : '\0';
      write_bytes(trial, bytes);
      const bool hits_data = bytes != original && std::any_of(chunks.begin(), chunks.end(), [&](const Span& s) {
                               return offset < s.offset + s.size && s.offset < offset + block &&
                                      bytes.compare(s.offset, s.size, original, s.offset, s.size) != 0;
                             });
      const std::string where = (random ? "random bytes" : "zeros") + std::string(" at offset ") + std::to_string(offset) +
                                " of " + std::to_string(n);
      Trained fresh(99);
      bool failed = false;
      try {
        fresh.load(trial);
      } catch (const Error& e) {
        failed = true;
        EXPECT_TRUE(contains(e.message(), trial)) << where << ": " << e.message();
      }
      if (failed) {
        ++detected;
        EXPECT_FALSE(check_checkpoint(trial).ok) << where << ": load failed but check_checkpoint passed";
        continue;
      }
      ++harmless;
      EXPECT_FALSE(hits_data) << where << " changed stored tensor data and loaded without an error";
      EXPECT_TRUE(fresh.snapshot() == folder.expected) << where << ": loaded without an error but the state changed";
    }
  EXPECT_GT(detected, 0);
  std::cout << detected << " detected, " << harmless << " changed nothing that loads\n";
}

TEST(CheckpointIntegrity, TruncationIsDetected) {
  const StageFolder folder("truncated");
  const std::string original = read_bytes(folder.step(100));
  const std::string cut = (folder.root / "cut.h5").string();
  for (const std::size_t keep : {original.size() - 1, original.size() - 100, original.size() * 3 / 4,
                                 original.size() / 2, std::size_t{2048}, std::size_t{100}}) {
    write_bytes(cut, original.substr(0, keep));
    Trained fresh(99);
    const auto before = fresh.snapshot();
    const std::string msg = error_of([&] { fresh.load(cut); });
    EXPECT_TRUE(contains(msg, cut) && contains(msg, "the file is truncated"))
        << "kept " << keep << " of " << original.size() << " bytes: " << msg;
    EXPECT_TRUE(fresh.snapshot() == before) << "kept " << keep << ": a failed load changed the model";
    const CheckpointCheck check = check_checkpoint(cut);
    EXPECT_FALSE(check.ok) << "kept " << keep;
  }
  // A truncated step file is damage like a checksum mismatch: the error points at the step before.
  write_bytes(folder.step(100), original.substr(0, original.size() - 10));
  Trained fresh(99);
  EXPECT_THROW(fresh.load(folder.step(100)), h5::CorruptDataError);
  const std::string msg = error_of([&] { fresh.load(folder.step(100)); });
  EXPECT_TRUE(contains(msg, "truncated") && contains(msg, "the previous checkpoint of this stage is " + folder.step(50)))
      << msg;
}

TEST(CheckpointIntegrity, CorruptStringAttributesAreDetected) {
  const StageFolder folder("strings");
  const std::string path = folder.step(100);
  std::string bytes = read_bytes(path);
  // The config text and the stage live in HDF5's global heap, which has no checksum of its own.
  const auto config_at = bytes.find("[model]");
  ASSERT_NE(config_at, std::string::npos);
  bytes[config_at + 1] = 'M';
  write_bytes(path, bytes);
  std::string msg = error_of([&] { checkpoint_config_text(path); });
  EXPECT_TRUE(contains(msg, "/@config") && contains(msg, "corrupt")) << msg;
  const CheckpointCheck check = check_checkpoint(path);
  EXPECT_FALSE(check.ok);
  EXPECT_TRUE(any_contains(check.problems, "/@config")) << ::testing::PrintToString(check.problems);

  const std::string older = folder.step(50);
  bytes = read_bytes(older);
  const auto stage_at = bytes.find("dense");
  ASSERT_NE(stage_at, std::string::npos);
  bytes[stage_at] = 't';
  write_bytes(older, bytes);
  Trained fresh(99);
  msg = error_of([&] { fresh.load(older); });
  EXPECT_TRUE(contains(msg, "/@stage") && contains(msg, "corrupt")) << msg;
}

TEST(CheckpointIntegrity, StepCheckpointsAreListedNewestFirstWithoutTemporaryFiles) {
  const StageFolder folder("listing");
  // A leftover of a killed write and a step number past seven digits.
  fs::copy_file(folder.step(100), fs::path(folder.dir) / ".step-0000150.h5.tmp-4242");
  fs::copy_file(folder.step(50), fs::path(folder.dir) / "step-12345678.h5");
  std::ofstream(fs::path(folder.dir) / "step-abc.h5") << "x";
  EXPECT_EQ(step_checkpoints(folder.dir),
            (std::vector<std::string>{(fs::path(folder.dir) / "step-12345678.h5").string(), folder.step(100), folder.step(50)}));
  EXPECT_TRUE(step_checkpoints((folder.root / "nothing_here").string()).empty());
}

TEST(CheckpointIntegrity, NewestValidCheckpointSkipsTemporaryAndCorruptFiles) {
  const StageFolder folder("newest_valid");
  EXPECT_EQ(newest_valid_checkpoint(folder.dir), folder.step(100));  // latest.h5's target
  // A temporary file of a newer step (even a complete one) is never a candidate; the newest step
  // file is corrupt.
  const fs::path tmp = fs::path(folder.dir) / ".step-0000150.h5.tmp-4242";
  fs::copy_file(folder.step(100), tmp);
  const Span chunk = chunk_of(folder.step(100), kTensor);
  flip_bytes(folder.step(100), chunk.offset + chunk.size / 3, 2);
  std::vector<std::string> rejected;
  EXPECT_EQ(newest_valid_checkpoint(folder.dir, &rejected), folder.step(50));
  ASSERT_EQ(rejected.size(), 1u) << ::testing::PrintToString(rejected);  // step 100 once, not again as latest.h5's target
  EXPECT_EQ(rejected[0].rfind(folder.step(100) + ": ", 0), 0u) << rejected[0];
  EXPECT_TRUE(contains(rejected[0], kTensor)) << rejected[0];
  // latest.h5 first: when it names step 50, step 50 is chosen over a good step 100.
  fs::remove(folder.step(100));
  fs::copy_file(folder.step(50), folder.step(100));
  const fs::path latest = latest_checkpoint_path(folder.dir);
  fs::remove(latest);
  fs::create_symlink("step-0000050.h5", latest);
  EXPECT_EQ(newest_valid_checkpoint(folder.dir), folder.step(50));
  // Nothing valid: "" and every file rejected.
  for (const auto& f : step_checkpoints(folder.dir)) write_bytes(f, "not a checkpoint");
  rejected.clear();
  EXPECT_EQ(newest_valid_checkpoint(folder.dir, &rejected), "");
  EXPECT_EQ(rejected.size(), 2u) << ::testing::PrintToString(rejected);
  EXPECT_EQ(newest_valid_checkpoint((folder.root / "no_such_folder").string()), "");
}

TEST(CheckpointIntegrity, CheckReportsStructuralProblemsWithoutThrowing) {
  const StageFolder folder("structure");
  const std::string path = folder.step(100);
  const CheckpointCheck good = check_checkpoint(path);
  EXPECT_TRUE(good.ok) << ::testing::PrintToString(good.problems);
  EXPECT_TRUE(good.notes.empty());
  {
    h5::File f = h5::File::open_rw(path);
    h5::write_tensor(f, "/optimizer/m/head/bias", Tensor::zeros({3}, DType::f32, Device::cpu));
    h5::write_tensor(f, "/optimizer/v/extra", Tensor::zeros({3}, DType::f32, Device::cpu));
    H5Ldelete(f.id(), "/optimizer/v/head/weight", H5P_DEFAULT);
    H5Ldelete(f.id(), "/state/data/cursor", H5P_DEFAULT);
    h5::write_tensor(f, "/state/rng/dropout", Tensor::zeros({3}, DType::i64, Device::cpu));
    h5::write_tensor(f, "/teacher/ln_f/gamma", Tensor::zeros({4}, DType::f32, Device::cpu));
    H5Adelete(f.id(), "config");
    h5::write_attribute(f, "/", "step", -3);
  }
  const CheckpointCheck bad = check_checkpoint(path);
  EXPECT_FALSE(bad.ok);
  const auto& p = bad.problems;
  for (const char* part : {"/optimizer/m/head/bias': shape [3], expected [10]", "/optimizer/v/extra' has no /model/extra",
                           "/optimizer/v/head/weight' is missing", "/state/data/cursor' is missing",
                           "/state/rng/dropout': [3] i64, expected [2] i64", "/teacher/ln_f/gamma': shape [4]",
                           "/@config", "'step' is -3"})
    EXPECT_TRUE(any_contains(p, part)) << "no problem mentions \"" << part << "\": " << ::testing::PrintToString(p);

  // Files that are not checkpoints: reported, never thrown.
  const std::string text = (folder.root / "text.h5").string();
  write_bytes(text, "hello");
  CheckpointCheck c;
  EXPECT_NO_THROW(c = check_checkpoint(text));
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(any_contains(c.problems, "not an HDF5 file")) << ::testing::PrintToString(c.problems);
  EXPECT_NO_THROW(c = check_checkpoint((folder.root / "missing.h5").string()));
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(any_contains(c.problems, "not found")) << ::testing::PrintToString(c.problems);
  {
    h5::File f = h5::File::open_rw(folder.step(50));
    h5::write_attribute(f, "/", "version", 3);
  }
  c = check_checkpoint(folder.step(50));
  EXPECT_FALSE(c.ok);
  EXPECT_TRUE(any_contains(c.problems, "checkpoint version 3, this build reads versions 1 to 2"))
      << ::testing::PrintToString(c.problems);
}

namespace {
// Rewrites every dataset of `path` without checksums (contiguous, no filter), as version-1 files were.
void strip_checksums(const std::string& path) {
  h5::File f = h5::File::open_rw(path);
  for (const auto& name : h5::list_datasets(f)) {
    const Tensor t = h5::read_tensor(f, name);
    H5Ldelete(f.id(), name.c_str(), H5P_DEFAULT);
    std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
    const hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    const hid_t type = t.dtype() == DType::f32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64;
    const hid_t ds = H5Dcreate2(f.id(), name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw());
    H5Dclose(ds);
    H5Sclose(space);
  }
}
}  // namespace

TEST(CheckpointIntegrity, VersionOneFilesLoadUnverified) {
  const StageFolder folder("version1");
  const std::string path = folder.step(100);
  strip_checksums(path);
  {
    h5::File f = h5::File::open(path);
    EXPECT_FALSE(h5::dataset_has_checksum(f, kTensor));
  }
  // Labelled version 2, a dataset without a checksum is a problem.
  CheckpointCheck check = check_checkpoint(path);
  EXPECT_FALSE(check.ok);
  EXPECT_TRUE(any_contains(check.problems, std::string(kTensor) + "' has no checksum")) << ::testing::PrintToString(check.problems);
  // Labelled version 1: it loads as it is, and the check passes with a note.
  {
    h5::File f = h5::File::open_rw(path);
    h5::write_attribute(f, "/", "version", 1);
  }
  check = check_checkpoint(path);
  EXPECT_TRUE(check.ok) << ::testing::PrintToString(check.problems);
  ASSERT_EQ(check.notes.size(), 1u);
  EXPECT_TRUE(contains(check.notes[0], "version 1") && contains(check.notes[0], "without checksums")) << check.notes[0];
  Trained fresh(99);
  fresh.load(path);
  EXPECT_TRUE(fresh.snapshot() == folder.expected) << "the version-1 file did not load as saved";
}

TEST(CheckpointIntegrity, FilesAreWrittenAsVersionTwoWithEveryDatasetChecksummed) {
  const StageFolder folder("format");
  const h5::File f = h5::File::open(folder.step(100));
  EXPECT_EQ(h5::read_int_attribute(f, "/", "version"), 2);
  EXPECT_EQ(kCheckpointVersion, 2);
  const auto datasets = h5::list_datasets(f);
  ASSERT_GT(datasets.size(), 10u);
  for (const auto& d : datasets) EXPECT_TRUE(h5::dataset_has_checksum(f, d)) << d;
  // The superblock of the HDF5 1.10 format (version 3) carries a checksum.
  unsigned super = 0, freespace = 0, sohm = 0;
  const hid_t fcpl = H5Fget_create_plist(f.id());
  H5Pget_version(fcpl, &super, &freespace, nullptr, &sohm);
  H5Pclose(fcpl);
  EXPECT_GE(super, 2u);
}
