// bench_train: training throughput of the default main job's model (configs/fashion_vit_tiny.ini: a
// ViT of width 64, depth 4, 4 heads, FFN 128, 4x4 patches on 28x28 one-channel images, batch 128)
// on the CPU backend and, in the same invocation, of the same model in PyTorch (Debian
// python3-torch, run by src/bench/bench_train_torch.py) with the same thread count. One step is
// what the trainer does: forward, mean cross-entropy, backward, global gradient-norm clipping and
// an AdamW update. Inputs are random images and labels (a few fixed batches cycled).
// Prints tokens/s of both (a token is an image patch or the class token: B * (1 + N) per step)
// and the ratio upcycle / torch (> 1: upcycle is faster), then a per-kernel profile of a few extra
// upcycle steps (taken after the timed steps, so the timing carries no profiler overhead).
//
// PyTorch runs twice: as configured by torch.set_num_threads(N) alone, and with
// OPENBLAS_NUM_THREADS=1 as well. Debian's torch calls the pthread OpenBLAS, whose own pool (one
// thread per core) ignores set_num_threads: with N = 1 its GEMMs still use every core, with N > 1
// the two pools oversubscribe the cores. The ratio is taken against the faster of the two runs.
//   bench_train [--threads N] [--steps S] [--warmup W] [--batch B] [--rounds R]
//               [--experts E] [--top-k K] [--profile-steps P] [--detail] [--no-torch]
//               [--python /usr/bin/python3] [--json out.jsonl]
// --experts E > 0 makes every other block (1, 3, ...) an MoE layer with E experts, top-k routing
// (renormalised gates, dropless, one process), and adds the load-balancing (0.01) and z (0.001)
// router losses, on both sides.
// --rounds R repeats the whole measurement (upcycle, then both torch runs) R times, one after the
// other so that each ratio compares runs taken close in time on a shared machine, and reports the
// median ratio.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/profiling.hpp"
#include "upcycle/backend/threads.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/nn/vit.hpp"
#include "upcycle/ops/loss.hpp"
#include "upcycle/train/grad_reducer.hpp"
#include "upcycle/train/optimizer.hpp"

#ifndef UPCYCLE_SOURCE_DIR
#define UPCYCLE_SOURCE_DIR "."
#endif

namespace {

using namespace upcycle;

struct Options {
  int threads = 0, steps = 30, warmup = 5, profile_steps = 10, rounds = 1;
  std::int64_t batch = 128, experts = 0, top_k = 2;
  double lr = 1e-3, weight_decay = 0.05, clip = 1.0, lb_weight = 0.01, z_weight = 0.001;
  bool torch = true, detail = false;
  std::string python = "/usr/bin/python3", json_path;
};

// The model of configs/fashion_vit_tiny.ini at 4x4 patches, with the schema's defaults for what it
// leaves out; with experts, every other block's FFN is an MoE layer.
nn::ViTConfig main_job_vit(const Options& o) {
  nn::ViTConfig v;
  v.image_size = 28;
  v.patch_size = 4;
  v.channels = 1;
  v.num_classes = 10;
  v.depth = 4;
  v.block.d_model = 64;
  v.block.n_heads = 4;
  v.block.d_ff = 128;
  v.block.activation = nn::MlpActivation::gelu_tanh;
  v.block.bias = true;
  v.block.ln_eps = 1e-5;
  v.block.init_std = 0.02;
  v.block.residual_init_std = 0.02 / std::sqrt(2.0 * static_cast<double>(v.depth));
  v.block.dropout = 0.0;
  if (o.experts > 0) {
    moe::MoeConfig m;
    m.d_model = v.block.d_model;
    m.d_ff = v.block.d_ff;
    m.num_experts = o.experts;
    m.top_k = o.top_k;
    m.renormalize = true;
    m.capacity_factor = 0.0;
    m.activation = v.block.activation;
    m.bias = true;
    m.init_std = v.block.init_std;
    m.out_init_std = v.block.residual_init_std;
    m.router_std = 0.02;
    v.block.sparse_ffn = moe::moe_ffn_factory(m, nullptr);
    for (std::int64_t i = 1; i < v.depth; i += 2) v.moe_blocks.push_back(i);
  }
  return v;
}

struct Batch {
  Tensor images, targets;
};

std::vector<Batch> random_batches(const nn::ViTConfig& v, std::int64_t batch, int count) {
  std::vector<Batch> out;
  for (int i = 0; i < count; ++i) {
    Batch b;
    b.images = Tensor::empty({batch, v.channels, v.image_size, v.image_size}, DType::f32, Device::cpu);
    backend_for(Device::cpu).normal(b.images, 1000 + static_cast<std::uint64_t>(i), 0, 0.0, 1.0);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(batch));
    std::uint64_t s = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(i + 1);
    for (auto& l : labels) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      l = static_cast<std::int64_t>((s >> 33) % static_cast<std::uint64_t>(v.num_classes));
    }
    b.targets = Tensor::from_vector<std::int64_t>(labels, {batch}, Device::cpu);
    out.push_back(std::move(b));
  }
  return out;
}

class Trainer {
 public:
  Trainer(const nn::ViTConfig& v, const Options& o)
      : rng_(1234), model_(v, rng_), opt_(model_.named_parameters(), adamw_options(o)),
        params_(model_.parameters()), opts_(o) {
    model_.train(true);
  }

  // One training step; returns the loss.
  double step(const Batch& b) {
    opt_.zero_grad();
    Var loss;
    {
      profile::Region r("forward");
      loss = cross_entropy(model_.forward(b.images), b.targets);
    }
    Var total = loss;
    for (moe::MoeLayer* layer : moe::moe_layers_of(model_.blocks)) {  // the router losses, as the trainer adds them
      const moe::MoeRouting& r = layer->last_routing();
      if (opts_.lb_weight > 0) total = total + moe::load_balancing_loss(r.probs, r.indices, opts_.lb_weight);
      if (opts_.z_weight > 0) total = total + moe::router_z_loss(r.logits, opts_.z_weight);
    }
    {
      profile::Region r("backward");
      total.backward();
    }
    for (moe::MoeLayer* layer : moe::moe_layers_of(model_.blocks)) layer->clear_routing();
    {
      profile::Region r("clip");
      if (opts_.clip > 0) {
        const double gnorm = grad_norm(params_);
        if (gnorm > opts_.clip) scale_grads(params_, opts_.clip / gnorm);
      }
    }
    {
      profile::Region r("optimizer");
      opt_.step(opts_.lr);
    }
    return static_cast<double>(loss.value().item<float>());
  }

  std::int64_t num_parameters() const { return model_.num_parameters(); }

 private:
  static AdamWOptions adamw_options(const Options& o) {
    AdamWOptions a;
    a.weight_decay = o.weight_decay;
    return a;
  }

  RngStream rng_;
  nn::ViT model_;
  AdamW opt_;
  std::vector<Var> params_;
  Options opts_;
};

struct Timing {
  double median_s = 0, mean_s = 0, first_loss = 0, last_loss = 0;
};

Timing time_steps(const std::function<double(int)>& step, int warmup, int steps) {
  Timing t;
  std::vector<double> times;
  for (int i = 0; i < warmup + steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const double loss = step(i);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i == 0) t.first_loss = loss;
    t.last_loss = loss;
    if (i >= warmup) times.push_back(s);
  }
  for (double s : times) t.mean_s += s / static_cast<double>(times.size());
  std::sort(times.begin(), times.end());
  t.median_s = times[times.size() / 2];
  return t;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

double json_number(const std::string& line, const std::string& key) {
  const auto at = line.find("\"" + key + "\": ");
  if (at == std::string::npos) return NAN;
  return std::stod(line.substr(at + key.size() + 4));
}

// Runs the PyTorch peer (env: a VAR=VALUE prefix or empty); false when it failed.
bool run_torch(const Options& o, const nn::ViTConfig& v, const std::string& env, Timing& out) {
  std::ostringstream cfg;
  cfg << "{\"image_size\": " << v.image_size << ", \"patch_size\": " << v.patch_size << ", \"channels\": " << v.channels
      << ", \"num_classes\": " << v.num_classes << ", \"depth\": " << v.depth << ", \"d_model\": " << v.block.d_model
      << ", \"heads\": " << v.block.n_heads << ", \"ffn\": " << v.block.d_ff << ", \"batch\": " << o.batch
      << ", \"experts\": " << o.experts << ", \"top_k\": " << o.top_k << ", \"lb_weight\": " << o.lb_weight
      << ", \"z_weight\": " << o.z_weight << ", \"lr\": " << o.lr << ", \"weight_decay\": " << o.weight_decay
      << ", \"clip\": " << o.clip << "}";
  const std::string cmd = (env.empty() ? std::string() : "env " + env + " ") + shell_quote(o.python) + " " +
                          shell_quote(std::string(UPCYCLE_SOURCE_DIR) + "/src/bench/bench_train_torch.py") +
                          " --threads " + std::to_string(o.threads) + " --steps " + std::to_string(o.steps) +
                          " --warmup " + std::to_string(o.warmup) + " " + shell_quote(cfg.str());
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return false;
  char line[1024];
  bool found = false;
  while (std::fgets(line, sizeof line, pipe)) {
    const std::string s(line);
    if (s.find("\"median_s\"") == std::string::npos) continue;
    out.median_s = json_number(s, "median_s");
    out.mean_s = json_number(s, "mean_s");
    out.first_loss = json_number(s, "first_loss");
    out.last_loss = json_number(s, "last_loss");
    found = true;
  }
  const int rc = ::pclose(pipe);
  if (rc != 0 || !found) {
    std::cerr << "bench_train: the PyTorch peer failed (is python3-torch installed?)\n";
    return false;
  }
  return true;
}

int usage() {
  std::cerr << "usage: bench_train [--threads N] [--steps S] [--warmup W] [--batch B] [--rounds R]\n"
               "                   [--experts E] [--top-k K] [--profile-steps P] [--detail] [--no-torch]\n"
               "                   [--python PATH] [--json FILE]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "bench_train: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--threads") o.threads = std::stoi(value());
    else if (a == "--steps") o.steps = std::stoi(value());
    else if (a == "--warmup") o.warmup = std::stoi(value());
    else if (a == "--batch") o.batch = std::stoll(value());
    else if (a == "--rounds") o.rounds = std::stoi(value());
    else if (a == "--experts") o.experts = std::stoll(value());
    else if (a == "--top-k") o.top_k = std::stoll(value());
    else if (a == "--profile-steps") o.profile_steps = std::stoi(value());
    else if (a == "--detail") o.detail = true;
    else if (a == "--no-torch") o.torch = false;
    else if (a == "--python") o.python = value();
    else if (a == "--json") o.json_path = value();
    else return usage();
  }
  if (o.steps < 1 || o.warmup < 0 || o.batch < 1 || o.profile_steps < 0 || o.rounds < 1 || o.experts < 0 ||
      (o.experts > 0 && (o.top_k < 1 || o.top_k > o.experts)))
    return usage();
  o.threads = configure_cpu_threads(o.threads);

  const nn::ViTConfig v = main_job_vit(o);
  const std::int64_t tokens = o.batch * (1 + v.num_patches());
  const auto batches = random_batches(v, o.batch, 4);
  Trainer trainer(v, o);
  if (o.experts > 0)
    std::printf("bench_train: MoE in blocks 1, 3, ...: %lld experts, top-%lld\n", static_cast<long long>(o.experts),
                static_cast<long long>(o.top_k));
  std::printf("bench_train: ViT D%lld depth %lld H%lld F%lld patch %lld, %lld parameters, batch %lld "
              "(%lld tokens/step), %d threads, median of %d steps after %d warm-up%s\n",
              static_cast<long long>(v.block.d_model), static_cast<long long>(v.depth),
              static_cast<long long>(v.block.n_heads), static_cast<long long>(v.block.d_ff),
              static_cast<long long>(v.patch_size), static_cast<long long>(trainer.num_parameters()),
              static_cast<long long>(o.batch), static_cast<long long>(tokens), o.threads, o.steps, o.warmup,
              profile::enabled() ? " (UPCYCLE_PROFILE is set: the timing includes the profiler)" : "");
  std::fflush(stdout);

  auto row = [&](const char* name, const Timing& t) {
    std::printf("%-22s %10.3f %10.3f %12.0f %9.4f %9.4f\n", name, t.median_s * 1e3, t.mean_s * 1e3,
                static_cast<double>(tokens) / t.median_s, t.first_loss, t.last_loss);
  };
  std::vector<double> ratios, ours_ms, theirs_ms;
  std::ofstream json;
  if (!o.json_path.empty()) json.open(o.json_path);
  for (int round = 0; round < o.rounds; ++round) {
    const Timing ours = time_steps(
        [&](int i) { return trainer.step(batches[static_cast<std::size_t>(i) % batches.size()]); }, o.warmup, o.steps);
    Timing torch_default, torch_blas1;
    const bool have_default = o.torch && run_torch(o, v, "", torch_default);
    const bool have_blas1 = o.torch && run_torch(o, v, "OPENBLAS_NUM_THREADS=1", torch_blas1);
    const bool have_torch = have_default || have_blas1;
    // The faster PyTorch configuration is the one compared against.
    const Timing& theirs =
        have_default && (!have_blas1 || torch_default.median_s <= torch_blas1.median_s) ? torch_default : torch_blas1;
    const double ours_tps = static_cast<double>(tokens) / ours.median_s;
    const double theirs_tps = have_torch ? static_cast<double>(tokens) / theirs.median_s : 0.0;
    if (o.rounds > 1) std::printf("round %d of %d\n", round + 1, o.rounds);
    std::printf("%-22s %10s %10s %12s %9s %9s\n", "", "step ms", "mean ms", "tokens/s", "loss0", "loss");
    row("upcycle", ours);
    if (have_default) row("torch", torch_default);
    if (have_blas1) row("torch (OpenBLAS 1 thr)", torch_blas1);
    if (have_torch) {
      std::printf("ratio upcycle/torch tokens/s: %.3fx (against the faster torch run)\n", ours_tps / theirs_tps);
      ratios.push_back(ours_tps / theirs_tps);
      theirs_ms.push_back(theirs.median_s * 1e3);
    }
    ours_ms.push_back(ours.median_s * 1e3);
    std::fflush(stdout);
    if (json) {
      json << "{\"bench\": \"train_vit_tiny\", \"experts\": " << o.experts << ", \"round\": " << round << ", \"threads\": " << o.threads
           << ", \"batch\": " << o.batch << ", \"tokens_per_step\": " << tokens
           << ", \"upcycle_step_ms\": " << ours.median_s * 1e3 << ", \"upcycle_tokens_per_s\": " << ours_tps
           << ", \"torch_step_ms\": " << (have_torch ? theirs.median_s * 1e3 : 0.0)
           << ", \"torch_tokens_per_s\": " << theirs_tps
           << ", \"torch_default_step_ms\": " << (have_default ? torch_default.median_s * 1e3 : 0.0)
           << ", \"torch_openblas1_step_ms\": " << (have_blas1 ? torch_blas1.median_s * 1e3 : 0.0)
           << ", \"ratio\": " << (have_torch ? ours_tps / theirs_tps : 0.0) << "}\n";
    }
  }
  if (o.rounds > 1) {
    auto median = [](std::vector<double> v) {
      if (v.empty()) return 0.0;
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    };
    std::printf("median over %d rounds: upcycle %.3f ms/step (%.0f tokens/s)", o.rounds, median(ours_ms),
                static_cast<double>(tokens) / (median(ours_ms) * 1e-3));
    if (!ratios.empty())
      std::printf(", torch %.3f ms/step, ratio upcycle/torch %.3fx", median(theirs_ms), median(ratios));
    std::printf("\n");
    std::fflush(stdout);
  }

  if (o.profile_steps > 0) {
    const bool was_on = profile::enabled();
    profile::enable(Device::cpu, o.detail);
    profile::reset();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < o.profile_steps; ++i) trainer.step(batches[static_cast<std::size_t>(i) % batches.size()]);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("\nprofile of %d upcycle steps (%.3f ms/step with the profiler on):\n", o.profile_steps,
                wall * 1e3 / o.profile_steps);
    std::fflush(stdout);
    profile::print(stdout, 30, wall);
    if (!was_on) profile::disable(Device::cpu);
    profile::reset();  // nothing left for an at-exit print
  }
  return 0;
}
