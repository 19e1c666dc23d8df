// bench_train: training throughput of a ViT on one backend and, in the same invocation, of the same
// model in PyTorch (run by src/bench/bench_train_torch.py, same device, same thread count).
// `bench_train --help` lists the options. Shapes (--shape):
//   vit-tiny  the default main job's model (configs/fashion_vit_tiny.ini: width 64, depth 4,
//             4 heads, FFN 128, 4x4 patches on 28x28 one-channel images, batch 128);
//   vit-b16   ViT-B/16: 224x224x3 images, 16x16 patches, width 768, depth 12, 12 heads, FFN 3072,
//             1000 classes, batch 64.
// One step is what the trainer does: forward, mean cross-entropy, backward, global gradient-norm
// clipping and an AdamW update. Inputs are random images and labels (a few fixed batches cycled).
// Prints tokens/s of both (a token is an image patch or the class token: B * (1 + N) per step)
// and the ratio upcycle / torch (> 1: upcycle is faster), then a per-kernel profile of a few extra
// upcycle steps (taken after the timed steps, so the timing carries no profiler overhead).
// With --peak-tflops, also the model FLOP utilisation of both (the formula is printed with it).
//
// On the CPU PyTorch runs twice: as configured by torch.set_num_threads(N) alone, and with
// OPENBLAS_NUM_THREADS=1 as well. Debian's torch calls the pthread OpenBLAS, whose own pool (one
// thread per core) ignores set_num_threads: with N = 1 its GEMMs still use every core, with N > 1
// the two pools oversubscribe the cores. The ratio is taken against the faster of the two runs.
// On the GPU (--device cuda) it runs once, on the same GPU.
// --experts E > 0 makes every other block (1, 3, ...) an MoE layer with E experts, top-k routing
// (renormalised gates, dropless, one process), and adds the load-balancing (0.01) and z (0.001)
// router losses, on both sides.
// --rounds R repeats the whole measurement (upcycle, then torch) R times, one after the other so
// that each ratio compares runs taken close in time on a shared machine, and reports the median
// ratio.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/profiling.hpp"
#include "upcycle/backend/threads.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/moe/moe_layer.hpp"
#include "upcycle/moe/router_losses.hpp"
#include "upcycle/nn/vit.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/loss.hpp"
#include "upcycle/train/grad_reducer.hpp"
#include "upcycle/ops/shape.hpp"
#include "upcycle/train/eesd.hpp"
#include "upcycle/train/optimizer.hpp"

namespace {

using namespace upcycle;

struct Options {
  int threads = 0, steps = 30, warmup = 5, profile_steps = 10, rounds = 1;
  std::int64_t batch = 0, experts = 0, top_k = 2;  // batch 0: the shape's own
  double lr = 1e-3, weight_decay = 0.05, clip = 1.0, lb_weight = 0.01, z_weight = 0.001, peak_tflops = 0.0;
  bool no_torch = false, detail = false, tf32 = false, eesd = false;
  std::string shape = "vit-tiny", device = "cpu", python = "/usr/bin/python3",
              script = bench::peer_script("bench_train_torch.py"), json_path;
};

// The model of --shape, with the schema's defaults for what configs/fashion_vit_tiny.ini leaves
// out; with experts, every other block's FFN is an MoE layer.
nn::ViTConfig vit_config(const Options& o) {
  nn::ViTConfig v;
  if (o.shape == "vit-b16") {
    v.image_size = 224;
    v.patch_size = 16;
    v.channels = 3;
    v.num_classes = 1000;
    v.depth = 12;
    v.block.d_model = 768;
    v.block.n_heads = 12;
    v.block.d_ff = 3072;
  } else {
    v.image_size = 28;
    v.patch_size = 4;
    v.channels = 1;
    v.num_classes = 10;
    v.depth = 4;
    v.block.d_model = 64;
    v.block.n_heads = 4;
    v.block.d_ff = 128;
  }
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

struct ImageBatch {
  Tensor images, targets;
};

// Made on the CPU (the same values on every device), then moved.
std::vector<ImageBatch> random_batches(const nn::ViTConfig& v, std::int64_t batch, int count, Device device) {
  std::vector<ImageBatch> out;
  for (int i = 0; i < count; ++i) {
    ImageBatch b;
    b.images = bench::randn({batch, v.channels, v.image_size, v.image_size}, 1000 + static_cast<std::uint64_t>(i))
                   .to(device);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(batch));
    std::uint64_t s = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(i + 1);
    for (auto& l : labels) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      l = static_cast<std::int64_t>((s >> 33) % static_cast<std::uint64_t>(v.num_classes));
    }
    b.targets = Tensor::from_vector<std::int64_t>(labels, {batch}, device);
    out.push_back(std::move(b));
  }
  return out;
}

class Trainer {
 public:
  // The model is initialised on the host and moved before the optimiser makes its state beside
  // the parameters.
  // eesd: distil the EMA teacher's dense ensemble at every MoE block (train/eesd.hpp, the
  // [eesd] defaults: lambda 0.1, m 0.999, uniform weights, the MoE outputs).
  Trainer(const nn::ViTConfig& v, const Options& o, Device device, bool eesd = false)
      : rng_(1234), model_(v, rng_), opt_((model_.to(device), model_.named_parameters()), adamw_options(o)),
        params_(model_.parameters()), opts_(o), stats_(Tensor::empty({2}, DType::f64, device)) {
    model_.train(true);
    if (eesd) {
      RngStream twin_rng(1234);
      auto teacher = std::make_unique<nn::ViT>(v, twin_rng);
      teacher->to(device);
      eesd_ = std::make_unique<ExpertEnsembleDistillation>(ExpertEnsembleDistillation::Options{}, model_,
                                                           std::move(teacher));
    }
  }

  // One training step; returns the loss.
  double step(const ImageBatch& b) {
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
    if (eesd_) {
      profile::Region r("eesd");
      Batch batch;
      batch.inputs = b.images;
      batch.targets = b.targets;
      total = total + reshape(eesd_->loss(batch).backward, total.shape());
    }
    {
      profile::Region r("backward");
      total.backward();
    }
    for (moe::MoeLayer* layer : moe::moe_layers_of(model_.blocks)) layer->clear_routing();
    std::vector<double> sv;
    {
      profile::Region r("clip");
      // The loss and the squared gradient norm reach the host together: one wait for the device
      // per step, as in the trainer.
      stats_.rows(0, 1).copy_from(loss.value().to(DType::f64).reshape({1}));
      stats_.rows(1, 2).copy_from(grad_sum_squares_on_device(params_));
      sv = stats_.to_vector<double>();
      const double gnorm = std::sqrt(sv[1]);
      if (opts_.clip > 0 && gnorm > opts_.clip) scale_grads(params_, opts_.clip / gnorm);
    }
    {
      profile::Region r("optimizer");
      opt_.step(opts_.lr);
    }
    if (eesd_) {
      profile::Region r("eesd_ema");
      eesd_->after_step();
    }
    return sv[0];
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
  Tensor stats_;  // [loss, sum of squared gradients]
  std::unique_ptr<ExpertEnsembleDistillation> eesd_;
};

struct Timing {
  double median_s = 0, mean_s = 0, first_loss = 0, last_loss = 0, parameters = 0;
};

// --eesd: the same model and batches trained with EESD off and on, one after the other in each
// round (the peer is the same binary without EESD). A trainer's peak memory is the allocator's peak
// of bytes in use from just before it is built to the end of its steps, over the baseline then:
// parameters, AdamW moments, gradients, activations (and with EESD the teacher and the targets).
int eesd_overhead(const Options& o, const nn::ViTConfig& v, const std::vector<ImageBatch>& batches, Device device) {
  Backend& be = backend_for(device);
  struct Run {
    double step_ms = 0, peak_mib = 0, loss = 0;
  };
  auto measure = [&](bool eesd) {
    be.synchronize();
    const std::int64_t base = be.allocator_stats().bytes_in_use;
    be.reset_peak_bytes();
    Run r;
    {
      Trainer trainer(v, o, device, eesd);
      const std::vector<double> times = bench::time_calls(
          [&](int i) { r.loss = trainer.step(batches[static_cast<std::size_t>(i) % batches.size()]); }, o.warmup,
          o.steps, device);
      r.step_ms = bench::median(times) * 1e3;
      be.synchronize();
      r.peak_mib = static_cast<double>(be.allocator_stats().peak_bytes_in_use - base) / (1 << 20);
    }
    return r;
  };
  std::printf("bench_train --eesd: EESD on (lambda 0.1, m 0.999, the MoE outputs) against off, %s\n",
              bench::device_name(device));
  std::printf("%-8s %10s %10s %10s %10s %9s %9s\n", "round", "off ms", "on ms", "time", "off MiB", "on MiB", "memory");
  std::vector<double> time_ratio, mem_ratio;
  MetricsWriter json = bench::json_lines(o.json_path);
  for (int round = 0; round < o.rounds; ++round) {
    const Run off = measure(false), on = measure(true);
    time_ratio.push_back(on.step_ms / off.step_ms);
    mem_ratio.push_back(on.peak_mib / off.peak_mib);
    std::printf("%-8d %10.3f %10.3f %+9.1f%% %10.2f %9.2f %+8.1f%%\n", round + 1, off.step_ms, on.step_ms,
                100.0 * (time_ratio.back() - 1), off.peak_mib, on.peak_mib, 100.0 * (mem_ratio.back() - 1));
    JsonObject line;
    line.add("bench", "train_eesd_overhead").add("device", bench::device_name(device)).add("round", round);
    line.add("experts", o.experts).add("top_k", o.top_k).add("batch", o.batch).add("threads", o.threads);
    line.add("off_step_ms", off.step_ms).add("on_step_ms", on.step_ms).add("off_peak_mib", off.peak_mib);
    line.add("on_peak_mib", on.peak_mib).add("time_overhead", time_ratio.back() - 1);
    line.add("memory_overhead", mem_ratio.back() - 1);
    json.write(line);
  }
  std::printf("EESD overhead (median over %d rounds): time %+.1f%%, peak memory %+.1f%%\n", o.rounds,
              100.0 * (bench::median(time_ratio) - 1), 100.0 * (bench::median(mem_ratio) - 1));
  return 0;
}

// Runs the PyTorch peer (env: a VAR=VALUE prefix or empty); false when it failed.
bool run_torch(const Options& o, const nn::ViTConfig& v, Device device, const std::string& env, Timing& out) {
  JsonObject cfg;
  cfg.add("image_size", v.image_size).add("patch_size", v.patch_size).add("channels", v.channels);
  cfg.add("num_classes", v.num_classes).add("depth", v.depth).add("d_model", v.block.d_model);
  cfg.add("heads", v.block.n_heads).add("ffn", v.block.d_ff).add("batch", o.batch).add("experts", o.experts);
  cfg.add("top_k", o.top_k).add("lb_weight", o.lb_weight).add("z_weight", o.z_weight).add("lr", o.lr);
  cfg.add("weight_decay", o.weight_decay).add("clip", o.clip);
  std::vector<std::string> cmd = {o.python, o.script, "--threads", std::to_string(o.threads), "--steps",
                                  std::to_string(o.steps), "--warmup", std::to_string(o.warmup), "--device",
                                  bench::device_name(device)};
  if (o.tf32) cmd.push_back("--tf32");
  cmd.push_back(cfg.str());
  const auto lines = bench::run_peer(cmd, env);
  bool found = false;
  for (const auto& s : lines ? *lines : std::vector<std::string>()) {
    if (s.find("\"median_s\"") == std::string::npos) continue;
    out.median_s = bench::json_number(s, "median_s");
    out.mean_s = bench::json_number(s, "mean_s");
    out.first_loss = bench::json_number(s, "first_loss");
    out.last_loss = bench::json_number(s, "last_loss");
    out.parameters = bench::json_number(s, "parameters");
    found = true;
  }
  if (!found) std::fprintf(stderr, "bench_train: the PyTorch peer failed (is python3-torch installed?)\n");
  return found;
}

// Parameters a token passes through: all of them, less the experts it is not routed to.
std::int64_t active_parameters(const nn::ViTConfig& v, const Options& o, std::int64_t total) {
  if (o.experts == 0) return total;
  const std::int64_t d = v.block.d_model, f = v.block.d_ff, per_expert = 2 * d * f + f + d;
  return total - static_cast<std::int64_t>(v.moe_blocks.size()) * (o.experts - o.top_k) * per_expert;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bench::Args args("bench_train", "Training throughput of a ViT (forward, cross-entropy, backward, clipping, AdamW) "
                                  "against PyTorch on the same device.");
  args.add("shape", o.shape, "vit-tiny (the main job's model) or vit-b16")
      .add("device", o.device, "cpu, cuda or auto")
      .flag("tf32", o.tf32, "let GEMMs round f32 inputs to TF32 on the GPU (both sides)")
      .add("threads", o.threads, "CPU threads (0: the cores / local ranks)")
      .add("steps", o.steps, "timed steps per round")
      .add("warmup", o.warmup, "untimed steps before them")
      .add("batch", o.batch, "images per step", "128 (vit-b16: 64)")
      .add("rounds", o.rounds, "repeats of the whole measurement; the median ratio is reported")
      .add("experts", o.experts, "> 0: blocks 1, 3, ... are MoE layers with this many experts")
      .add("top-k", o.top_k, "experts per token")
      .add("peak-tflops", o.peak_tflops, "the device's peak f32 TFLOP/s, to report model FLOP utilisation (0: none)")
      .add("profile-steps", o.profile_steps, "upcycle steps profiled after the timing (0: no profile)")
      .flag("detail", o.detail, "profile by GEMM shape and op as well")
      .flag("no-torch", o.no_torch, "time upcycle only")
      .flag("eesd", o.eesd, "time EESD on against EESD off (needs --experts; no PyTorch peer)")
      .add("python", o.python, "the Python that runs the PyTorch peer")
      .add("torch-script", o.script, "the PyTorch peer")
      .add("json", o.json_path, "also write one JSON line per round to this file", "none");
  args.parse(argc, argv);
  if (o.shape != "vit-tiny" && o.shape != "vit-b16") args.fail("--shape must be vit-tiny or vit-b16, got '" + o.shape + "'");
  if (o.batch == 0) o.batch = o.shape == "vit-b16" ? 64 : 128;
  if (o.steps < 1 || o.warmup < 0 || o.batch < 1 || o.profile_steps < 0 || o.rounds < 1 || o.experts < 0 ||
      o.peak_tflops < 0)
    args.fail("--steps, --batch and --rounds must be positive; --warmup, --profile-steps, --experts and "
              "--peak-tflops not negative");
  if (o.experts > 0 && (o.top_k < 1 || o.top_k > o.experts)) args.fail("--top-k must be in [1, --experts]");
  if (o.eesd && o.experts == 0) args.fail("--eesd distils MoE layers: give --experts > 0");
  const Device device = bench::choose(args, o.device, o.tf32);
  const bool gpu = device == Device::cuda;
  o.threads = configure_cpu_threads(o.threads);

  const nn::ViTConfig v = vit_config(o);
  const std::int64_t seq = 1 + v.num_patches(), tokens = o.batch * seq;
  const auto batches = random_batches(v, o.batch, 4, device);
  if (o.eesd) return eesd_overhead(o, v, batches, device);
  Trainer trainer(v, o, device);
  if (o.experts > 0)
    std::printf("bench_train: MoE in blocks 1, 3, ...: %lld experts, top-%lld\n", static_cast<long long>(o.experts),
                static_cast<long long>(o.top_k));
  std::printf("bench_train: ViT D%lld depth %lld H%lld F%lld patch %lld, %lld parameters, batch %lld "
              "(%lld tokens/step), %d threads, %smedian of %d steps after %d warm-up%s\n",
              static_cast<long long>(v.block.d_model), static_cast<long long>(v.depth),
              static_cast<long long>(v.block.n_heads), static_cast<long long>(v.block.d_ff),
              static_cast<long long>(v.patch_size), static_cast<long long>(trainer.num_parameters()),
              static_cast<long long>(o.batch), static_cast<long long>(tokens), o.threads,
              gpu ? (o.tf32 ? "on cuda (TF32 on), " : "on cuda (TF32 off), ") : "", o.steps, o.warmup,
              profile::enabled() ? " (UPCYCLE_PROFILE is set: the timing includes the profiler)" : "");
  // Model FLOPs: 6 per active parameter and token (forward 2, backward 4) plus attention's scores
  // and weighted sums, 12 L T d per token; the head on the class token alone is counted per token.
  const std::int64_t active = active_parameters(v, o, trainer.num_parameters());
  const double step_flops =
      static_cast<double>(tokens) * (6.0 * static_cast<double>(active) +
                                     12.0 * static_cast<double>(v.depth * seq * v.block.d_model));
  auto mfu = [&](double step_s) { return step_flops / step_s / (o.peak_tflops * 1e12); };
  if (o.peak_tflops > 0)
    std::printf("bench_train: MFU = model FLOPs / step time / %.1f TFLOP/s; model FLOPs per token = 6 N + 12 L T d "
                "(N = %lld active parameters, L = %lld, T = %lld, d = %lld) = %.4g, %.4g per step\n",
                o.peak_tflops, static_cast<long long>(active), static_cast<long long>(v.depth),
                static_cast<long long>(seq), static_cast<long long>(v.block.d_model),
                step_flops / static_cast<double>(tokens), step_flops);
  std::fflush(stdout);

  auto row = [&](const char* name, const Timing& t) {
    std::printf("%-22s %10.3f %10.3f %12.0f %9.4f %9.4f\n", name, t.median_s * 1e3, t.mean_s * 1e3,
                static_cast<double>(tokens) / t.median_s, t.first_loss, t.last_loss);
  };
  std::vector<double> ratios, ours_ms, theirs_ms;
  MetricsWriter json = bench::json_lines(o.json_path);
  for (int round = 0; round < o.rounds; ++round) {
    Timing ours;
    const std::vector<double> times = bench::time_calls(
        [&](int i) {
          const double loss = trainer.step(batches[static_cast<std::size_t>(i) % batches.size()]);
          if (i == 0) ours.first_loss = loss;
          ours.last_loss = loss;
        },
        o.warmup, o.steps, device);
    for (double s : times) ours.mean_s += s / static_cast<double>(times.size());
    ours.median_s = bench::median(times);
    Timing torch_default, torch_blas1;
    const bool have_default = !o.no_torch && run_torch(o, v, device, "", torch_default);
    // The OpenBLAS setting only exists on the CPU.
    const bool have_blas1 = !o.no_torch && !gpu && run_torch(o, v, device, "OPENBLAS_NUM_THREADS=1", torch_blas1);
    const bool have_torch = have_default || have_blas1;
    const double torch_params = have_default ? torch_default.parameters : torch_blas1.parameters;
    if (have_torch && torch_params != static_cast<double>(trainer.num_parameters()))
      std::fprintf(stderr, "bench_train: the PyTorch model has %.0f parameters, upcycle's %lld: not the same model\n",
                   torch_params, static_cast<long long>(trainer.num_parameters()));
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
    if (o.peak_tflops > 0) {
      std::printf("MFU: upcycle %.1f%% (%.3g TFLOP/s)", 100.0 * mfu(ours.median_s), step_flops / ours.median_s / 1e12);
      if (have_torch)
        std::printf(", torch %.1f%% (%.3g TFLOP/s)", 100.0 * mfu(theirs.median_s), step_flops / theirs.median_s / 1e12);
      std::printf("\n");
    }
    ours_ms.push_back(ours.median_s * 1e3);
    std::fflush(stdout);
    JsonObject line;
    line.add("bench", o.shape == "vit-b16" ? "train_vit_b16" : "train_vit_tiny").add("device", bench::device_name(device));
    line.add("experts", o.experts).add("round", round).add("threads", o.threads).add("batch", o.batch);
    line.add("tokens_per_step", tokens).add("upcycle_step_ms", ours.median_s * 1e3).add("upcycle_tokens_per_s", ours_tps);
    line.add("torch_step_ms", have_torch ? theirs.median_s * 1e3 : 0.0).add("torch_tokens_per_s", theirs_tps);
    line.add("torch_default_step_ms", have_default ? torch_default.median_s * 1e3 : 0.0);
    line.add("torch_openblas1_step_ms", have_blas1 ? torch_blas1.median_s * 1e3 : 0.0);
    line.add("ratio", have_torch ? ours_tps / theirs_tps : 0.0);
    if (o.peak_tflops > 0) line.add("upcycle_mfu", mfu(ours.median_s)).add("torch_mfu", have_torch ? mfu(theirs.median_s) : 0.0);
    json.write(line);
  }
  if (o.rounds > 1) {
    std::printf("median over %d rounds: upcycle %.3f ms/step (%.0f tokens/s)", o.rounds, bench::median(ours_ms),
                static_cast<double>(tokens) / (bench::median(ours_ms) * 1e-3));
    if (!ratios.empty())
      std::printf(", torch %.3f ms/step, ratio upcycle/torch %.3fx", bench::median(theirs_ms), bench::median(ratios));
    std::printf("\n");
    std::fflush(stdout);
  }

  if (o.profile_steps > 0) {
    const bool was_on = profile::enabled();
    profile::enable(device, o.detail);
    profile::reset();
    const auto t0 = bench::Clock::now();
    for (int i = 0; i < o.profile_steps; ++i) trainer.step(batches[static_cast<std::size_t>(i) % batches.size()]);
    backend_for(device).synchronize();
    const double wall = bench::seconds_since(t0);
    std::printf("\nprofile of %d upcycle steps (%.3f ms/step with the profiler on):\n", o.profile_steps,
                wall * 1e3 / o.profile_steps);
    std::fflush(stdout);
    profile::print(stdout, 30, wall);
    if (!was_on) profile::disable(device);
    profile::reset();  // nothing left for an at-exit print
  }
  return 0;
}
