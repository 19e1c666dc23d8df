#include "upcycle/train/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

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
h5::File open_checkpoint(const std::string& path) {
  if (!fs::exists(path)) UPCYCLE_THROW(path, ": checkpoint not found");
  h5::File f = h5::File::open(path);
  if (!h5::has_attribute(f, "/", "format") || h5::read_string_attribute(f, "/", "format") != kCheckpointFormat)
    UPCYCLE_THROW(path, ": not an upcycle checkpoint (the root attribute 'format' is not '", kCheckpointFormat, "')");
  const std::int64_t version = h5::read_int_attribute(f, "/", "version");
  if (version != kCheckpointVersion)
    UPCYCLE_THROW(path, ": checkpoint version ", version, ", this build reads version ", kCheckpointVersion);
  return f;
}
}  // namespace

bool checkpoint_has_dataset(const std::string& path, const std::string& dataset) {
  h5::File f = open_checkpoint(path);
  return h5::has_dataset(f, dataset);
}

CheckpointCheck check_checkpoint(const std::string& path) {
  CheckpointCheck check;
  auto fail = [&](std::string problem) {
    check.ok = false;
    check.problems.push_back(std::move(problem));
  };
  try {
    h5::File f = open_checkpoint(path);
    for (const char* attr : {"stage", "config"})
      if (!h5::has_attribute(f, "/", attr)) fail(std::string("root attribute '") + attr + "' is missing");
    if (!h5::has_attribute(f, "/", "step")) fail("root attribute 'step' is missing");
    for (const char* required : {"/state/rng/dropout", "/state/data/cursor"})
      if (!h5::has_dataset(f, required)) fail(std::string("dataset ") + required + " is missing");
    for (const auto& dataset : h5::list_datasets(f)) {
      try {
        h5::read_tensor(f, dataset);
        ++check.datasets_checked;
      } catch (const Error& e) {
        fail(e.message());
      }
    }
  } catch (const Error& e) {
    fail(e.message());
  }
  return check;
}

std::vector<std::string> step_checkpoints(const std::string& checkpoint_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(checkpoint_dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0 && e.path().extension() == ".h5") out.push_back(e.path().string());
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

std::string newest_valid_checkpoint(const std::string& checkpoint_dir, std::vector<std::string>* rejected) {
  std::vector<std::string> candidates;
  std::error_code ec;
  const fs::path latest = latest_checkpoint_path(checkpoint_dir);
  if (fs::exists(latest, ec)) candidates.push_back(fs::canonical(latest, ec).string());
  for (const auto& p : step_checkpoints(checkpoint_dir)) candidates.push_back(p);
  for (const auto& p : candidates) {
    const CheckpointCheck c = check_checkpoint(p);
    if (c.ok) return p;
    if (rejected) rejected->push_back(p + ": " + (c.problems.empty() ? "unreadable" : c.problems.front()));
  }
  return "";
}

std::string checkpoint_config_text(const std::string& path) {
  h5::File f = open_checkpoint(path);
  return h5::read_string_attribute(f, "/", "config");
}

void load_checkpoint(const std::string& path, nn::Module& model, AdamW* optimizer, TrainState* state,
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
  std::error_code ec;
  if (keep <= 0) return;
  std::vector<fs::path> steps;
  for (const auto& e : fs::directory_iterator(latest.parent_path())) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0 && e.path().extension() == ".h5") steps.push_back(e.path());
  }
  std::sort(steps.begin(), steps.end());
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep) < steps.size(); ++i) fs::remove(steps[i], ec);
}

}  // namespace upcycle
