#include "upcycle/train/resume.hpp"

#include <cstdlib>
#include <filesystem>

#include "upcycle/io/config_schema.hpp"
#include "upcycle/train/checkpoint.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

// Sends `text` from rank 0 to every rank (a length, then the bytes as i32 values).
void broadcast_string(Communicator& world, std::string& text) {
  Tensor length = Tensor::from_vector<std::int64_t>({static_cast<std::int64_t>(text.size())}, {1}, Device::cpu);
  world.broadcast(length, 0);
  const std::int64_t n = length.to_vector<std::int64_t>()[0];
  if (n == 0) {
    text.clear();
    return;
  }
  std::vector<std::int32_t> bytes(static_cast<std::size_t>(n));
  if (world.rank() == 0)
    for (std::int64_t i = 0; i < n; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<unsigned char>(text[i]);
  Tensor t = Tensor::from_vector<std::int32_t>(bytes, {n}, Device::cpu);
  world.broadcast(t, 0);
  const auto got = t.to_vector<std::int32_t>();
  text.assign(got.size(), ' ');
  for (std::size_t i = 0; i < got.size(); ++i) text[i] = static_cast<char>(got[i]);
}

// Keys whose change leaves the trajectory of the parameters alone.
bool trajectory_neutral(const ConfigKey& key) {
  const std::string name = key.full_name();
  for (const char* section : {"log", "checkpoint", "eval", "parallel"})
    if (key.section == section) return true;
  for (const char* k : {"run.dir", "run.threads", "run.overwrite", "run.stages", "run.device", "run.allow_tf32",
                        "train.eval_every", "train.eval_at_start", "train.nan_policy", "train.max_skipped_steps",
                        "moe.init"})
    if (name == k) return true;
  return false;
}

}  // namespace

ResumeChoice resolve_resume(const Config& cfg, const std::string& stage, Communicator& world) {
  const std::string& request = cfg.get_string("checkpoint.resume");
  ResumeChoice choice;
  if (request.empty()) return choice;
  const std::string dir = stage_checkpoint_dir(cfg.get_string("run.dir"), stage);
  std::string failure;
  if (world.rank() == 0) {
    if (request == "auto") {
      choice.path = newest_valid_checkpoint(dir, &choice.rejected);
    } else {
      choice.path = request == "latest" ? latest_checkpoint_path(dir) : request;
      if (!fs::exists(choice.path))
        failure = request == "latest"
                      ? "checkpoint.resume = latest: " + choice.path +
                            " does not exist (no checkpoint of stage " + stage +
                            " yet); checkpoint.resume = auto starts fresh when there is none"
                      : "checkpoint.resume = " + request + ": checkpoint not found";
    }
  }
  // The failure travels with the choice so that every rank throws it, none waits alone.
  broadcast_string(world, failure);
  if (!failure.empty()) UPCYCLE_THROW(failure);
  broadcast_string(world, choice.path);
  return choice;
}

std::vector<std::string> changed_trajectory_keys(const Config& cfg, const std::string& checkpoint_config_text) {
  std::vector<std::string> changed;
  Config saved = default_config();
  try {
    saved = parse_config(checkpoint_config_text, "the checkpoint's config");
  } catch (const Error& e) {
    changed.push_back("(the checkpoint's config cannot be compared: " + e.message() + ")");
    return changed;
  }
  for (const ConfigKey& key : config_schema()) {
    if (trajectory_neutral(key)) continue;
    const std::string name = key.full_name();
    const std::string before = saved.value_text(name), now = cfg.value_text(name);
    if (before != now) changed.push_back(name + ": " + before + " -> " + now);
  }
  return changed;
}

std::vector<std::string> step_checkpoints_after(const std::string& checkpoint_dir, std::int64_t step) {
  std::vector<std::string> newer;
  for (const auto& path : step_checkpoints(checkpoint_dir)) {
    const std::string name = fs::path(path).filename().string();  // step-NNNNNNN.h5
    if (std::atoll(name.c_str() + 5) > step) newer.push_back(path);
  }
  return newer;
}

void set_aside_newer_checkpoints(const Config& cfg, const std::string& stage, std::int64_t step,
                                 const ResumeChoice& choice, Communicator& world) {
  std::string failure;
  if (world.rank() == 0) {
    const std::string dir = stage_checkpoint_dir(cfg.get_string("run.dir"), stage);
    std::vector<std::string> valid;
    for (const auto& path : step_checkpoints_after(dir, step)) {
      bool damaged = false;
      for (const auto& r : choice.rejected) damaged = damaged || r.rfind(path + ": ", 0) == 0;
      std::error_code ec;
      if (damaged)
        fs::rename(path, path + ".damaged", ec);
      else if (cfg.get_bool("run.overwrite"))
        fs::remove(path, ec);
      else
        valid.push_back(fs::path(path).filename().string());
    }
    if (!valid.empty()) {
      std::string names;
      for (const auto& v : valid) names += (names.empty() ? "" : ", ") + v;
      failure = "resuming stage " + stage + " from step " + std::to_string(step) + " (" + choice.path +
                ") would overwrite its newer checkpoints in " + dir + " (" + names +
                "): resume from the newest with checkpoint.resume = auto, use another run.dir, or set "
                "run.overwrite = true to delete them";
    }
  }
  broadcast_string(world, failure);
  if (!failure.empty()) UPCYCLE_THROW(failure);
}

}  // namespace upcycle
