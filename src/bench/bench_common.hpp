#pragma once
// What the benchmarks share: the command line (Boost.Program_options, as upcycle_train's), the
// --device choice, timing that waits for the device, medians, the PyTorch peer and JSON lines.
#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "upcycle/core/tensor.hpp"
#include "upcycle/dist/communicator.hpp"
#include "upcycle/io/metrics.hpp"

namespace upcycle::bench {

// The options of one benchmark. Each option writes into a variable whose value when it is added is
// its default, and --help shows it.
class Args {
 public:
  Args(std::string program, std::string summary);

  template <class T>
  Args& add(const char* name, T& value, const char* help, std::string shown_default = "");
  // Present: value = true (value starts false).
  Args& flag(const char* name, bool& value, const char* help);

  // --help prints every option and exits 0; a bad option or value prints a message naming it and
  // exits 2.
  void parse(int argc, char** argv);
  // For the checks that follow parse(): prints "program: why" and exits 2.
  [[noreturn]] void fail(const std::string& why) const;
  const std::string& program() const { return program_; }

 private:
  std::string program_, summary_;
  boost::program_options::options_description desc_;
};

inline std::string show(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}
template <class T>
std::string show(const T& v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

template <class T>
Args& Args::add(const char* name, T& value, const char* help, std::string shown_default) {
  if (shown_default.empty()) shown_default = show(value);
  desc_.add_options()(name, boost::program_options::value<T>(&value)->default_value(value, shown_default), help);
  return *this;
}

// --device cpu|cuda|auto: cuda without a usable GPU prints why and exits 1; auto says which device
// it took. tf32 lets cuBLAS round f32 GEMM inputs to TF32 (on the GPU only).
Device choose(const Args& args, const std::string& requested, bool tf32 = false);
const char* device_name(Device device);

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The seconds of each of `iters` calls f(i), after `warmup` untimed calls (i counts from 0 over
// both). The device is synchronised before each clock reading, so a GPU's queued work is charged
// to the call that issued it.
std::vector<double> time_calls(const std::function<void(int)>& f, int warmup, int iters, Device device);
// The middle value (the mean of the two middle ones for an even count); 0 for none.
double median(std::vector<double> v);
// Elementwise max over the communicator's ranks (the slowest rank sets a step's time).
std::vector<double> max_over_ranks(Communicator& comm, const std::vector<double>& v);

// N(0, std^2) f32 on the CPU from the backend's Philox stream `seed`.
Tensor randn(const Shape& shape, std::uint64_t seed, double std = 1.0);
// The gradient seed of out.sum().backward(), as the PyTorch peers use.
Tensor ones_like(const Tensor& t);

// src/bench/<file> of this source tree: the default of --torch-script.
std::string peer_script(const std::string& file);
std::string shell_quote(const std::string& s);
// Runs the command (its words shell-quoted, after an optional "VAR=VALUE" environment prefix) and
// returns its stdout lines; nullopt when it could not start or exited non-zero (its stderr passes
// through).
std::optional<std::vector<std::string>> run_peer(const std::vector<std::string>& command,
                                                 const std::string& env = "");
// The number / string after "key": in one line of JSON; NaN / empty when the key is absent.
double json_number(const std::string& line, const std::string& key);
std::string json_string(const std::string& line, const std::string& key);

// --json FILE: one JSON object per line; the file starts empty, and without a path nothing is
// written.
MetricsWriter json_lines(const std::string& path);

}  // namespace upcycle::bench
