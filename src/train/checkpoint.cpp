#include "upcycle/train/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "upcycle/io/hdf5.hpp"
#include "upcycle/moe/moe_layer.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Writes via `write` into a temporary file beside `path`, then renames it into place.
template <class F>
void write_atomically(const std::string& path, F&& write) {
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  fs::create_directories(dir);
  const std::string tmp = (dir / ("." + target.filename().string() + ".tmp-" + std::to_string(::getpid()))).string();
  try {
    {
      h5::File f = h5::File::create(tmp);
      write(f);
      f.close();
    }
    fsync_path(tmp);
    fs::rename(tmp, target);
    fsync_path(dir.string());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

Tensor pair_tensor(std::int64_t a, std::int64_t b) { return Tensor::from_vector<std::int64_t>({a, b}, {2}, Device::cpu); }

}  // namespace

namespace {
void gather_into(const std::string& path, const Tensor& local, Communicator& ep, std::map<std::string, Tensor>& out) {
  const Tensor src = local.to(Device::cpu);
  Tensor full = Tensor::empty(gathered_shape(src.shape(), ep.size()), src.dtype(), Device::cpu);
  ep.all_gather(src, full);
  out.emplace(path, full);
}
}  // namespace

void gather_module_experts(const nn::Module& module, const std::string& prefix, Communicator& ep,
                           std::map<std::string, Tensor>& full) {
  for (const auto& [name, p] : module.named_parameters())
    if (moe::MoeLayer::is_expert_parameter(name)) gather_into(prefix + name, p.value(), ep, full);
}

std::map<std::string, Tensor> gather_expert_tensors(const nn::Module& model, const AdamW* optimizer,
                                                    Communicator& ep) {
  std::map<std::string, Tensor> out;
  auto gather = [&](const std::string& path, const Tensor& local) { gather_into(path, local, ep, out); };
  gather_module_experts(model, "/model/", ep, out);
  if (optimizer)
    for (const auto& s : optimizer->slots())
      if (moe::MoeLayer::is_expert_parameter(s.name)) {
        gather("/optimizer/m/" + s.name, s.m);
        gather("/optimizer/v/" + s.name, s.v);
      }
  return out;
}

void save_checkpoint(const std::string& path, const Config& cfg, const nn::Module& model, const AdamW* optimizer,
                     const TrainState& state, const CheckpointShards* shards) {
  auto pick = [&](const std::string& dataset, const Tensor& local) -> const Tensor& {
    if (!shards) return local;
    const auto it = shards->full.find(dataset);
    return it == shards->full.end() ? local : it->second;
  };
  write_atomically(path, [&](h5::File& f) {
    h5::write_attribute(f, "/", "format", std::string(kCheckpointFormat));
    h5::write_attribute(f, "/", "version", kCheckpointVersion);
    h5::write_attribute(f, "/", "stage", state.stage);
    h5::write_attribute(f, "/", "step", state.step);
    h5::write_attribute(f, "/", "config", cfg.to_ini());
    for (const auto& [name, p] : model.named_parameters())
      h5::write_tensor(f, "/model/" + name, pick("/model/" + name, p.value()));
    if (optimizer) {
      for (const auto& s : optimizer->slots()) {
        h5::write_tensor(f, "/optimizer/m/" + s.name, pick("/optimizer/m/" + s.name, s.m));
        h5::write_tensor(f, "/optimizer/v/" + s.name, pick("/optimizer/v/" + s.name, s.v));
      }
      h5::write_attribute(f, "/optimizer", "steps", optimizer->steps_taken());
    }
    h5::write_tensor(f, "/state/rng/dropout", pair_tensor(static_cast<std::int64_t>(state.dropout_rng.seed()),
                                                          static_cast<std::int64_t>(state.dropout_rng.offset())));
    h5::write_tensor(f, "/state/data/cursor", pair_tensor(state.cursor.epoch, state.cursor.position));
    if (shards) {
      for (const auto& [dataset, t] : shards->extras) h5::write_tensor(f, dataset, t.to(Device::cpu));
      for (const auto& [prefix, module] : shards->modules)
        for (const auto& [name, p] : module->named_parameters())
          h5::write_tensor(f, prefix + name, pick(prefix + name, p.value()));
    }
  });
}

namespace {
// The checked version of an open file: throws naming the file unless it is an upcycle checkpoint
// of a version this build reads.
std::int64_t checkpoint_version(const h5::File& f, const std::string& path) {
  if (!h5::has_attribute(f, "/", "format") || h5::read_string_attribute(f, "/", "format") != kCheckpointFormat)
    UPCYCLE_THROW(path, ": not an upcycle checkpoint (the root attribute 'format' is not '", kCheckpointFormat, "')");
  if (!h5::has_attribute(f, "/", "version"))
    UPCYCLE_THROW(path, ": the root attribute 'version' is missing (expected ", kOldestCheckpointVersion, " to ",
                  kCheckpointVersion, ")");
  const std::int64_t version = h5::read_int_attribute(f, "/", "version");
  if (version < kOldestCheckpointVersion || version > kCheckpointVersion)
    UPCYCLE_THROW(path, ": checkpoint version ", version, ", this build reads versions ", kOldestCheckpointVersion,
                  " to ", kCheckpointVersion);
  return version;
}

h5::File open_checkpoint(const std::string& path, std::int64_t* version = nullptr) {
  if (!fs::exists(path)) UPCYCLE_THROW(path, ": checkpoint not found");
  h5::File f = h5::File::open(path);
  const std::int64_t v = checkpoint_version(f, path);
  if (version) *version = v;
  return f;
}
}  // namespace

bool checkpoint_has_dataset(const std::string& path, const std::string& dataset) {
  h5::File f = open_checkpoint(path);
  return h5::has_dataset(f, dataset);
}

namespace {
// The checks of check_checkpoint on an open file of a readable version.
class CheckpointChecker {
 public:
  CheckpointChecker(const h5::File& f, std::int64_t version, CheckpointCheck& out) : f_(f), version_(version), out_(out) {}

  void run() {
    if (version_ < 2)
      out_.notes.push_back("version " + std::to_string(version_) +
                           ": written without checksums, so a change of its bytes cannot be detected");
    attempt([&] { h5::read_string_attribute(f_, "/", "stage"); });
    attempt([&] {
      const std::int64_t step = h5::read_int_attribute(f_, "/", "step");
      if (step < 0) problem("root attribute 'step' is " + std::to_string(step) + ", expected >= 0");
    });
    attempt([&] {
      if (h5::read_string_attribute(f_, "/", "config").empty()) problem("root attribute 'config' is empty");
    });
    datasets_ = h5::list_datasets(f_);
    for (const char* required : {"/state/rng/dropout", "/state/data/cursor"}) check_pair(required);
    check_model_and_moments();
    for (const auto& dataset : datasets_) attempt([&] { read_back(dataset); });
  }

 private:
  void problem(std::string p) {
    out_.ok = false;
    out_.problems.push_back(std::move(p));
  }
  // Runs `check`; an Error (it names the file and the object) becomes a problem.
  template <class F>
  void attempt(F&& check) {
    try {
      check();
    } catch (const Error& e) {
      problem(e.message());
    }
  }
  bool has(const std::string& dataset) const {
    return std::binary_search(datasets_.begin(), datasets_.end(), dataset);
  }
  // The datasets under `group` ("/model/"), keyed by the name below it.
  std::map<std::string, Shape> shapes_under(const std::string& group) {
    std::map<std::string, Shape> out;
    for (const auto& d : datasets_)
      if (d.rfind(group, 0) == 0) attempt([&] { out.emplace(d.substr(group.size()), h5::dataset_shape(f_, d)); });
    return out;
  }
  void check_pair(const std::string& dataset) {
    if (!has(dataset)) return problem("dataset '" + dataset + "' is missing");
    attempt([&] {
      const Shape shape = h5::dataset_shape(f_, dataset);
      const DType dtype = h5::dataset_dtype(f_, dataset);
      if (shape != Shape{2} || dtype != DType::i64)
        problem("dataset '" + dataset + "': " + shape.str() + " " + dtype_name(dtype) + ", expected [2] i64");
    });
  }
  // `group`/<name> must have the shape of /model/<name> for every name; with `complete`, every
  // /model/<name> must also be there.
  void check_like_model(const std::map<std::string, Shape>& model, const std::string& group, bool complete) {
    const auto found = shapes_under(group);
    for (const auto& [name, shape] : found) {
      const auto m = model.find(name);
      if (m == model.end())
        problem("dataset '" + group + name + "' has no /model/" + name);
      else if (m->second != shape)
        problem("dataset '" + group + name + "': shape " + shape.str() + ", expected " + m->second.str() +
                " as /model/" + name);
    }
    if (complete)
      for (const auto& [name, shape] : model)
        if (!found.count(name)) problem("dataset '" + group + name + "' is missing (/model/" + name + " has no moment)");
  }
  void check_model_and_moments() {
    const auto model = shapes_under("/model/");
    if (model.empty()) problem("no datasets under /model");
    if (h5::has_group(f_, "/optimizer")) {
      attempt([&] {
        const std::int64_t steps = h5::read_int_attribute(f_, "/optimizer", "steps");
        if (steps < 0) problem("attribute '/optimizer/@steps' is " + std::to_string(steps) + ", expected >= 0");
      });
      check_like_model(model, "/optimizer/m/", true);
      check_like_model(model, "/optimizer/v/", true);
    }
    check_like_model(model, "/teacher/", false);
  }
  void read_back(const std::string& dataset) {
    if (version_ >= 2 && !h5::dataset_has_checksum(f_, dataset))
      return problem("dataset '" + dataset + "' has no checksum (a version-2 checkpoint checksums every dataset)");
    h5::read_tensor(f_, dataset);  // verifies the checksum of every chunk
    ++out_.datasets_checked;
  }

  const h5::File& f_;
  const std::int64_t version_;
  CheckpointCheck& out_;
  std::vector<std::string> datasets_;  // sorted
};
}  // namespace

CheckpointCheck check_checkpoint(const std::string& path) {
  CheckpointCheck check;
  try {
    std::int64_t version = 0;
    const h5::File f = open_checkpoint(path, &version);
    CheckpointChecker(f, version, check).run();
  } catch (const Error& e) {
    check.ok = false;
    check.problems.push_back(e.message());
  } catch (const std::exception& e) {  // e.g. a filesystem error: still a report, never a throw
    check.ok = false;
    check.problems.push_back(path + ": " + e.what());
  }
  return check;
}

std::string checkpoint_config_text(const std::string& path) {
  h5::File f = open_checkpoint(path);
  return h5::read_string_attribute(f, "/", "config");
}

namespace {
void read_checkpoint_into(const std::string& path, nn::Module& model, AdamW* optimizer, TrainState* state,
                          const CheckpointLoadOptions* options) {
  h5::File f = open_checkpoint(path);
  const int shard = options ? options->expert_shard : 0, shards = options ? options->expert_shards : 1;
  UPCYCLE_CHECK(shards >= 1 && shard >= 0 && shard < shards, "load_checkpoint: bad expert shard ", shard, " of ",
                shards);
  // An expert tensor is stored as [E, ...]: read it whole and keep this rank's rows.
  auto read = [&](const std::string& name, const std::string& dataset, DType dtype, const Shape& shape) {
    if (!moe::MoeLayer::is_expert_parameter(name) || shards == 1) return h5::read_tensor(f, dataset, dtype, shape);
    std::vector<std::int64_t> dims(shape.begin(), shape.end());
    const std::int64_t local = dims.at(0);
    dims[0] = local * shards;
    const Tensor full = h5::read_tensor(f, dataset, dtype, Shape(dims));
    return full.rows(shard * local, (shard + 1) * local);
  };
  // Read everything first, then assign: a failure leaves the model and optimiser untouched.
  std::vector<std::pair<Var, Tensor>> params;
  for (const auto& [name, p] : model.named_parameters())
    params.emplace_back(p, read(name, "/model/" + name, p.dtype(), p.shape()));
  if (options)
    for (const auto& [prefix, module] : options->modules)
      for (const auto& [name, p] : module->named_parameters())
        params.emplace_back(p, read(name, prefix + name, p.dtype(), p.shape()));
  std::vector<std::pair<Tensor, Tensor>> moments;
  std::int64_t opt_steps = 0;
  if (optimizer) {
    for (const auto& s : optimizer->slots()) {
      moments.emplace_back(s.m, read(s.name, "/optimizer/m/" + s.name, s.m.dtype(), s.m.shape()));
      moments.emplace_back(s.v, read(s.name, "/optimizer/v/" + s.name, s.v.dtype(), s.v.shape()));
    }
    opt_steps = h5::read_int_attribute(f, "/optimizer", "steps");
  }
  TrainState loaded;
  if (state) {
    loaded.stage = h5::read_string_attribute(f, "/", "stage");
    loaded.step = h5::read_int_attribute(f, "/", "step");
    const auto rng = h5::read_tensor(f, "/state/rng/dropout", DType::i64, {2}).to_vector<std::int64_t>();
    loaded.dropout_rng = RngStream(static_cast<std::uint64_t>(rng[0]), static_cast<std::uint64_t>(rng[1]));
    const auto cur = h5::read_tensor(f, "/state/data/cursor", DType::i64, {2}).to_vector<std::int64_t>();
    loaded.cursor = {cur[0], cur[1]};
  }
  if (options)
    for (const auto& [dataset, dst] : options->optional)
      if (h5::has_dataset(f, dataset)) moments.emplace_back(dst, h5::read_tensor(f, dataset, dst.dtype(), dst.shape()));
  for (auto& [p, t] : params) {
    Var q = p;
    q.value().copy_from(t.to(q.device()));
  }
  for (auto& [dst, t] : moments) dst.copy_from(t.to(dst.device()));
  if (optimizer) optimizer->set_steps_taken(opt_steps);
  if (state) *state = loaded;
}

// The step of a file named step-NNNNNNN.h5 (any number of digits), or -1 for any other name.
std::int64_t step_of(const std::string& filename) {
  const std::string prefix = "step-", suffix = ".h5";
  if (filename.size() <= prefix.size() + suffix.size() || filename.rfind(prefix, 0) != 0 ||
      filename.compare(filename.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  const std::string digits = filename.substr(prefix.size(), filename.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

// `path` with a symbolic link (latest.h5) replaced by its target, kept in the caller's form
// (a relative target is taken from the link's folder).
fs::path resolve_link(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_symlink(fs::symlink_status(path, ec))) return path;
  const fs::path target = fs::read_symlink(path, ec);
  if (ec) return path;
  return (target.is_absolute() ? target : path.parent_path() / target).lexically_normal();
}

// What a corrupt checkpoint's error adds: the newest earlier step checkpoint of its folder that
// passes check_checkpoint, the one checkpoint.resume = auto would fall back to.
std::string previous_checkpoint_hint(const std::string& path) {
  const fs::path file = resolve_link(path);
  const std::string dir = file.has_parent_path() ? file.parent_path().string() : ".";
  const std::int64_t step = step_of(file.filename().string());
  for (const auto& candidate : step_checkpoints(dir)) {
    const std::int64_t s = step_of(fs::path(candidate).filename().string());
    if (step >= 0 && s >= step) continue;  // a non-step file (upcycled.h5) takes any step file
    if (!check_checkpoint(candidate).ok) continue;
    if (step < 0) return "; the newest step checkpoint in " + dir + " that verifies is " + candidate;
    return "; the previous checkpoint of this stage is " + candidate + " (checkpoint.resume = auto falls back to it)";
  }
  return step >= 0 ? "; no earlier step checkpoint in " + dir + " verifies" : "";
}
}  // namespace

void load_checkpoint(const std::string& path, nn::Module& model, AdamW* optimizer, TrainState* state,
                     const CheckpointLoadOptions* options) {
  try {
    read_checkpoint_into(path, model, optimizer, state, options);
  } catch (const h5::CorruptDataError& e) {
    throw h5::CorruptDataError(__FILE__, __LINE__,
                               "corrupt checkpoint " + path + ": " + e.message() + previous_checkpoint_hint(path));
  }
}

std::vector<std::string> step_checkpoints(const std::string& checkpoint_dir) {
  std::vector<std::pair<std::int64_t, std::string>> found;
  std::error_code ec;
  for (fs::directory_iterator it(checkpoint_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::int64_t step = step_of(it->path().filename().string());
    std::error_code type_ec;
    if (step >= 0 && it->is_regular_file(type_ec)) found.emplace_back(step, it->path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

std::string newest_valid_checkpoint(const std::string& checkpoint_dir, std::vector<std::string>* rejected) {
  std::vector<fs::path> candidates;
  const fs::path latest = latest_checkpoint_path(checkpoint_dir);
  std::error_code ec;
  if (fs::exists(fs::symlink_status(latest, ec))) candidates.push_back(resolve_link(latest));
  for (const auto& step_file : step_checkpoints(checkpoint_dir)) candidates.emplace_back(step_file);
  std::vector<fs::path> tried;
  for (const auto& candidate : candidates) {
    const fs::path key = fs::weakly_canonical(candidate, ec);
    if (std::find(tried.begin(), tried.end(), key) != tried.end()) continue;  // latest.h5's target again
    tried.push_back(key);
    const CheckpointCheck check = check_checkpoint(candidate.string());
    if (check.ok) return candidate.string();
    if (rejected) rejected->push_back(candidate.string() + ": " + check.problems.front());
  }
  return "";
}

std::string stage_checkpoint_dir(const std::string& run_dir, const std::string& stage) {
  return (fs::path(run_dir) / "checkpoints" / stage).string();
}

std::string step_checkpoint_path(const std::string& checkpoint_dir, std::int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%07lld.h5", static_cast<long long>(step));
  return (fs::path(checkpoint_dir) / name).string();
}

std::string latest_checkpoint_path(const std::string& checkpoint_dir) {
  return (fs::path(checkpoint_dir) / "latest.h5").string();
}

namespace {
// Points `link` at `target` (a path relative to the link's folder), replacing it by a rename so a
// reader sees the old or the new link, never none.
void replace_symlink(const fs::path& link, const fs::path& target) {
  const fs::path tmp_link = link.parent_path() / ("." + link.filename().string() + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove(tmp_link, ec);
  fs::create_symlink(target, tmp_link);
  fs::rename(tmp_link, link);
}
}  // namespace

void save_run_checkpoint(const std::string& checkpoint_dir, std::int64_t keep, const Config& cfg,
                         const nn::Module& model, const AdamW* optimizer, const TrainState& state,
                         const CheckpointShards* shards) {
  const fs::path step_path = step_checkpoint_path(checkpoint_dir, state.step);
  save_checkpoint(step_path.string(), cfg, model, optimizer, state, shards);
  const fs::path latest = latest_checkpoint_path(checkpoint_dir);
  replace_symlink(latest, step_path.filename());
  const fs::path folder = fs::path(checkpoint_dir).lexically_normal();
  replace_symlink(folder.parent_path() / "latest.h5", folder.filename() / step_path.filename());
  if (keep <= 0) return;
  const std::vector<std::string> steps = step_checkpoints(checkpoint_dir);  // newest first
  std::error_code ec;
  for (std::size_t i = static_cast<std::size_t>(keep); i < steps.size(); ++i) fs::remove(steps[i], ec);
}

}  // namespace upcycle
