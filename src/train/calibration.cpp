#include "upcycle/train/calibration.hpp"

#include <chrono>

#include "upcycle/backend/backend.hpp"
#include "upcycle/core/rng.hpp"
#include "upcycle/train/batch_stager.hpp"

namespace upcycle {

namespace {

// Restores a block's observer when calibration ends, also by an exception.
struct ObserverScope {
  std::vector<nn::TransformerBlock*> blocks;
  ~ObserverScope() {
    for (auto* b : blocks) b->ffn_input_observer = nullptr;
  }
};

}  // namespace

Calibration calibrate(Task& task, const std::vector<std::int64_t>& blocks, const CalibrationOptions& options,
                      Communicator& world) {
  UPCYCLE_CHECK(options.tokens > 0 && options.token_frac > 0 && options.token_frac <= 1,
                "calibrate: tokens must be > 0 and token_frac in (0, 1]");
  const auto t0 = std::chrono::steady_clock::now();
  auto& model_blocks = task.blocks();
  const std::size_t nb = blocks.size();
  // The kept tokens stay on the model's device (a GPU in a CUDA run, where cluster upcycling then
  // runs): per block the kept rows of each batch, gathered there, joined at the end.
  const Device device = task.device();
  std::vector<std::vector<Tensor>> pieces(nb);
  std::vector<std::vector<std::int64_t>> ids(nb);
  const std::uint32_t threshold = static_cast<std::uint32_t>(
      std::min(4294967295.0, options.token_frac * 4294967296.0));
  // Which (row, position) of the current batch are kept: computed once per batch, used by every block.
  std::vector<std::int64_t> kept_rows, kept_ids;
  Tensor kept_index;  // kept_rows on the model's device
  std::int64_t D = 0;

  ObserverScope scope;
  for (std::size_t i = 0; i < nb; ++i) {
    UPCYCLE_CHECK(blocks[i] >= 0 && blocks[i] < static_cast<std::int64_t>(model_blocks.size()), "calibrate: block ",
                  blocks[i], " is not a block of the model (", model_blocks.size(), " blocks)");
    nn::TransformerBlock* b = &model_blocks[static_cast<std::size_t>(blocks[i])];
    scope.blocks.push_back(b);
    b->ffn_input_observer = [&, i](const Tensor& u) {
      D = u.dim(u.ndim() - 1);
      if (kept_rows.empty()) return;
      Tensor kept = Tensor::empty({static_cast<std::int64_t>(kept_rows.size()), D}, DType::f32, u.device());
      backend_of(u).gather_rows(u.reshape({-1, D}), kept_index, kept);
      pieces[i].push_back(std::move(kept));
      ids[i].insert(ids[i].end(), kept_ids.begin(), kept_ids.end());
    };
  }

  Calibration out;
  NoGradGuard no_grad;
  task.model().eval();
  const std::int64_t max_batches = task.sampler().batches_per_epoch();
  BatchStager stager(task.device());  // batches are made on the host, the model may be on a GPU
  std::int64_t kept_global = 0;
  while (kept_global < options.tokens) {
    if (out.batches >= max_batches) {
      out.exhausted = true;
      break;
    }
    const Batch batch = task.next_batch();
    const std::int64_t rows = static_cast<std::int64_t>(batch.sample_ids.size());
    UPCYCLE_CHECK(rows > 0 && batch.tokens % rows == 0, "calibrate: the task's batch has ", rows, " sample ids for ",
                  batch.tokens, " tokens");
    const std::int64_t T = batch.tokens / rows;
    kept_rows.clear();
    kept_ids.clear();
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t t = 0; t < T; ++t) {
        const std::int64_t id = batch.sample_ids[static_cast<std::size_t>(r)] * T + t;
        if (Philox4x32::word(options.seed, static_cast<std::uint64_t>(id)) < threshold) {
          kept_rows.push_back(r * T + t);
          kept_ids.push_back(id);
        }
      }
    if (!kept_rows.empty())
      kept_index = Tensor::from_vector(kept_rows, {static_cast<std::int64_t>(kept_rows.size())}, device);
    task.loss(stager.stage(batch), nullptr);  // the observers record the kept tokens of every block
    Tensor n = Tensor::from_vector<std::int64_t>({static_cast<std::int64_t>(kept_ids.size())}, {1}, Device::cpu);
    world.all_reduce(n);
    kept_global += n.to_vector<std::int64_t>()[0];
    ++out.batches;
  }
  task.model().train(true);

  out.global_tokens = kept_global;
  for (std::size_t i = 0; i < nb; ++i) {
    const std::int64_t n = static_cast<std::int64_t>(ids[i].size());
    init::CalibrationShard s;
    s.points = Tensor::empty({n, D}, DType::f32, device);
    std::int64_t at = 0;
    for (const Tensor& p : pieces[i]) {
      s.points.rows(at, at + p.dim(0)).copy_from(p);
      at += p.dim(0);
    }
    s.global_ids = Tensor::from_vector<std::int64_t>(ids[i], {n}, Device::cpu);
    out.bytes_local += static_cast<std::int64_t>(s.points.nbytes() + s.global_ids.nbytes());
    pieces[i] = {};
    out.blocks.push_back(std::move(s));
  }
  Tensor b = Tensor::from_vector<std::int64_t>({out.bytes_local}, {1}, Device::cpu);
  world.all_reduce(b, CommReduce::max);
  out.bytes_max = b.to_vector<std::int64_t>()[0];
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace upcycle
