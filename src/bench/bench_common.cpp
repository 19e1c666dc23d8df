#include "bench_common.hpp"

#include <boost/program_options/errors.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/variables_map.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/devices.hpp"

#ifndef UPCYCLE_SOURCE_DIR
#define UPCYCLE_SOURCE_DIR "."
#endif

namespace po = boost::program_options;

namespace upcycle::bench {

Args::Args(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)), desc_("options") {}

Args& Args::flag(const char* name, bool& value, const char* help) {
  desc_.add_options()(name, po::bool_switch(&value), help);
  return *this;
}

void Args::parse(int argc, char** argv) {
  desc_.add_options()("help,h", "print this help and exit");
  po::variables_map vm;
  try {
    // No abbreviations: "--step" must not silently mean --steps.
    const po::parsed_options parsed =
        po::command_line_parser(argc, argv)
            .options(desc_)
            .style(po::command_line_style::unix_style & ~po::command_line_style::allow_guessing)
            .run();
    for (const po::option& o : parsed.options)
      if (o.position_key >= 0) fail("unexpected argument '" + o.value.front() + "'");
    po::store(parsed, vm);
  } catch (const po::error& e) {
    fail(e.what());
  }
  if (vm.count("help")) {
    std::cout << "usage: " << program_ << " [options]\n" << summary_ << "\n\n" << desc_;
    std::exit(0);
  }
  po::notify(vm);
}

void Args::fail(const std::string& why) const {
  std::cerr << program_ << ": " << why << " (" << program_ << " --help lists the options)\n";
  std::exit(2);
}

Device choose(const Args& args, const std::string& requested, bool tf32) {
  // choose_device words its messages for the config key run.device; here it is --device.
  auto reword = [&](std::string m) {
    const std::string key = "run.device = " + requested + ": ";
    if (m.rfind(key, 0) == 0) m.erase(0, key.size());
    return m;
  };
  DeviceChoice c;
  try {
    c = choose_device(requested);
  } catch (const UsageError&) {
    args.fail("--device must be cpu, cuda or auto, got '" + requested + "'");
  } catch (const Error& e) {
    const std::string why = reword(e.message());
    std::cerr << args.program() << ": --device " << requested << ": "
              << (why.find("no usable GPU") == std::string::npos ? "no usable GPU: " : "") << why << "\n";
    std::exit(1);
  }
  if (!c.reason.empty())
    std::printf("%s: --device %s: %s\n", args.program().c_str(), requested.c_str(), reword(c.reason).c_str());
  if (tf32 && c.device == Device::cuda) backend_for(Device::cuda).set_allow_tf32(true);
  return c.device;
}

const char* device_name(Device device) { return device == Device::cuda ? "cuda" : "cpu"; }

std::vector<double> time_calls(const std::function<void(int)>& f, int warmup, int iters, Device device) {
  Backend& be = backend_for(device);
  std::vector<double> times;
  for (int i = 0; i < warmup + iters; ++i) {
    be.synchronize();
    const auto t0 = Clock::now();
    f(i);
    be.synchronize();
    if (i >= warmup) times.push_back(seconds_since(t0));
  }
  return times;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<double> max_over_ranks(Communicator& comm, const std::vector<double>& v) {
  Tensor t = Tensor::from_vector(v, {static_cast<std::int64_t>(v.size())}, Device::cpu);
  comm.all_reduce(t, CommReduce::max);
  return t.to_vector<double>();
}

Tensor randn(const Shape& shape, std::uint64_t seed, double std) {
  Tensor t = Tensor::empty(shape, DType::f32, Device::cpu);
  backend_for(Device::cpu).normal(t, seed, 0, 0.0, std);
  return t;
}

Tensor ones_like(const Tensor& t) { return Tensor::full(t.shape(), 1.0, t.dtype(), t.device()); }

std::string peer_script(const std::string& file) { return std::string(UPCYCLE_SOURCE_DIR) + "/src/bench/" + file; }

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::optional<std::vector<std::string>> run_peer(const std::vector<std::string>& command, const std::string& env) {
  std::string cmd = env.empty() ? "" : "env " + env;
  for (const auto& word : command) cmd += " " + shell_quote(word);
  std::fflush(stdout);  // what this process printed comes before the peer's stderr
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return std::nullopt;
  std::vector<std::string> lines;
  std::string line;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe)) {
    line += buf;
    if (line.back() != '\n') continue;
    line.pop_back();
    lines.push_back(std::move(line));
    line.clear();
  }
  if (!line.empty()) lines.push_back(line);
  if (::pclose(pipe) != 0) return std::nullopt;
  return lines;
}

double json_number(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\": ";
  const auto at = line.find(k);
  return at == std::string::npos ? NAN : std::strtod(line.c_str() + at + k.size(), nullptr);
}

std::string json_string(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\": \"";
  const auto at = line.find(k);
  if (at == std::string::npos) return "";
  const auto begin = at + k.size();
  return line.substr(begin, line.find('"', begin) - begin);
}

MetricsWriter json_lines(const std::string& path) {
  if (path.empty()) return {};
  std::ofstream{path};  // a new run's lines replace the last run's
  return MetricsWriter(path);
}

}  // namespace upcycle::bench
