#include "upcycle/train/run_directory.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "upcycle/core/error.hpp"
#include "upcycle/io/hdf5.hpp"
#include "upcycle/io/log.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// ".<name>.tmp-<pid>": what write_atomically and replace_symlink (train/checkpoint.cpp) write
// before their rename.
bool is_checkpoint_temporary(const std::string& name) {
  const std::size_t at = name.rfind(".tmp-");
  return name.size() > 1 && name[0] == '.' && at != std::string::npos && at > 1 && all_digits(name.substr(at + 5));
}

// "<name>.json.tmp" (write_json_file) and "config.ini.tmp.<pid>" (write_config_file).
bool is_run_file_temporary(const std::string& name) {
  const std::string json_tmp = ".json.tmp";
  if (name.size() > json_tmp.size() && name.compare(name.size() - json_tmp.size(), json_tmp.size(), json_tmp) == 0)
    return true;
  const std::string config_tmp = "config.ini.tmp.";
  return name.rfind(config_tmp, 0) == 0 && all_digits(name.substr(config_tmp.size()));
}

bool ignored_in_comparison(const ConfigKey& k) {
  const std::string section = k.section, full = k.full_name();
  return section == "log" || section == "parallel" || full == "run.overwrite" || full == "checkpoint.resume" ||
         full == "run.threads";
}

struct NewestCheckpoint {
  std::string path, stage;
  std::int64_t step = -1;  // -1: the file's attributes could not be read
};

// The most recently written checkpoint file under <dir>/checkpoints (step files, upcycled.h5;
// not the latest.h5 links), with its stage and step.
std::optional<NewestCheckpoint> newest_checkpoint(const fs::path& dir) {
  const fs::path root = dir / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return std::nullopt;
  std::optional<fs::path> newest;
  fs::file_time_type newest_time{};
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::path& p = it->path();
    if (it->is_symlink(ec) || !it->is_regular_file(ec) || p.extension() != ".h5") continue;
    if (p.filename().string().rfind('.', 0) == 0) continue;
    const auto t = fs::last_write_time(p, ec);
    if (ec) continue;
    if (!newest || t > newest_time || (t == newest_time && p > *newest)) {
      newest = p;
      newest_time = t;
    }
  }
  if (!newest) return std::nullopt;
  NewestCheckpoint c;
  c.path = newest->string();
  try {
    h5::File f = h5::File::open(c.path);
    if (h5::has_attribute(f, "/", "stage")) c.stage = h5::read_string_attribute(f, "/", "stage");
    if (h5::has_attribute(f, "/", "step")) c.step = h5::read_int_attribute(f, "/", "step");
  } catch (const std::exception&) {
    // A damaged file still counts as a checkpoint of the run; it is named without stage and step.
  }
  return c;
}

std::string describe(const NewestCheckpoint& c) {
  if (c.step < 0 || c.stage.empty()) return "a checkpoint (" + c.path + ")";
  return "checkpoints up to stage " + c.stage + " step " + std::to_string(c.step) + " (" + c.path + ")";
}

std::string joined(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

// run.overwrite = true: the files of the earlier run go before this one writes its own.
// config.ini stays until this run records its own (record_run_config).
void remove_earlier_run(const fs::path& dir) {
  std::vector<std::string> removed;
  for (const char* name : {"checkpoints", "metrics.jsonl", "report.json", "upcycle_report.json", "eval_report.json",
                           "plots"}) {
    const fs::path p = dir / name;
    std::error_code ec;
    const fs::file_status status = fs::symlink_status(p, ec);
    if (!fs::exists(status)) continue;
    fs::remove_all(p, ec);
    if (ec) UPCYCLE_THROW("run.overwrite = true: cannot remove ", p.string(), ": ", ec.message());
    removed.push_back(std::string(name) + (fs::is_directory(status) ? "/" : ""));
  }
  if (!removed.empty())
    log_info("run.dir " + dir.string() + ": run.overwrite = true: removed the earlier run's " + joined(removed, ", "));
}

// A fresh run into `dir` must not mix its files with another run's: see prepare_run_directory.
void check_directory_holds_no_other_run(const Config& cfg, const fs::path& dir) {
  const fs::path config_path = dir / "config.ini";
  std::error_code ec;
  const bool has_config = fs::exists(config_path, ec);
  const std::optional<NewestCheckpoint> newest = newest_checkpoint(dir);
  if (!has_config && !newest) return;
  const std::string how = "choose another run.dir, resume that run (checkpoint.resume = auto), or set "
                          "run.overwrite = true to replace it";
  if (has_config) {
    std::vector<std::string> diffs;
    try {
      diffs = differing_run_config_keys(load_config(config_path.string()), cfg);
    } catch (const UsageError& e) {
      UPCYCLE_USAGE_ERROR("run.dir ", dir.string(), " holds a config.ini that is not a config of this version (",
                          e.message(), "): choose another run.dir, or set run.overwrite = true to replace that run");
    }
    if (!diffs.empty())
      UPCYCLE_USAGE_ERROR("run.dir ", dir.string(), " holds the run of another config: ", config_path.string(),
                          " differs in ", joined(diffs, ", "), ". To start this config: ", how);
    if (newest)
      UPCYCLE_USAGE_ERROR("run.dir ", dir.string(), " holds ", describe(*newest),
                          " of this config: resume with checkpoint.resume = auto, or set run.overwrite = true to "
                          "start over");
    return;
  }
  UPCYCLE_USAGE_ERROR("run.dir ", dir.string(), " holds ", describe(*newest),
                      " but no config.ini saying which config wrote them: ", how);
}

}  // namespace

std::size_t remove_leftover_temporaries(const std::string& dir) {
  std::vector<fs::path> doomed;
  std::error_code ec;
  const fs::path root = fs::path(dir) / "checkpoints";
  if (fs::is_directory(root, ec))
    for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      if (is_checkpoint_temporary(it->path().filename().string()) && !it->is_directory(ec))
        doomed.push_back(it->path());
  if (fs::is_directory(dir, ec))
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (is_run_file_temporary(e.path().filename().string()) && !e.is_directory(ec)) doomed.push_back(e.path());
  std::size_t removed = 0;
  for (const auto& p : doomed) {
    if (fs::remove(p, ec)) ++removed;
    if (ec) UPCYCLE_THROW("cannot remove the leftover temporary file ", p.string(), ": ", ec.message());
  }
  return removed;
}

std::vector<std::string> differing_run_config_keys(const Config& existing, const Config& wanted) {
  std::vector<std::string> out;
  for (const ConfigKey& k : config_schema()) {
    if (ignored_in_comparison(k)) continue;
    const std::string key = k.full_name();
    const std::string there = existing.value_text(key), here = wanted.value_text(key);
    if (there != here)
      out.push_back(key + " (there " + (there.empty() ? "empty" : there) + ", here " + (here.empty() ? "empty" : here) +
                    ")");
  }
  return out;
}

std::unique_ptr<RunDirectoryLock> prepare_run_directory(const Config& cfg) {
  const std::string& dir = cfg.get_string("run.dir");
  if (dir.empty()) UPCYCLE_USAGE_ERROR("run.dir is empty, but upcycle_train writes its outputs there: set [run] dir");
  auto lock = std::make_unique<RunDirectoryLock>(dir);
  if (const std::size_t removed = remove_leftover_temporaries(dir))
    log_info("run.dir " + dir + ": removed " + std::to_string(removed) +
             " temporary file(s) left behind by interrupted saves");
  const std::string& resume = cfg.get_string("checkpoint.resume");
  const bool overwrite = cfg.get_bool("run.overwrite");
  if (!resume.empty()) {
    // With a checkpoint path or latest, run.overwrite lets the resumed stage replace the step files
    // newer than its checkpoint (train/resume.hpp); auto always continues from the newest one.
    if (overwrite && resume == "auto")
      UPCYCLE_USAGE_ERROR("run.overwrite = true (", cfg.origin("run.overwrite"),
                          ") starts the run over, but checkpoint.resume = auto (", cfg.origin("checkpoint.resume"),
                          ") continues it: set only one of them");
    return lock;
  }
  const auto& stages = cfg.get_string_list("run.stages");
  const bool eval_only = std::all_of(stages.begin(), stages.end(), [](const std::string& s) { return s == "eval"; });
  if (overwrite) {
    if (eval_only)
      UPCYCLE_USAGE_ERROR("run.overwrite = true (", cfg.origin("run.overwrite"), ") would remove the checkpoints of ",
                          dir, " that stage eval reads, and a run of stage eval alone writes none to replace them: "
                          "leave run.overwrite = false");
    remove_earlier_run(dir);
    return lock;
  }
  if (!eval_only) check_directory_holds_no_other_run(cfg, dir);
  return lock;
}

void record_run_config(const Config& cfg) {
  static std::atomic<bool> recorded{false};
  const std::string& dir = cfg.get_string("run.dir");
  if (dir.empty() || recorded.load()) return;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) UPCYCLE_THROW("cannot create run directory '", dir, "': ", ec.message());
  write_config_file(cfg, (fs::path(dir) / "config.ini").string());
  recorded = true;
}

}  // namespace upcycle
