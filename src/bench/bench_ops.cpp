// bench_ops: forward + backward time of linear layers and of a pre-LN transformer block on the CPU
// backend and, in the same invocation, of the same shapes in PyTorch (Debian python3-torch, run by
// src/bench/bench_ops_torch.py), with the ratio torch_time / upcycle_time (> 1: upcycle is faster).
//   bench_ops [--threads N] [--iters I] [--python /usr/bin/python3] [--json out.jsonl]
// Debian's PyTorch uses the pthread OpenBLAS, whose own pool ignores torch.set_num_threads and
// fights the intra-op pool: run with OPENBLAS_NUM_THREADS=1 for PyTorch's faster setting.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/threads.hpp"
#include "upcycle/nn/linear.hpp"
#include "upcycle/nn/transformer_block.hpp"

#ifndef UPCYCLE_SOURCE_DIR
#define UPCYCLE_SOURCE_DIR "."
#endif

namespace {

using namespace upcycle;

struct Case {
  std::string name, json;  // json: the case as the PyTorch peer reads it
  std::function<std::function<void()>()> make;  // builds the model, returns one fwd+bwd iteration
};

Tensor randn(const Shape& s, std::uint64_t seed) {
  Tensor t = Tensor::empty(s, DType::f32, Device::cpu);
  backend_for(Device::cpu).normal(t, seed, 0, 0.0, 1.0);
  return t;
}

// Seed of ones for backward: the same as PyTorch's out.sum().backward().
Tensor ones_like(const Tensor& t) { return Tensor::full(t.shape(), 1.0, t.dtype(), t.device()); }

Case linear_case(std::int64_t rows, std::int64_t in, std::int64_t out) {
  std::ostringstream name, json;
  name << "linear " << rows << "x" << in << "->" << out;
  json << "{\"name\": \"" << name.str() << "\", \"kind\": \"linear\", \"rows\": " << rows << ", \"in\": " << in
       << ", \"out\": " << out << "}";
  return {name.str(), json.str(), [=] {
            auto rng = std::make_shared<RngStream>(1);
            auto layer = std::make_shared<nn::Linear>(in, out, *rng, true, 0.02);
            auto x = std::make_shared<Var>(randn({rows, in}, 2), true);
            return std::function<void()>([layer, x] {
              layer->zero_grad();
              x->zero_grad();
              Var y = layer->forward(*x);
              y.backward(ones_like(y.value()));
            });
          }};
}

Case block_case(std::int64_t batch, std::int64_t t, std::int64_t d, std::int64_t heads, std::int64_t ffn, bool causal) {
  std::ostringstream name, json;
  name << "block B" << batch << " T" << t << " D" << d << " H" << heads << " F" << ffn << (causal ? " causal" : "");
  json << "{\"name\": \"" << name.str() << "\", \"kind\": \"block\", \"batch\": " << batch << ", \"t\": " << t
       << ", \"d\": " << d << ", \"heads\": " << heads << ", \"ffn\": " << ffn
       << ", \"causal\": " << (causal ? "true" : "false") << "}";
  return {name.str(), json.str(), [=] {
            auto rng = std::make_shared<RngStream>(1);
            nn::TransformerBlockConfig c;
            c.d_model = d;
            c.n_heads = heads;
            c.d_ff = ffn;
            c.causal = causal;
            auto block = std::make_shared<nn::TransformerBlock>(c, *rng);
            auto x = std::make_shared<Var>(randn({batch, t, d}, 2), true);
            return std::function<void()>([block, x] {
              block->zero_grad();
              x->zero_grad();
              Var y = block->forward(*x);
              y.backward(ones_like(y.value()));
            });
          }};
}

double median_seconds(const std::function<void()>& step, int warmup, int iters) {
  std::vector<double> times;
  for (int i = 0; i < warmup + iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) times.push_back(s);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs the PyTorch peer on every case; returns name -> median seconds.
std::map<std::string, double> run_torch(const std::string& python, const std::vector<Case>& cases, int threads,
                                        int iters) {
  std::string cmd = shell_quote(python) + " " + shell_quote(std::string(UPCYCLE_SOURCE_DIR) + "/src/bench/bench_ops_torch.py") +
                    " --threads " + std::to_string(threads) + " --iters " + std::to_string(iters);
  for (const auto& c : cases) cmd += " " + shell_quote(c.json);
  std::map<std::string, double> out;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return out;
  char line[1024];
  while (std::fgets(line, sizeof line, pipe)) {
    // {"name": "...", "median_s": X}
    const std::string s(line);
    const auto n0 = s.find("\"name\": \"") + 9, n1 = s.find('"', n0);
    const auto m0 = s.find("\"median_s\": ");
    if (n1 == std::string::npos || m0 == std::string::npos) continue;
    out[s.substr(n0, n1 - n0)] = std::stod(s.substr(m0 + 12));
  }
  if (::pclose(pipe) != 0) std::cerr << "bench_ops: the PyTorch peer failed (is python3-torch installed?)\n";
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads(), iters = 10;
  std::string python = "/usr/bin/python3", json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "bench_ops: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") threads = std::stoi(value());
    else if (a == "--iters") iters = std::stoi(value());
    else if (a == "--python") python = value();
    else if (a == "--json") json_path = value();
    else {
      std::cerr << "usage: bench_ops [--threads N] [--iters I] [--python PATH] [--json FILE]\n";
      return 2;
    }
  }
  threads = configure_cpu_threads(threads);

  const std::vector<Case> cases = {
      linear_case(2048, 256, 1024),  linear_case(2048, 1024, 256), linear_case(1024, 768, 3072),
      block_case(16, 50, 128, 4, 512, false),  // a small ViT on 28x28 images, 4x4 patches
      block_case(8, 128, 256, 8, 1024, true),  // a small byte-level GPT
      block_case(4, 197, 384, 6, 1536, false),  // ViT-S/16 at 224x224
  };
  std::printf("bench_ops: forward+backward, median of %d iterations, %d threads\n", iters, threads);
  std::map<std::string, double> ours;
  for (const auto& c : cases) ours[c.name] = median_seconds(c.make(), 2, iters);
  const auto theirs = run_torch(python, cases, threads, iters);
  std::ofstream json;
  if (!json_path.empty()) json.open(json_path);
  std::printf("%-40s %12s %12s %10s\n", "case", "upcycle ms", "torch ms", "speedup");
  for (const auto& c : cases) {
    const double u = ours[c.name] * 1e3;
    const auto it = theirs.find(c.name);
    const double t = it == theirs.end() ? 0.0 : it->second * 1e3;
    std::printf("%-40s %12.3f %12.3f %9.2fx\n", c.name.c_str(), u, t, t > 0 ? t / u : 0.0);
    if (json) json << "{\"case\": \"" << c.name << "\", \"upcycle_ms\": " << u << ", \"torch_ms\": " << t
                   << ", \"threads\": " << threads << "}\n";
  }
  return 0;
}
