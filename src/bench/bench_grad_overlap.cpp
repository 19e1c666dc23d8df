// bench_grad_overlap: how much of the data-parallel gradient all-reduce the backward pass hides.
// Every rank of mpirun's world trains the same ViT on a batch of its own; a step is forward,
// cross-entropy, backward, GradReducer::reduce() (bucketed all-reduce, average over the ranks)
// and AdamW. Three modes, each on its own replica of the model (same initialisation), their steps
// interleaved (off, on, on-idle, off, ...) so that a shared machine's load changes hit all three
// alike:
//   off     the synchronous reducer: every bucket is packed and all-reduced after backward (the
//           baseline, as with parallel.overlap_grad_reduce = false)
//   on      overlap: each bucket's all_reduce_async starts from the gradient hooks as soon as its
//           gradients are final, and the hooks call test() on the oldest one in flight, which is
//           what advances an MPI non-blocking collective (the trainer's setting)
//   on-idle overlap without those test() calls: MPI advances the collectives only in wait()
// Per mode, the median over steps of the slowest rank's times: the step, forward, backward (in the
// overlapped modes it includes packing and starting buckets) and the communication wait after
// backward (reduce(): start what is left, wait, scale). Then, against the baseline of the same
// run, from the steps taken side by side (step i of every mode): hidden = median_i(wait_i(off) -
// wait_i(mode)) / median(wait(off)), the share of the exposed all-reduce time that backward hid,
// and saved = median_i(step_i(off) - step_i(mode)) / median(wait(off)), the share that came off
// the step time. Each step starts after a barrier; the device is synchronised at every reading.
//   launch/mpirun_local.sh 2 build/src/bench_grad_overlap [--bucket-kb 1024] [--backend nccl]
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "upcycle/backend/backend.hpp"
#include "upcycle/backend/devices.hpp"
#include "upcycle/backend/threads.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/dist/comm_backend.hpp"
#include "upcycle/dist/world.hpp"
#include "upcycle/nn/vit.hpp"
#include "upcycle/ops/loss.hpp"
#include "upcycle/train/grad_reducer.hpp"
#include "upcycle/train/optimizer.hpp"

namespace {

using namespace upcycle;

struct Options {
  std::int64_t width = 256, depth = 6, heads = 8, ffn = 1024, patch = 4, batch = 8, bucket_kb = 1024;
  int steps = 30, warmup = 3, threads = 0;
  std::string backend = "mpi", json_path;
};

enum class Mode { off, on, on_idle };
const Mode kModes[] = {Mode::off, Mode::on, Mode::on_idle};
const char* mode_name(Mode m) { return m == Mode::off ? "off" : m == Mode::on ? "on" : "on-idle"; }

// Per-step times in seconds, each the slowest rank's.
struct Times {
  std::vector<double> step, forward, backward, wait;
  double launched_in_backward = 0;  // buckets started during backward, mean over steps (rank 0)
};

nn::ViTConfig vit_config(const Options& o) {
  nn::ViTConfig v;
  v.image_size = 28;
  v.patch_size = o.patch;
  v.channels = 1;
  v.num_classes = 10;
  v.depth = o.depth;
  v.block.d_model = o.width;
  v.block.n_heads = o.heads;
  v.block.d_ff = o.ffn;
  v.block.activation = nn::MlpActivation::gelu_tanh;
  v.block.dropout = 0.0;
  return v;
}

// One mode: a replica of the model with its optimiser and reducer.
class Replica {
 public:
  Replica(Mode mode, const Options& o, const std::shared_ptr<Communicator>& world, Device device)
      : rng_(1234), model_(vit_config(o), rng_), world_(world), device_(device) {
    model_.to(device);
    model_.train(true);
    optimizer_ = std::make_unique<AdamW>(model_.named_parameters(), AdamWOptions{});
    reducer_ = std::make_unique<GradReducer>(model_.parameters(), world, static_cast<std::size_t>(o.bucket_kb) << 10,
                                             0.0, mode != Mode::off);
    reducer_->set_progress_from_hooks(mode == Mode::on);
  }

  // One step; with `record`, its times join the rank's list.
  void step(const Tensor& images, const Tensor& labels, bool record) {
    Backend& be = backend_for(device_);
    world_->barrier();
    be.synchronize();
    const auto t0 = bench::Clock::now();
    optimizer_->zero_grad();
    Var loss = cross_entropy(model_.forward(images), labels);
    be.synchronize();
    const double forward = bench::seconds_since(t0);
    reducer_->arm();
    loss.backward();
    be.synchronize();
    const double backward = bench::seconds_since(t0);
    const double in_flight = static_cast<double>(reducer_->buckets_in_flight());
    reducer_->reduce();
    be.synchronize();
    const double reduced = bench::seconds_since(t0);
    optimizer_->step(1e-4);
    be.synchronize();
    const double total = bench::seconds_since(t0);
    if (!record) return;
    local_.insert(local_.end(), {total, forward, backward - forward, reduced - backward});
    launched_.push_back(in_flight);
  }

  // The slowest rank's times of the recorded steps (collective).
  Times times() const {
    const std::vector<double> slowest = bench::max_over_ranks(*world_, local_);
    Times t;
    for (std::size_t k = 0; k + 3 < slowest.size(); k += 4) {
      t.step.push_back(slowest[k]);
      t.forward.push_back(slowest[k + 1]);
      t.backward.push_back(slowest[k + 2]);
      t.wait.push_back(slowest[k + 3]);
    }
    for (double l : launched_) t.launched_in_backward += l / static_cast<double>(launched_.size());
    return t;
  }

  std::int64_t num_parameters() const { return model_.num_parameters(); }
  std::size_t num_buckets() const { return reducer_->num_buckets(); }

 private:
  RngStream rng_;
  nn::ViT model_;
  std::shared_ptr<Communicator> world_;
  Device device_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<GradReducer> reducer_;
  std::vector<double> local_;  // [step, forward, backward, wait] per recorded step
  std::vector<double> launched_;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bench::Args args("bench_grad_overlap",
                   "How much of the data-parallel gradient all-reduce backward hides: a ViT step with "
                   "GradReducer overlap off, on, and on without progress calls (under an MPI launcher).");
  args.add("backend", o.backend, "communicator: mpi (host tensors) or nccl (cuda tensors, one GPU per rank)")
      .add("width", o.width, "model width")
      .add("depth", o.depth, "transformer blocks")
      .add("heads", o.heads, "attention heads")
      .add("ffn", o.ffn, "FFN width")
      .add("patch", o.patch, "patch size on 28x28 one-channel images")
      .add("batch", o.batch, "images per rank and step")
      .add("bucket-kb", o.bucket_kb, "gradient bucket size in KiB (parallel.grad_bucket_mb * 1024)")
      .add("steps", o.steps, "timed steps per mode")
      .add("warmup", o.warmup, "untimed steps per mode before them")
      .add("threads", o.threads, "CPU threads per rank (0: the cores / local ranks)")
      .add("json", o.json_path, "also write one JSON line per mode to this file", "none");
  args.parse(argc, argv);
  if (o.backend != "mpi" && o.backend != "nccl") args.fail("--backend must be mpi or nccl, got '" + o.backend + "'");
  if (o.width < 1 || o.depth < 1 || o.heads < 1 || o.width % o.heads != 0 || o.ffn < 1 || o.patch < 1 ||
      28 % o.patch != 0 || o.batch < 1 || o.bucket_kb < 1 || o.steps < 1 || o.warmup < 0)
    args.fail("want positive sizes, --heads dividing --width, --patch dividing 28, --steps and --bucket-kb >= 1, "
              "--warmup >= 0");
  if (o.backend == "nccl" && !nccl_in_build()) args.fail("--backend nccl: " + nccl_absent_message());
  MpiSession session(argc, argv);
  try {
    const bool use_nccl = o.backend == "nccl";
    Device device = Device::cpu;
    if (use_nccl) {
      bind_rank_to_gpu("cuda", "nccl");  // one GPU per rank, before the CUDA backend starts
      std::string why;
      if (!cuda_usable(&why)) {
        std::cerr << "bench_grad_overlap: --backend nccl needs a usable GPU: " << why << "\n";
        session.abort_job(1);
        return 1;
      }
      device = Device::cuda;
    }
    const std::shared_ptr<Communicator> world =
        make_world_communicator(use_nccl ? CommBackend::nccl : CommBackend::mpi);
    o.threads = configure_cpu_threads(o.threads);
    const int rank = world->rank();

    std::vector<std::unique_ptr<Replica>> replicas;
    for (Mode m : kModes) replicas.push_back(std::make_unique<Replica>(m, o, world, device));
    const Tensor images = bench::randn({o.batch, 1, 28, 28}, 1000 + static_cast<std::uint64_t>(rank)).to(device);
    std::vector<std::int64_t> labels(static_cast<std::size_t>(o.batch));
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int64_t>((i + rank) % 10);
    const Tensor targets = Tensor::from_vector(labels, {o.batch}, device);
    const double grad_mib = static_cast<double>(replicas[0]->num_parameters()) * 4 / (1 << 20);
    if (rank == 0) {
      std::printf("bench_grad_overlap: %d ranks, %s on %s, %d threads per rank; ViT D%lld depth %lld H%lld F%lld "
                  "patch %lld, batch %lld per rank; %lld parameters (%.1f MiB of f32 gradients) in %zu buckets of "
                  "<= %lld KiB; median of %d steps per mode (interleaved), slowest rank\n",
                  world->size(), o.backend.c_str(), bench::device_name(device), o.threads,
                  static_cast<long long>(o.width), static_cast<long long>(o.depth), static_cast<long long>(o.heads),
                  static_cast<long long>(o.ffn), static_cast<long long>(o.patch), static_cast<long long>(o.batch),
                  static_cast<long long>(replicas[0]->num_parameters()), grad_mib, replicas[1]->num_buckets(),
                  static_cast<long long>(o.bucket_kb), o.steps);
      std::fflush(stdout);
    }
    for (int i = 0; i < o.warmup + o.steps; ++i)
      for (auto& replica : replicas) replica->step(images, targets, i >= o.warmup);
    Times all[3];
    for (int m = 0; m < 3; ++m) all[m] = replicas[static_cast<std::size_t>(m)]->times();
    if (rank == 0) {
      const double wait_off = bench::median(all[0].wait);
      // Medians of the differences to the baseline's step taken beside it.
      auto paired = [&](const std::vector<double> Times::*field, int m) {
        std::vector<double> d;
        for (std::size_t i = 0; i < (all[0].*field).size(); ++i) d.push_back((all[0].*field)[i] - (all[m].*field)[i]);
        return bench::median(d);
      };
      std::printf("%-8s %9s %9s %9s %9s %16s %8s %8s\n", "mode", "step ms", "fwd ms", "bwd ms", "wait ms",
                  "launched in bwd", "hidden", "saved");
      MetricsWriter json = bench::json_lines(o.json_path);
      for (int m = 0; m < 3; ++m) {
        const double wait = bench::median(all[m].wait), step = bench::median(all[m].step);
        const double hidden = paired(&Times::wait, m) / wait_off, saved = paired(&Times::step, m) / wait_off;
        std::printf("%-8s %9.2f %9.2f %9.2f %9.2f %16.1f", mode_name(kModes[m]), step * 1e3,
                    bench::median(all[m].forward) * 1e3, bench::median(all[m].backward) * 1e3, wait * 1e3,
                    all[m].launched_in_backward);
        if (m > 0)
          std::printf(" %7.1f%% %7.1f%%\n", 100 * hidden, 100 * saved);
        else
          std::printf(" %8s %8s\n", "-", "-");
        JsonObject line;
        line.add("bench", "grad_overlap").add("mode", mode_name(kModes[m])).add("ranks", world->size());
        line.add("backend", o.backend).add("device", bench::device_name(device)).add("threads", o.threads);
        line.add("width", o.width).add("depth", o.depth).add("batch", o.batch).add("bucket_kb", o.bucket_kb);
        line.add("grad_mib", grad_mib).add("step_ms", step * 1e3);
        line.add("forward_ms", bench::median(all[m].forward) * 1e3);
        line.add("backward_ms", bench::median(all[m].backward) * 1e3).add("wait_ms", wait * 1e3);
        line.add("launched_in_backward", all[m].launched_in_backward);
        if (m > 0) line.add("hidden", hidden).add("saved", saved);
        json.write(line);
      }
      std::printf("hidden = median(wait(off) - wait) / wait(off); saved = median(step(off) - step) / wait(off), "
                  "over steps taken side by side\n");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_grad_overlap: " << e.what() << "\n";
    session.abort_job(1);
    return 1;
  }
}
